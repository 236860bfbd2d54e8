"""
Config checks that fail at build time, naming the config key and its allowed values, instead of
deep inside the first training step (or an hour later, at the first evaluation).
"""

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.utils.registry import Registry

from .point_head import POINT_HEAD_REGISTRY

__all__ = ["validate_dataset_classes", "validate_point_head_config"]

# The head that wraps a coarse head; it cannot be its own coarse head.
_POINTREND_HEAD_NAME = "PointRendSemanticHead"


def _registered_names(registry: Registry) -> list[str]:
    return sorted(name for name, _ in registry)


def validate_point_head_config(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> None:
    """
    Check the MODEL.POINT_HEAD keys (and NUM_CLASSES) that PointRendSemanticHead reads.

    SUBDIVISION_STEPS is checked against the coarse head's stride once the coarse head is built
    (:func:`pointrend_d2.semantic_seg.resolve_subdivision_steps`), and TRAIN_NUM_POINTS = -1
    against the crop by :func:`pointrend_d2.semantic_seg.resolve_train_num_points`.

    Args:
        cfg: the full config.
        input_shape: the backbone's output maps by name.

    Raises:
        ValueError: naming the first bad key, its value and the allowed values.
    """
    point_cfg = cfg.MODEL.POINT_HEAD
    in_features = list(point_cfg.IN_FEATURES)
    missing = [name for name in in_features if name not in input_shape]
    if not in_features or missing:
        raise ValueError(
            f"MODEL.POINT_HEAD.IN_FEATURES={in_features}: {missing or 'none'} not produced by the "
            f"backbone; it must name one or more of the backbone's maps {sorted(input_shape)}"
        )
    coarse_heads = [
        n for n in _registered_names(SEM_SEG_HEADS_REGISTRY) if n != _POINTREND_HEAD_NAME
    ]
    if point_cfg.COARSE_SEM_SEG_HEAD_NAME not in coarse_heads:
        raise ValueError(
            f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME={point_cfg.COARSE_SEM_SEG_HEAD_NAME!r} is "
            f"not a coarse head registered in SEM_SEG_HEADS_REGISTRY; registered: {coarse_heads}"
        )
    point_heads = _registered_names(POINT_HEAD_REGISTRY)
    if point_cfg.NAME not in point_heads:
        raise ValueError(
            f"MODEL.POINT_HEAD.NAME={point_cfg.NAME!r} is not registered in POINT_HEAD_REGISTRY; "
            f"registered: {point_heads}"
        )
    if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES < 1:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}: must be >= 1 "
            "(1 is a single sigmoid foreground logit)"
        )
    if point_cfg.TRAIN_NUM_POINTS <= 0 and point_cfg.TRAIN_NUM_POINTS != -1:
        raise ValueError(
            f"MODEL.POINT_HEAD.TRAIN_NUM_POINTS={point_cfg.TRAIN_NUM_POINTS}: must be > 0, or -1 "
            "to derive it from INPUT.CROP.SIZE"
        )
    if point_cfg.OVERSAMPLE_RATIO < 1:
        raise ValueError(
            f"MODEL.POINT_HEAD.OVERSAMPLE_RATIO={point_cfg.OVERSAMPLE_RATIO}: must be >= 1 "
            "(k * TRAIN_NUM_POINTS candidates are drawn to choose TRAIN_NUM_POINTS from)"
        )
    if not 0 <= point_cfg.IMPORTANCE_SAMPLE_RATIO <= 1:
        raise ValueError(
            f"MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO={point_cfg.IMPORTANCE_SAMPLE_RATIO}: must "
            "be in [0, 1] (the fraction of the points chosen by uncertainty)"
        )
    if point_cfg.SUBDIVISION_NUM_POINTS <= 0:
        raise ValueError(
            f"MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS={point_cfg.SUBDIVISION_NUM_POINTS}: must be "
            "> 0 (the cells re-predicted per subdivision step)"
        )


def validate_dataset_classes(cfg: CfgNode, dataset_names: list[str]) -> None:
    """
    Check that MODEL.SEM_SEG_HEAD.NUM_CLASSES agrees with the classes (``stuff_classes``) of every
    dataset in ``dataset_names`` whose metadata lists them. A single sigmoid foreground logit
    (NUM_CLASSES = 1) is trained on datasets of two classes, background and foreground.

    Call it before training starts, so that a mismatch is not found at the first evaluation.

    Raises:
        ValueError: naming the dataset, its classes and the config key.
    """
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("stuff_classes")
        if classes is None or len(classes) == num_classes or (num_classes, len(classes)) == (1, 2):
            continue
        hint = " (or 1 for a sigmoid foreground logit)" if len(classes) == 2 else ""
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes} but dataset {name!r} has "
            f"{len(classes)} classes {list(classes)}: set NUM_CLASSES to {len(classes)}{hint}"
        )
