"""Evaluation beyond detectron2's: Boundary IoU, and IoU without detectron2's multi-class
"BoundaryIoU" keys; Boundary AP of instance segmentation; COCO json evaluated as labelling tools
write it; label files read under numpy 1 and 2; results broken down by object size and thinness,
coarse stage against refined."""

from .boundary_ap import COCOBoundaryEvaluator
from .boundary_iou import (
    BoundaryIoUEvaluator,
    SemSegIoUEvaluator,
    boundary_band,
    boundary_distance,
    boundary_iou_counts,
)
from .coco_ground_truth import COCOInstanceEvaluator
from .instance_size_thinness import BinnedCOCOeval, COCOSizeThinnessEvaluator
from .label_files import read_label_map
from .object_measures import BINNINGS, SIZE_BINNING, WIDTH_BINNING, Binning, object_width
from .size_thinness import SemSegSizeThinnessEvaluator, semantic_breakdown
from .stage_breakdown import StageBreakdown
from .stage_outputs import instance_stage_outputs, semantic_stage_outputs

__all__ = [
    "BoundaryIoUEvaluator",
    "COCOBoundaryEvaluator",
    "COCOInstanceEvaluator",
    "SemSegIoUEvaluator",
    "boundary_band",
    "boundary_distance",
    "boundary_iou_counts",
    "BINNINGS",
    "SIZE_BINNING",
    "WIDTH_BINNING",
    "BinnedCOCOeval",
    "Binning",
    "COCOSizeThinnessEvaluator",
    "SemSegSizeThinnessEvaluator",
    "StageBreakdown",
    "instance_stage_outputs",
    "object_width",
    "semantic_breakdown",
    "semantic_stage_outputs",
    "read_label_map",
]
