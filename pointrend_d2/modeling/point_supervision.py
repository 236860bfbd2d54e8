"""
Point supervision (PointSup, Cheng, Parkhi and Kirillov): training the mask and semantic losses
only at labelled points, selected by MODEL.POINT_SUPERVISION.ENABLED and read by
:func:`point_supervision_from_config`.

* Instances: each object has its box and a few points labelled 1 (inside) or 0 (outside), the
  ``gt_point_coords`` (absolute image coordinates) and ``gt_point_labels`` fields that
  :class:`pointrend_d2.data.InstanceDatasetMapper` makes of ``point_coords`` and
  ``point_labels`` annotations. :func:`box_point_targets` converts them to the box-normalized
  points of each foreground proposal (labels -1, ignored, outside the proposal's box), and
  :func:`mask_point_loss` is the binary cross-entropy of any mask logits sampled there. A mask
  head trains from points with these two (Mask R-CNN's
  :class:`~pointrend_d2.modeling.point_supervised_mask_rcnn.PointSupervisedMaskRCNNHead`, and
  PointRend's coarse and point losses in
  :class:`~pointrend_d2.modeling.mask_head.PointRendInstanceMaskHead`).
* Semantic: label maps in which only clicked pixels carry a class (the ignore value elsewhere).
  The coarse heads' losses already count only labelled pixels; PointRend's point loss is taken at
  the labelled pixels themselves (:func:`labelled_pixel_points`), not at points sampled by
  uncertainty, which would almost all land on unlabelled pixels.

A head that can be trained this way says so with the class attribute
``supports_point_supervision = True``; a config that enables point supervision with a head
without it fails when the model is built (:func:`require_point_supervision`).
"""

import torch
from detectron2.config import CfgNode
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY, SEM_SEG_HEADS_REGISTRY
from detectron2.structures import Instances
from torch import Tensor
from torch.nn import functional as F

from ..data.point_annotations import IGNORED_POINT
from .losses import point_loss
from .point_features import grid_cell_centers, point_sample

__all__ = [
    "IGNORED_POINT",
    "box_point_targets",
    "labelled_pixel_points",
    "mask_point_loss",
    "point_supervision_from_config",
    "require_masks",
    "require_point_supervision",
]


def require_point_supervision(head_class: type, key: str, registry) -> None:
    """
    Raise a ValueError naming ``key`` (the config key that chose ``head_class`` from
    ``registry``) if the head cannot be trained from points, listing those that can.
    """
    if getattr(head_class, "supports_point_supervision", False):
        return
    supported = sorted(
        name for name, cls in registry if getattr(cls, "supports_point_supervision", False)
    )
    raise ValueError(
        f"MODEL.POINT_SUPERVISION.ENABLED is True, but {key}={head_class.__name__!r} cannot be "
        f"trained from labelled points; heads that can: {supported}"
    )


def point_supervision_from_config(cfg: CfgNode) -> bool:
    """
    MODEL.POINT_SUPERVISION.ENABLED, the one place it is read. When it is True, the mask head
    (MODEL.MASK_ON) or the semantic head must support point supervision.

    Raises:
        ValueError: naming the head's key, for a head that cannot be trained from points.
    """
    enabled = cfg.MODEL.POINT_SUPERVISION.ENABLED
    if not enabled:
        return False
    if cfg.MODEL.MASK_ON:
        key, registry = "MODEL.ROI_MASK_HEAD.NAME", ROI_MASK_HEAD_REGISTRY
        name = cfg.MODEL.ROI_MASK_HEAD.NAME
    else:
        key, registry = "MODEL.SEM_SEG_HEAD.NAME", SEM_SEG_HEADS_REGISTRY
        name = cfg.MODEL.SEM_SEG_HEAD.NAME
    if name in registry:
        require_point_supervision(registry.get(name), key, registry)
    return True


def require_masks(instances: list[Instances]) -> None:
    """
    Raise a ValueError if training instances have points and no masks: the data is for point
    supervision, which is not enabled.
    """
    if any(len(x) and x.has("gt_point_coords") and not x.has("gt_masks") for x in instances):
        raise ValueError(
            "The training instances have point annotations (point_coords, point_labels) and no "
            "masks: set MODEL.POINT_SUPERVISION.ENABLED True to train the masks from the points"
        )


def box_point_targets(instances: list[Instances]) -> tuple[Tensor, Tensor]:
    """
    The labelled points of each foreground proposal's ground-truth object, in the proposal's
    box-normalized coordinates.

    Args:
        instances: per image, the foreground proposals with ``proposal_boxes``,
            ``gt_point_coords`` (R_n, P_n, 2) absolute image coordinates and ``gt_point_labels``
            (R_n, P_n) int64 labels (1 inside, 0 outside, -1 ignored); R boxes together.

    Returns:
        point_coords: (R, P, 2) box-normalized points, P = the most points of any image (at
            least 1).
        point_labels: (R, P) int64 labels; :data:`IGNORED_POINT` for padding and for points
            outside the proposal's box (the mask logits only cover the box).

    Raises:
        ValueError: the instances have no points: the training data has no point annotations.
    """
    if any(len(x) and not x.has("gt_point_coords") for x in instances):
        raise ValueError(
            "MODEL.POINT_SUPERVISION.ENABLED is True, but the training instances have no "
            "gt_point_coords: the training data has no point annotations (point_coords, "
            "point_labels); make them with tools/make_point_annotations.py"
        )
    present = [x for x in instances if len(x)]
    num_points = max([x.gt_point_coords.shape[1] for x in present] + [1])
    coords, labels = [], []
    for image_instances in present:
        boxes = image_instances.proposal_boxes.tensor[:, None]
        points = image_instances.gt_point_coords.to(boxes.dtype)
        # Degenerate (zero-size) boxes keep their points finite; those off the box are ignored.
        size = (boxes[..., 2:] - boxes[..., :2]).clamp(min=torch.finfo(boxes.dtype).eps)
        normalized = (points - boxes[..., :2]) / size
        inside = ((normalized >= 0) & (normalized <= 1)).all(dim=2)
        image_labels = image_instances.gt_point_labels.masked_fill(~inside, IGNORED_POINT)
        padding = num_points - points.shape[1]
        coords.append(F.pad(normalized, (0, 0, 0, padding)))
        labels.append(F.pad(image_labels, (0, padding), value=IGNORED_POINT))
    if not coords:
        device = instances[0].proposal_boxes.device if instances else "cpu"
        return (
            torch.zeros((0, num_points, 2), device=device),
            torch.zeros((0, num_points), dtype=torch.int64, device=device),
        )
    return torch.cat(coords), torch.cat(labels)


def mask_point_loss(
    mask_logits: Tensor, classes: Tensor, point_coords: Tensor, point_labels: Tensor
) -> Tensor:
    """
    The binary cross-entropy of each box's class's mask logit at its labelled points.

    Args:
        mask_logits: (R, K, S, S) mask logits over each box (K = 1 for class-agnostic masks).
        classes: (R,) the ground-truth class of each box.
        point_coords: (R, P, 2) box-normalized points.
        point_labels: (R, P) int64 labels, :data:`IGNORED_POINT` not counted.

    Returns:
        scalar float32 loss, the mean over the counted points (0 if there are none).
    """
    point_logits = point_sample(mask_logits, point_coords)  # (R, K, P)
    if point_logits.shape[1] > 1:
        index = classes.view(-1, 1, 1).expand(-1, 1, point_logits.shape[2])
        point_logits = point_logits.gather(1, index)
    return point_loss(point_logits, point_labels, ignore_value=IGNORED_POINT)


def labelled_pixel_points(
    targets: Tensor, ignore_value: int, max_points: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """
    The labelled pixels of sparse label maps as points: each image's pixels whose label is not
    ``ignore_value``, at most ``max_points`` of them (a uniform random subset when there are
    more).

    Args:
        targets: (N, H, W) int64 labels.
        ignore_value: the label of unlabelled pixels.
        max_points: the most points per image.
        generator: random generator for the subset; the global one if None.

    Returns:
        point_coords: (N, P, 2) pixel centres in ``[0, 1] x [0, 1]`` image coordinates, P = the
            most labelled pixels of any image, capped at ``max_points`` (at least 1).
        point_labels: (N, P) int64 their labels; ``ignore_value`` for padding (images with fewer
            labelled pixels).
    """
    batch_size, height, width = targets.shape
    flat_targets = targets.reshape(batch_size, -1)
    labelled = flat_targets != ignore_value
    num_points = max(1, min(int(labelled.sum(dim=1).max()), max_points, height * width))
    # Labelled pixels score in [0, 1) at random, the others -1: the top P are a uniform subset
    # of the labelled pixels, followed by unlabelled ones (read back as ignored) where too few.
    scores = torch.rand(flat_targets.shape, generator=generator, device=targets.device)
    scores = torch.where(labelled, scores, torch.full_like(scores, -1.0))
    indices = torch.topk(scores, k=num_points, dim=1).indices
    return grid_cell_centers(indices, height, width), torch.gather(flat_targets, 1, indices)
