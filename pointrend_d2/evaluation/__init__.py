"""Evaluation of semantic segmentation beyond detectron2's: Boundary IoU."""

from .boundary_iou import (
    BoundaryIoUEvaluator,
    boundary_band,
    boundary_distance,
    boundary_iou_counts,
)

__all__ = ["BoundaryIoUEvaluator", "boundary_band", "boundary_distance", "boundary_iou_counts"]
