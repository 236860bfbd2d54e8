"""Evaluation of semantic segmentation beyond detectron2's: Boundary IoU, and IoU without
detectron2's multi-class "BoundaryIoU" keys; Boundary AP of instance segmentation."""

from .boundary_ap import COCOBoundaryEvaluator
from .boundary_iou import (
    BoundaryIoUEvaluator,
    SemSegIoUEvaluator,
    boundary_band,
    boundary_distance,
    boundary_iou_counts,
)
from .coco_ground_truth import COCOInstanceEvaluator

__all__ = [
    "BoundaryIoUEvaluator",
    "COCOBoundaryEvaluator",
    "COCOInstanceEvaluator",
    "SemSegIoUEvaluator",
    "boundary_band",
    "boundary_distance",
    "boundary_iou_counts",
]
