"""
Training and evaluation loop: detectron2's DefaultTrainer, whose data and evaluators follow the
datasets' ``evaluator_type`` (semantic: "sem_seg", "cityscapes_sem_seg"; instances: "coco",
"cityscapes_instance").
"""

import logging
import os
import weakref

import detectron2.utils.comm as comm
import torch
from detectron2.config import CfgNode
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
)
from detectron2.utils.logger import setup_logger

from .checkpoint import SafeCheckpointer
from .data.catalog import (
    INSTANCE_EVALUATOR_TYPES,
    SEMANTIC_EVALUATOR_TYPES,
    dataset_task,
    instance_training_records,
    load_dataset_records,
    validate_dataset_classes,
)
from .data.instance_mapper import InstanceDatasetMapper
from .data.semantic_mapper import SemanticDatasetMapper
from .data.supervision import check_training_supervision
from .evaluation import (
    BoundaryIoUEvaluator,
    COCOBoundaryEvaluator,
    COCOInstanceEvaluator,
    SemSegIoUEvaluator,
)
from .modeling.point_supervision import point_supervision_from_config


def build_evaluator(
    cfg: CfgNode, dataset_name: str, output_folder: str | None = None
) -> DatasetEvaluator:
    """
    The evaluator for ``dataset_name``, chosen by its metadata's ``evaluator_type``. With
    TEST.BOUNDARY_IOU.ENABLED, semantic datasets get a :class:`BoundaryIoUEvaluator` beside it,
    and COCO-format instance datasets Boundary AP (:class:`COCOBoundaryEvaluator`).
    """
    validate_dataset_classes(cfg, [dataset_name])
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type not in SEMANTIC_EVALUATOR_TYPES + INSTANCE_EVALUATOR_TYPES:
        raise ValueError(
            f"Dataset {dataset_name!r} has evaluator_type={evaluator_type!r}; pointrend_d2 "
            f"evaluates {list(SEMANTIC_EVALUATOR_TYPES + INSTANCE_EVALUATOR_TYPES)} datasets"
        )
    boundary = cfg.TEST.BOUNDARY_IOU
    if evaluator_type == "coco":
        if boundary.ENABLED:
            return COCOBoundaryEvaluator(
                dataset_name, output_folder, dilation_ratio=boundary.DILATION_RATIO
            )
        return COCOInstanceEvaluator(dataset_name, output_dir=output_folder)
    if evaluator_type == "cityscapes_instance":
        return CityscapesInstanceEvaluator(dataset_name)
    if evaluator_type == "sem_seg":
        evaluator = SemSegIoUEvaluator(dataset_name, distributed=True, output_dir=output_folder)
    else:
        evaluator = CityscapesSemSegEvaluator(dataset_name)
    if not boundary.ENABLED:
        return evaluator
    boundary_iou = BoundaryIoUEvaluator(
        dataset_name,
        dilation_ratio=boundary.DILATION_RATIO,
        distributed=True,
        output_dir=output_folder,
    )
    return DatasetEvaluators([evaluator, boundary_iou])


def data_loader_workers(cfg: CfgNode) -> int:
    """
    DATALOADER.NUM_WORKERS, where -1 takes the CPU cores this process may use, shared by the
    training processes of this machine, less one each for the training process itself (at least
    one worker): a GPU's data loading keeps up only with the machine's cores.

    Raises:
        ValueError: for a value below -1.
    """
    num_workers = cfg.DATALOADER.NUM_WORKERS
    if num_workers < -1:
        raise ValueError(
            f"DATALOADER.NUM_WORKERS={num_workers}: must be >= 0, or -1 for one worker per CPU "
            "core available to each training process"
        )
    if num_workers >= 0:
        return num_workers
    cores = len(os.sched_getaffinity(0))
    return max(1, cores // comm.get_local_size() - 1)


class Trainer(DefaultTrainer):
    """
    DefaultTrainer with data and evaluators chosen by the datasets' ``evaluator_type``: semantic
    datasets through :class:`SemanticDatasetMapper` (records checked, PointRend's augmentations),
    instance datasets through :class:`InstanceDatasetMapper` (detectron2's, reading images through
    the checked reader; images without annotations dropped from training if
    DATALOADER.FILTER_EMPTY_ANNOTATIONS); crash-safe checkpoints that load
    weights only (:class:`SafeCheckpointer`), and multi-process training on CPUs too.
    """

    def __init__(self, cfg: CfgNode):
        """
        The parts of DefaultTrainer, built through its ``build_*`` class methods, with the model
        wrapped for several processes by :func:`create_ddp_model` with GPU ids only for a GPU model
        (detectron2 always passes the local rank, which DDP refuses for a CPU model: Gloo
        training), and a :class:`SafeCheckpointer` (atomic saves, weights-only loads). The
        datasets and their classes are checked first, so that a bad config fails here rather than
        at the first evaluation.
        """
        validate_dataset_classes(cfg, [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST])
        check_training_supervision(cfg.DATASETS.TRAIN, point_supervision_from_config(cfg))
        for name in cfg.DATASETS.TEST:
            load_dataset_records([name], "DATASETS.TEST")
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):  # setup_logger was not called
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_gpu = torch.device(cfg.MODEL.DEVICE).type == "cuda"
        model = create_ddp_model(
            model, broadcast_buffers=False, **({} if on_gpu else {"device_ids": None})
        )
        step_trainer = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = step_trainer(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SafeCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            allow_unsafe_pickle=cfg.MODEL.ALLOW_UNSAFE_PICKLE,
            allow_partial_weights=cfg.MODEL.ALLOW_PARTIAL_WEIGHTS,
            trainer=weakref.proxy(self),
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

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
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        names = cfg.DATASETS.TRAIN
        records = load_dataset_records(names, "DATASETS.TRAIN")
        tasks = {name: dataset_task(name) for name in names}
        if len(set(tasks.values())) > 1:
            raise ValueError(
                f"DATASETS.TRAIN mixes semantic and instance datasets ({tasks}): train one task"
            )
        if set(tasks.values()) == {"semantic"}:
            mapper = SemanticDatasetMapper(cfg, is_train=True)
        else:
            mapper = InstanceDatasetMapper(cfg, is_train=True)
            records = instance_training_records(
                names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
            )
        return build_detection_train_loader(
            cfg, mapper=mapper, dataset=records, num_workers=data_loader_workers(cfg)
        )

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        if dataset_task(dataset_name) == "semantic":
            mapper = SemanticDatasetMapper(cfg, is_train=False)
        else:
            mapper = InstanceDatasetMapper(cfg, is_train=False)
        return build_detection_test_loader(
            load_dataset_records([dataset_name], "DATASETS.TEST"),
            mapper=mapper,
            num_workers=data_loader_workers(cfg),
        )
