"""Training and evaluation loop: detectron2's DefaultTrainer with semantic-segmentation parts."""

import logging
import os
import weakref
from collections.abc import Sequence

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import (
    CityscapesSemSegEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .checkpoint import SafeCheckpointer
from .config_checks import validate_dataset_classes
from .data.mapper import SemanticDatasetMapper
from .evaluation import BoundaryIoUEvaluator


def load_dataset_records(names: Sequence[str], config_key: str) -> list[dict]:
    """
    The records of the datasets ``names`` (from config key ``config_key``), concatenated.

    Raises:
        ValueError: no dataset is named, or one has no records.
        KeyError: a dataset is not registered (detectron2's message lists the registered ones).
    """
    if not names:
        raise ValueError(f"{config_key} is empty: name one or more registered datasets")
    records = []
    for name in names:
        dataset_records = DatasetCatalog.get(name)
        if not dataset_records:
            raise ValueError(f"Dataset {name!r} in {config_key} has no images")
        records.extend(dataset_records)
    return records


def build_sem_seg_evaluator(
    cfg: CfgNode, dataset_name: str, output_folder: str | None = None
) -> DatasetEvaluator:
    """
    The evaluator for ``dataset_name``, chosen by its metadata's ``evaluator_type``, with a
    :class:`BoundaryIoUEvaluator` beside it if TEST.BOUNDARY_IOU.ENABLED.
    """
    validate_dataset_classes(cfg, [dataset_name])
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type == "sem_seg":
        evaluator = SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)
    elif evaluator_type == "cityscapes_sem_seg":
        evaluator = CityscapesSemSegEvaluator(dataset_name)
    else:
        raise ValueError(
            f"Dataset {dataset_name!r} has evaluator_type={evaluator_type!r}; pointrend_d2 "
            "evaluates 'sem_seg' and 'cityscapes_sem_seg' datasets"
        )
    if not cfg.TEST.BOUNDARY_IOU.ENABLED:
        return evaluator
    boundary_iou = BoundaryIoUEvaluator(
        dataset_name,
        dilation_ratio=cfg.TEST.BOUNDARY_IOU.DILATION_RATIO,
        distributed=True,
        output_dir=output_folder,
    )
    return DatasetEvaluators([evaluator, boundary_iou])


class Trainer(DefaultTrainer):
    """
    DefaultTrainer with semantic-segmentation data (records checked by
    :class:`SemanticDatasetMapper`), augmentations and evaluators, crash-safe checkpoints that
    load weights only (:class:`SafeCheckpointer`), and multi-process training on CPUs too.
    """

    def __init__(self, cfg: CfgNode):
        """
        DefaultTrainer's construction, replaced rather than extended for two of its parts: the
        model is wrapped in DDP with GPU ids only on GPUs (detectron2 passes the local rank,
        which DDP refuses for a CPU model), and the checkpointer is a :class:`SafeCheckpointer`.
        The datasets and their classes are checked first, so that a bad config fails here
        rather than at the first evaluation.
        """
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        validate_dataset_classes(cfg, [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST])
        for name in cfg.DATASETS.TEST:
            load_dataset_records([name], "DATASETS.TEST")

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_gpu = torch.device(cfg.MODEL.DEVICE).type == "cuda"
        model = create_ddp_model(
            model, broadcast_buffers=False, device_ids=[comm.get_local_rank()] if on_gpu else None
        )
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SafeCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            allow_unsafe_pickle=cfg.MODEL.ALLOW_UNSAFE_PICKLE,
            trainer=weakref.proxy(self),
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        return build_sem_seg_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(
            cfg,
            mapper=SemanticDatasetMapper(cfg, is_train=True),
            dataset=load_dataset_records(cfg.DATASETS.TRAIN, "DATASETS.TRAIN"),
        )

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(
            load_dataset_records([dataset_name], "DATASETS.TEST"),
            mapper=SemanticDatasetMapper(cfg, is_train=False),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
