"""Evaluation of semantic segmentation beyond detectron2's: Boundary IoU, and IoU without
detectron2's multi-class "BoundaryIoU" keys; Boundary AP of instance segmentation; label files
read under numpy 1 and 2."""

from .boundary_ap import COCOBoundaryEvaluator
from .boundary_iou import (
    BoundaryIoUEvaluator,
    SemSegIoUEvaluator,
    boundary_band,
    boundary_distance,
    boundary_iou_counts,
)
from .label_files import read_label_map

__all__ = [
    "BoundaryIoUEvaluator",
    "COCOBoundaryEvaluator",
    "SemSegIoUEvaluator",
    "boundary_band",
    "boundary_distance",
    "boundary_iou_counts",
    "read_label_map",
]
