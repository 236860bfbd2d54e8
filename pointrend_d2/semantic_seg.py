"""PointRend semantic segmentation head, registered in detectron2's SEM_SEG_HEADS_REGISTRY."""

from collections.abc import Callable

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from .config_checks import validate_point_head_config
from .point_features import point_sample, sample_uncertain_points
from .point_head import build_point_head
from .subdivision import subdivision_inference


def point_loss(point_logits: Tensor, point_labels: Tensor, ignore_value: int) -> Tensor:
    """
    Loss of the point predictions: cross-entropy over K classes, or binary cross-entropy for a
    single foreground logit (K = 1, labels 0/1). Points labelled ``ignore_value`` do not count;
    when every point is ignored the loss is 0, not NaN.

    Args:
        point_logits: (N, K, P) logits.
        point_labels: (N, P) int64 labels.
        ignore_value: label of ignored points.

    Returns:
        scalar loss, the mean over the points that are not ignored.
    """
    valid = point_labels != ignore_value
    num_valid = valid.sum().clamp(min=1)
    if point_logits.shape[1] == 1:
        losses = F.binary_cross_entropy_with_logits(
            point_logits[:, 0], point_labels.to(point_logits.dtype), reduction="none"
        )
        return (losses * valid).sum() / num_valid
    return (
        F.cross_entropy(point_logits, point_labels, ignore_index=ignore_value, reduction="sum")
        / num_valid
    )


def sem_seg_loss(logits: Tensor, labels: Tensor, ignore_value: int) -> Tensor:
    """
    :func:`point_loss` at every pixel of a dense prediction.

    Args:
        logits: (N, K, H, W) logits (K = 1: a sigmoid foreground logit).
        labels: (N, H, W) int64 labels.
        ignore_value: label of ignored pixels.

    Returns:
        scalar loss, the mean over the pixels that are not ignored.
    """
    return point_loss(logits.flatten(2), labels.flatten(1), ignore_value)


def expand_foreground_logit(logits: Tensor) -> Tensor:
    """
    Make a single sigmoid foreground logit usable where every class has a logit (detectron2's
    SemanticSegmentor and SemSegEvaluator take the argmax over channels): ``(N, 1, H, W)``
    becomes ``(N, 2, H, W)`` logits ``[0, logit]``, whose softmax is ``[1 - sigmoid(logit),
    sigmoid(logit)]``; class 0 is background, 1 foreground. Logits with K > 1 are returned as is.
    """
    if logits.shape[1] != 1:
        return logits
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


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
    allowed = ("auto", "bounded", "topk")
    if selection not in allowed:
        raise ValueError(
            f"MODEL.POINT_HEAD.SUBDIVISION_SELECTION={selection!r}: must be one of {allowed}"
        )
    if selection != "auto":
        return selection
    return "bounded" if torch.device(device).type == "cpu" else "topk"


@SEM_SEG_HEADS_REGISTRY.register()
class PointRendSemanticHead(nn.Module):
    """
    PointRend for semantic segmentation: a coarse semantic head from SEM_SEG_HEADS_REGISTRY
    predicts low-resolution logits, and a point head re-predicts them at selected points from
    fine-grained features sampled there.

    Training returns a coarse loss (:meth:`coarse_losses`) and a point loss at points sampled
    around the coarse boundaries. Inference upsamples the coarse logits 2x per subdivision step
    and re-predicts the most uncertain cells, reaching the input resolution in
    ``log2(coarse stride)`` steps.

    The coarse head must provide ``layers(features) -> (N, K, H, W)`` logits and the attributes
    ``common_stride`` (the stride of its logits) and ``loss_weight``, as detectron2's
    ``SemSegFPNHead`` and :class:`DeepLabV3CoarseHead` do.

    With one class (K = 1) the logit is a sigmoid foreground logit (labels 0 background,
    1 foreground), trained with binary cross-entropy; inference returns two-class logits
    ``[0, logit]`` (see :func:`expand_foreground_logit`).
    """

    @configurable
    def __init__(
        self,
        *,
        coarse_sem_seg_head: nn.Module,
        point_head: nn.Module,
        in_features: list[str],
        ignore_value: int = 255,
        train_num_points: int = 2048,
        oversample_ratio: float = 3,
        importance_sample_ratio: float = 0.75,
        subdivision_steps: int = 2,
        subdivision_num_points: int = 8192,
        subdivision_selection: str = "bounded",
        point_sampler: Callable[..., Tensor] = sample_uncertain_points,
    ):
        """
        Args:
            coarse_sem_seg_head: the coarse head (see the class docstring for its contract).
            point_head: a point head (see ``POINT_HEAD_REGISTRY``).
            in_features: names of the backbone maps sampled as fine-grained features.
            ignore_value: label ignored by the losses.
            train_num_points: points per image for the point loss.
            oversample_ratio: k of the training sampler.
            importance_sample_ratio: beta of the training sampler.
            subdivision_steps: number of 2x upsample-and-refine steps at inference.
            subdivision_num_points: cells re-predicted at each subdivision step.
            subdivision_selection: how each step selects its cells, "bounded" or "topk" (the
                same cells; see :func:`pointrend_d2.subdivision.subdivision_inference`).
            point_sampler: the training point sampler, called as ``point_sampler(coarse_logits,
                num_points, oversample_ratio, importance_sample_ratio)`` -> (N, P, 2) points;
                :func:`sample_uncertain_points` (PointRend's) by default.
        """
        super().__init__()
        # Attribute names match detectron2's PointRend so its checkpoints load unchanged.
        self.coarse_sem_seg_head = coarse_sem_seg_head
        self.point_head = point_head
        self.in_features = list(in_features)
        self.ignore_value = ignore_value
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points
        self.subdivision_selection = subdivision_selection
        self.point_sampler = point_sampler

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]):
        validate_point_head_config(cfg, input_shape)
        point_cfg = cfg.MODEL.POINT_HEAD
        in_features = list(point_cfg.IN_FEATURES)
        coarse_head_name = point_cfg.COARSE_SEM_SEG_HEAD_NAME
        coarse_sem_seg_head = SEM_SEG_HEADS_REGISTRY.get(coarse_head_name)(cfg, input_shape)
        missing_attributes = [
            a for a in ("common_stride", "loss_weight") if not hasattr(coarse_sem_seg_head, a)
        ]
        if missing_attributes:
            raise ValueError(
                f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME={coarse_head_name!r} has no "
                f"{missing_attributes} attribute (the stride of its logits and the weight of "
                "its loss)"
            )
        input_channels = sum(input_shape[f].channels for f in in_features)
        return {
            "coarse_sem_seg_head": coarse_sem_seg_head,
            "point_head": build_point_head(cfg, input_channels),
            "in_features": in_features,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "train_num_points": resolve_train_num_points(cfg),
            "oversample_ratio": point_cfg.OVERSAMPLE_RATIO,
            "importance_sample_ratio": point_cfg.IMPORTANCE_SAMPLE_RATIO,
            "subdivision_steps": resolve_subdivision_steps(
                point_cfg.SUBDIVISION_STEPS, coarse_sem_seg_head.common_stride
            ),
            "subdivision_num_points": point_cfg.SUBDIVISION_NUM_POINTS,
            "subdivision_selection": resolve_subdivision_selection(
                point_cfg.SUBDIVISION_SELECTION, cfg.MODEL.DEVICE
            ),
        }

    def forward(
        self, features: dict[str, Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """
        Args:
            features: backbone maps by name, each (N, C_f, H_f, W_f).
            targets: (N, H, W) int64 labels at the padded input resolution (training only).

        Returns:
            In training, ``(None, losses)`` with ``loss_sem_seg`` (coarse) and
            ``loss_sem_seg_point``. In inference, ``((N, K', H', W') logits, {})`` where H', W' is
            the coarse size times ``2 ** subdivision_steps`` and K' = max(K, 2).
        """
        coarse_logits = self.coarse_sem_seg_head.layers(features)
        # NaN logits give an arbitrary argmax at inference; fail instead, and say where to look.
        if not torch.isfinite(coarse_logits).all():
            raise FloatingPointError(
                "PointRendSemanticHead: the coarse logits are NaN or infinite; the input images "
                "(or the model's weights) contain non-finite values"
            )
        if self.training:
            losses = self.coarse_losses(coarse_logits, targets)
            with torch.no_grad():
                point_coords = self.point_sampler(
                    coarse_logits,
                    self.train_num_points,
                    self.oversample_ratio,
                    self.importance_sample_ratio,
                )
            point_logits = self.predict_points(features, coarse_logits, point_coords)
            point_labels = point_sample(
                targets.unsqueeze(1).to(torch.float32), point_coords, mode="nearest"
            )[:, 0].to(torch.long)
            losses["loss_sem_seg_point"] = point_loss(point_logits, point_labels, self.ignore_value)
            return None, losses
        return expand_foreground_logit(self.subdivision_inference(features, coarse_logits)), {}

    def coarse_losses(self, coarse_logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """
        The coarse loss: :func:`sem_seg_loss` of the coarse logits upsampled bilinearly to the
        labels' size, times the coarse head's ``loss_weight``. For K > 1 it equals
        ``SemSegFPNHead.losses`` (a mean cross-entropy), except that it is 0, not NaN, when every
        label is ignored (e.g. a crop of an ignored region).

        Args:
            coarse_logits: (N, K, H_c, W_c) coarse logits.
            targets: (N, H, W) int64 labels.

        Returns:
            ``{"loss_sem_seg": scalar loss}``.
        """
        # Upsampled in float32, as detectron2's heads do (pytorch issue 48163).
        logits = F.interpolate(
            coarse_logits.float(), size=targets.shape[-2:], mode="bilinear", align_corners=False
        )
        loss = sem_seg_loss(logits, targets, self.ignore_value)
        return {"loss_sem_seg": loss * self.coarse_sem_seg_head.loss_weight}

    def predict_points(
        self, features: dict[str, Tensor], coarse_logits: Tensor, point_coords: Tensor
    ) -> Tensor:
        """
        Run the point head at points.

        Args:
            features: backbone maps by name, each (N, C_f, H_f, W_f).
            coarse_logits: (N, K, H_c, W_c) coarse logits.
            point_coords: (N, P, 2) points in ``[0, 1] x [0, 1]`` image coordinates.

        Returns:
            (N, K, P) point logits.
        """
        fine_grained_features = torch.cat(
            [point_sample(features[name], point_coords) for name in self.in_features], dim=1
        )
        coarse_features = point_sample(coarse_logits, point_coords)
        return self.point_head(fine_grained_features, coarse_features)

    def subdivision_inference(self, features: dict[str, Tensor], coarse_logits: Tensor) -> Tensor:
        """
        Adaptive subdivision: per step, upsample the logits 2x bilinearly, select the most
        uncertain cells and overwrite their logits with the point head's prediction (see
        :func:`pointrend_d2.subdivision.subdivision_inference`).

        Args:
            features: backbone maps by name.
            coarse_logits: (N, K, H_c, W_c) coarse logits.

        Returns:
            (N, K, H_c * 2**steps, W_c * 2**steps) refined logits.
        """
        return subdivision_inference(
            coarse_logits,
            self.subdivision_steps,
            self.subdivision_num_points,
            selection=self.subdivision_selection,
            predict_points=lambda point_coords: self.predict_points(features, coarse_logits, point_coords),
        )
