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

__all__ = [
    "BoundaryIoUEvaluator",
    "COCOBoundaryEvaluator",
    "SemSegIoUEvaluator",
    "boundary_band",
    "boundary_distance",
    "boundary_iou_counts",
]
