"""Training and evaluation loop: detectron2's DefaultTrainer with semantic-segmentation parts."""

import contextlib
import os
from collections.abc import Sequence
from unittest import mock

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.engine import defaults as detectron2_defaults
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import CityscapesSemSegEvaluator, DatasetEvaluator, DatasetEvaluators

from .checkpoint import SafeCheckpointer
from .config_checks import validate_dataset_classes
from .data.mapper import SemanticDatasetMapper
from .evaluation import BoundaryIoUEvaluator, SemSegIoUEvaluator


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
        evaluator = SemSegIoUEvaluator(dataset_name, distributed=True, output_dir=output_folder)
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


@contextlib.contextmanager
def _ddp_without_device_ids_on_cpu(cfg: CfgNode):
    """
    While active, ``DefaultTrainer.__init__``'s DDP wrap passes GPU ids only for a GPU model:
    detectron2 always passes the local rank, which DDP refuses for a CPU model (Gloo training).
    """
    if torch.device(cfg.MODEL.DEVICE).type == "cuda":
        yield
        return

    def create_cpu_ddp_model(model, **kwargs):
        return create_ddp_model(model, device_ids=None, **kwargs)

    with mock.patch.object(detectron2_defaults, "create_ddp_model", create_cpu_ddp_model):
        yield


class Trainer(DefaultTrainer):
    """
    DefaultTrainer with semantic-segmentation data (records checked by
    :class:`SemanticDatasetMapper`), augmentations and evaluators, crash-safe checkpoints that
    load weights only (:class:`SafeCheckpointer`), and multi-process training on CPUs too.
    """

    def __init__(self, cfg: CfgNode):
        """
        DefaultTrainer's construction with two parts replaced: the DDP wrap of a CPU model
        (:func:`_ddp_without_device_ids_on_cpu`) and the checkpointer (see :attr:`checkpointer`).
        The datasets and their classes are checked first, so that a bad config fails here rather
        than at the first evaluation.
        """
        validate_dataset_classes(cfg, [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST])
        for name in cfg.DATASETS.TEST:
            load_dataset_records([name], "DATASETS.TEST")
        # Read by the checkpointer setter, which DefaultTrainer.__init__ calls before self.cfg.
        self._allow_unsafe_pickle = cfg.MODEL.ALLOW_UNSAFE_PICKLE
        self._allow_partial_weights = cfg.MODEL.ALLOW_PARTIAL_WEIGHTS
        with _ddp_without_device_ids_on_cpu(cfg):
            super().__init__(cfg)

    @property
    def checkpointer(self) -> SafeCheckpointer:
        """The trainer's checkpointer, a :class:`SafeCheckpointer`."""
        return self._checkpointer

    @checkpointer.setter
    def checkpointer(self, checkpointer: DetectionCheckpointer) -> None:
        # DefaultTrainer.__init__ assigns a plain DetectionCheckpointer; the same model, folder and
        # checkpointables are saved atomically and loaded weights-only instead.
        self._checkpointer = SafeCheckpointer(
            checkpointer.model,
            checkpointer.save_dir,
            allow_unsafe_pickle=self._allow_unsafe_pickle,
            allow_partial_weights=self._allow_partial_weights,
            **checkpointer.checkpointables,
        )

    def run_step(self) -> None:
        try:
            super().run_step()
        except FloatingPointError as error:
            # detectron2 finds non-finite losses as it logs them, once per step; say where to look.
            raise FloatingPointError(
                f"{error}\nNon-finite losses come from non-finite input images, or from training "
                "that diverged: lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS"
            ) from error

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
