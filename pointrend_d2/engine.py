"""
Training and evaluation loop: detectron2's DefaultTrainer, whose data and evaluators follow the
datasets' ``evaluator_type`` (semantic: "sem_seg", "cityscapes_sem_seg"; instances: "coco",
"cityscapes_instance").
"""

import contextlib
import os
from unittest import mock

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.engine import defaults as detectron2_defaults
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
)

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
from .evaluation import BoundaryIoUEvaluator, COCOBoundaryEvaluator, SemSegIoUEvaluator


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
        return COCOEvaluator(dataset_name, output_dir=output_folder)
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
    DefaultTrainer with data and evaluators chosen by the datasets' ``evaluator_type``: semantic
    datasets through :class:`SemanticDatasetMapper` (records checked, PointRend's augmentations),
    instance datasets through :class:`InstanceDatasetMapper` (detectron2's, reading images through
    the checked reader; images without annotations dropped from training if
    DATALOADER.FILTER_EMPTY_ANNOTATIONS); crash-safe checkpoints that load
    weights only (:class:`SafeCheckpointer`), and multi-process training on CPUs too.
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
        return build_detection_train_loader(cfg, mapper=mapper, dataset=records)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        if dataset_task(dataset_name) == "semantic":
            mapper = SemanticDatasetMapper(cfg, is_train=False)
        else:
            mapper = InstanceDatasetMapper(cfg, is_train=False)
        return build_detection_test_loader(
            load_dataset_records([dataset_name], "DATASETS.TEST"),
            mapper=mapper,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
