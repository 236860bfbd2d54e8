"""Evaluation of semantic segmentation beyond detectron2's: Boundary IoU, and IoU without
detectron2's multi-class "BoundaryIoU" keys."""

from .boundary_iou import (
    BoundaryIoUEvaluator,
    SemSegIoUEvaluator,
    boundary_band,
    boundary_distance,
    boundary_iou_counts,
)

__all__ = [
    "BoundaryIoUEvaluator",
    "SemSegIoUEvaluator",
    "boundary_band",
    "boundary_distance",
    "boundary_iou_counts",
]
