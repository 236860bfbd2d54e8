"""Training and evaluation loop: detectron2's DefaultTrainer with semantic-segmentation parts."""

import os
from typing import Optional

from detectron2.config import CfgNode
from detectron2.data import DatasetMapper, MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import (
    CityscapesSemSegEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from .data.augmentation import build_semantic_train_augmentation
from .evaluation import BoundaryIoUEvaluator


def build_sem_seg_evaluator(
    cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """
    The evaluator for ``dataset_name``, chosen by its metadata's ``evaluator_type``, with a
    :class:`BoundaryIoUEvaluator` beside it if TEST.BOUNDARY_IOU.ENABLED.
    """
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
    """DefaultTrainer with semantic-segmentation augmentations and evaluators."""

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        return build_sem_seg_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        mapper = DatasetMapper(
            cfg, is_train=True, augmentations=build_semantic_train_augmentation(cfg)
        )
        return build_detection_train_loader(cfg, mapper=mapper)
