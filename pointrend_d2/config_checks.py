"""
Every check of pointrend_d2's config keys, in one place: each fails at build time naming the key,
its value and what is allowed, instead of deep inside the first training step (or an hour later,
at the first evaluation). Components call these from their ``from_config``; values that are
derived from others (``-1``, ``"auto"``) are resolved here too, next to their checks.
"""

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from .modeling.coarse_head import CoarseSemSegHead
from .modeling.point_head import POINT_HEAD_REGISTRY

__all__ = [
    "registered_coarse_heads",
    "resolve_subdivision_selection",
    "resolve_subdivision_steps",
    "resolve_train_num_points",
    "validate_coarse_head",
    "validate_deeplab_in_features",
    "validate_instance_mask_head_config",
    "validate_point_head_config",
    "validate_point_sampling_config",
]

SUBDIVISION_SELECTIONS = ("auto", "bounded", "topk")


def registered_coarse_heads() -> list[str]:
    """Names in SEM_SEG_HEADS_REGISTRY whose class has the coarse head's ``layers`` and
    ``losses`` (see :class:`CoarseSemSegHead`); PointRend heads, which wrap one, have neither."""
    return sorted(
        name
        for name, head_class in SEM_SEG_HEADS_REGISTRY
        if callable(getattr(head_class, "layers", None))
        and callable(getattr(head_class, "losses", None))
    )


def validate_point_sampling_config(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> None:
    """
    Check the MODEL.POINT_HEAD keys that every PointRend head reads (semantic and instance): the
    fine-grained features, the point head's name, the training sampler and the subdivision points.

    Args:
        cfg: the full config.
        input_shape: the maps the head receives, by name.

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
    point_heads = sorted(name for name, _ in POINT_HEAD_REGISTRY)
    if point_cfg.NAME not in point_heads:
        raise ValueError(
            f"MODEL.POINT_HEAD.NAME={point_cfg.NAME!r} is not registered in POINT_HEAD_REGISTRY; "
            f"registered: {point_heads}"
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


def validate_point_head_config(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> None:
    """
    Check the keys that PointRendSemanticHead reads before its coarse head is built (those of
    :func:`validate_point_sampling_config`, the coarse head's name and the class count);
    :func:`validate_coarse_head` checks the built coarse head.

    Args:
        cfg: the full config.
        input_shape: the backbone's output maps by name.

    Raises:
        ValueError: naming the first bad key, its value and the allowed values.
    """
    validate_point_sampling_config(cfg, input_shape)
    point_cfg = cfg.MODEL.POINT_HEAD
    coarse_heads = registered_coarse_heads()
    if point_cfg.COARSE_SEM_SEG_HEAD_NAME not in coarse_heads:
        raise ValueError(
            f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME={point_cfg.COARSE_SEM_SEG_HEAD_NAME!r} is "
            f"not a coarse head registered in SEM_SEG_HEADS_REGISTRY; registered: {coarse_heads}"
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


def validate_instance_mask_head_config(
    cfg: CfgNode, input_shape: dict[str, ShapeSpec], head_name: str
) -> None:
    """
    Check the keys of PointRend's instance mask heads (MODEL.ROI_MASK_HEAD, MODEL.ROI_HEADS and,
    with the point head, MODEL.POINT_HEAD) before they are built.

    Args:
        cfg: the full config.
        input_shape: the maps the mask head receives, by name (MODEL.ROI_HEADS.IN_FEATURES).
        head_name: the registered name of the head being built, for the messages.

    Raises:
        ValueError: naming the first bad key, its value and the allowed values.
    """
    mask_cfg = cfg.MODEL.ROI_MASK_HEAD
    if mask_cfg.POOLER_TYPE:
        raise ValueError(
            f"MODEL.ROI_MASK_HEAD.POOLER_TYPE={mask_cfg.POOLER_TYPE!r}: {head_name} pools its own "
            "region features (by point sampling MODEL.ROI_MASK_HEAD.IN_FEATURES), so it needs the "
            "feature maps, not detectron2's pooled features: set POOLER_TYPE to ''"
        )
    in_features = list(mask_cfg.IN_FEATURES)
    missing = [name for name in in_features if name not in input_shape]
    if not in_features or missing:
        raise ValueError(
            f"MODEL.ROI_MASK_HEAD.IN_FEATURES={in_features}: {missing or 'none'} not among the "
            f"maps the ROI heads receive (MODEL.ROI_HEADS.IN_FEATURES={sorted(input_shape)}); "
            "name one or more of them"
        )
    positive_keys = {
        "MODEL.ROI_HEADS.NUM_CLASSES": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION": mask_cfg.OUTPUT_SIDE_RESOLUTION,
        "MODEL.ROI_MASK_HEAD.NUM_FC": mask_cfg.NUM_FC,
        "MODEL.ROI_MASK_HEAD.FC_DIM": mask_cfg.FC_DIM,
        "MODEL.ROI_MASK_HEAD.CONV_DIM": mask_cfg.CONV_DIM,
    }
    for key, value in positive_keys.items():
        if value < 1:
            raise ValueError(f"{key}={value}: must be >= 1")
    if mask_cfg.POOLER_RESOLUTION < 2 or mask_cfg.POOLER_RESOLUTION % 2:
        raise ValueError(
            f"MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION={mask_cfg.POOLER_RESOLUTION}: must be even "
            "and >= 2 (the coarse mask head halves it with a 2x2 stride-2 conv)"
        )
    if head_name != "PointRendInstanceMaskHead":
        return
    validate_point_sampling_config(cfg, input_shape)
    point_cfg = cfg.MODEL.POINT_HEAD
    if point_cfg.TRAIN_NUM_POINTS <= 0:
        raise ValueError(
            f"MODEL.POINT_HEAD.TRAIN_NUM_POINTS={point_cfg.TRAIN_NUM_POINTS}: must be > 0 for "
            "instance masks (points per box; the paper's 14 * 14 = 196)"
        )
    if point_cfg.SUBDIVISION_STEPS < 0:
        raise ValueError(
            f"MODEL.POINT_HEAD.SUBDIVISION_STEPS={point_cfg.SUBDIVISION_STEPS}: must be >= 0 for "
            "instance masks (each step doubles the mask side: 5 takes 7x7 to 224x224)"
        )


def validate_coarse_head(coarse_head: nn.Module, name: str, num_classes: int) -> None:
    """
    Check a built coarse head against :class:`CoarseSemSegHead` and the class count.

    Args:
        coarse_head: the head built from MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME ``name``.
        num_classes: MODEL.SEM_SEG_HEAD.NUM_CLASSES.

    Raises:
        ValueError: naming the key and what the head lacks.
    """
    if not isinstance(coarse_head, CoarseSemSegHead):
        missing = [m for m in ("common_stride", "layers", "losses") if not hasattr(coarse_head, m)]
        raise ValueError(
            f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME={name!r} lacks {missing} of the coarse "
            "head contract (pointrend_d2.coarse_head.CoarseSemSegHead)"
        )
    if num_classes == 1 and not getattr(type(coarse_head), "single_foreground_logit", False):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES=1 (a single sigmoid foreground logit) needs a coarse "
            f"head that trains one with binary cross-entropy; MODEL.POINT_HEAD."
            f"COARSE_SEM_SEG_HEAD_NAME={name!r} does not: use 'SemanticFPNCoarseHead' or "
            "'DeepLabV3CoarseHead', or NUM_CLASSES 2"
        )


def validate_deeplab_in_features(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> str:
    """
    The one backbone map that DeepLabV3CoarseHead reads, MODEL.SEM_SEG_HEAD.IN_FEATURES[0].

    Raises:
        ValueError: if IN_FEATURES is not exactly one of the backbone's maps.
    """
    in_features = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
    if len(in_features) != 1 or in_features[0] not in input_shape:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.IN_FEATURES={in_features}: DeepLabV3CoarseHead reads exactly "
            f"one backbone map, one of {sorted(input_shape)} (the deepest, e.g. 'res5')"
        )
    return in_features[0]


def resolve_subdivision_steps(subdivision_steps: int, coarse_stride: int) -> int:
    """
    The number of 2x subdivision steps that take logits of stride ``coarse_stride`` to the input
    resolution: ``log2(coarse_stride)`` (stride 4: 2, 8: 3, 16: 4).

    Args:
        subdivision_steps: MODEL.POINT_HEAD.SUBDIVISION_STEPS; -1 derives the value.
        coarse_stride: stride of the coarse head's logits, a power of 2.

    Raises:
        ValueError: if a value set by hand is not ``log2(coarse_stride)``.
    """
    required_steps = coarse_stride.bit_length() - 1
    if coarse_stride < 1 or coarse_stride != 1 << required_steps:
        raise ValueError(f"The coarse head's stride must be a power of 2, got {coarse_stride}")
    if subdivision_steps not in (-1, required_steps):
        raise ValueError(
            f"MODEL.POINT_HEAD.SUBDIVISION_STEPS={subdivision_steps} does not reach the input "
            f"resolution from the coarse stride {coarse_stride}: it must be {required_steps} "
            "(log2 of the stride), or -1 to derive it"
        )
    return required_steps


def resolve_train_num_points(cfg: CfgNode) -> int:
    """
    MODEL.POINT_HEAD.TRAIN_NUM_POINTS, where -1 derives the paper's value: the number of cells of
    a stride-16 map of the training crop, ``ceil(crop_h / 16) * ceil(crop_w / 16)`` (2048 for
    512 x 1024 crops).

    Raises:
        ValueError: for -1 without an enabled INPUT.CROP of TYPE "absolute".
    """
    train_num_points = cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS
    if train_num_points != -1:
        return train_num_points
    crop_cfg = cfg.INPUT.CROP
    if not crop_cfg.ENABLED or crop_cfg.TYPE != "absolute":
        raise ValueError(
            "MODEL.POINT_HEAD.TRAIN_NUM_POINTS=-1 derives the number of points from the training "
            "crop size, which needs INPUT.CROP.ENABLED=True and INPUT.CROP.TYPE='absolute' (got "
            f"ENABLED={crop_cfg.ENABLED}, TYPE={crop_cfg.TYPE!r}); set TRAIN_NUM_POINTS instead"
        )
    crop_height, crop_width = crop_cfg.SIZE
    return -(-crop_height // 16) * -(-crop_width // 16)


def resolve_subdivision_selection(selection: str, device: str) -> str:
    """
    MODEL.POINT_HEAD.SUBDIVISION_SELECTION, where "auto" picks "bounded" on the CPU (measured
    faster there, see README) and "topk" on other devices (no host syncs).

    Raises:
        ValueError: for an unknown value.
    """
    if selection not in SUBDIVISION_SELECTIONS:
        raise ValueError(
            f"MODEL.POINT_HEAD.SUBDIVISION_SELECTION={selection!r}: must be one of "
            f"{SUBDIVISION_SELECTIONS}"
        )
    if selection != "auto":
        return selection
    return "bounded" if torch.device(device).type == "cpu" else "topk"
