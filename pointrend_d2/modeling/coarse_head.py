"""
The contract between PointRend's semantic head and the coarse heads it wraps
(:class:`CoarseSemSegHead`), the single-foreground-logit convention of the coarse heads, and
SemanticFPN as a coarse head (:class:`SemanticFPNCoarseHead`).
"""

from typing import ClassVar, Protocol, runtime_checkable

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from torch import Tensor, nn
from torch.nn import functional as F

from .losses import upsampled_sem_seg_loss

__all__ = [
    "CoarseHeadForward",
    "CoarseSemSegHead",
    "SemanticFPNCoarseHead",
    "build_coarse_head",
    "expand_foreground_logit",
    "registered_coarse_heads",
]


@runtime_checkable
class CoarseSemSegHead(Protocol):
    """
    What :class:`pointrend_d2.PointRendSemanticHead` needs of the coarse head named by
    MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME (an ``nn.Module`` in SEM_SEG_HEADS_REGISTRY).
    detectron2's ``SemSegFPNHead``, :class:`SemanticFPNCoarseHead` and
    :class:`pointrend_d2.DeepLabV3CoarseHead` satisfy it.

    A head whose class sets ``single_foreground_logit = True`` trains K = 1 as a single sigmoid
    foreground logit (binary cross-entropy); other heads need K >= 2.
    """

    #: Stride of the logits of :meth:`layers` with respect to the input image, a power of 2.
    common_stride: int

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """Backbone maps by name -> (N, K, H / common_stride, W / common_stride) logits."""

    def losses(self, predictions: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """(N, K, h, w) logits of :meth:`layers` and (N, H, W) int64 labels -> named losses."""


def registered_coarse_heads() -> list[str]:
    """Names in SEM_SEG_HEADS_REGISTRY whose class has the coarse head's ``layers`` and
    ``losses`` (see :class:`CoarseSemSegHead`); PointRend heads, which wrap one, have neither."""
    return sorted(
        name
        for name, head_class in SEM_SEG_HEADS_REGISTRY
        if callable(getattr(head_class, "layers", None))
        and callable(getattr(head_class, "losses", None))
    )


def build_coarse_head(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """
    The coarse head named by MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME, built on the backbone's
    maps ``input_shape`` and checked against :class:`CoarseSemSegHead` and the class count
    MODEL.SEM_SEG_HEAD.NUM_CLASSES.

    Raises:
        ValueError: naming the key and what the head lacks.
    """
    name = cfg.MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME
    coarse_heads = registered_coarse_heads()
    if name not in coarse_heads:
        raise ValueError(
            f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME={name!r} is not a coarse head registered "
            f"in SEM_SEG_HEADS_REGISTRY; registered: {coarse_heads}"
        )
    coarse_head = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not isinstance(coarse_head, CoarseSemSegHead):
        missing = [m for m in ("common_stride", "layers", "losses") if not hasattr(coarse_head, m)]
        raise ValueError(
            f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME={name!r} lacks {missing} of the coarse "
            "head contract (pointrend_d2.modeling.coarse_head.CoarseSemSegHead)"
        )
    if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1 and not getattr(
        type(coarse_head), "single_foreground_logit", False
    ):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES=1 (a single sigmoid foreground logit) needs a coarse "
            f"head that trains one with binary cross-entropy; MODEL.POINT_HEAD."
            f"COARSE_SEM_SEG_HEAD_NAME={name!r} does not: use 'SemanticFPNCoarseHead' or "
            "'DeepLabV3CoarseHead', or NUM_CLASSES 2"
        )
    return coarse_head


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


class CoarseHeadForward:
    """
    ``forward`` of a coarse head used on its own (as MODEL.SEM_SEG_HEAD.NAME, the baseline): its
    losses in training; at inference its logits upsampled bilinearly by ``common_stride`` to the
    input resolution, a single foreground logit as ``[0, logit]``. Mixed into classes that
    satisfy :class:`CoarseSemSegHead`, before their ``nn.Module`` base.
    """

    def forward(
        self, features: dict[str, Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """
        Args:
            features: backbone maps by name.
            targets: (N, H, W) int64 labels at the padded input resolution (training only).

        Returns:
            In training, ``(None, losses)``. In inference, ``((N, K', H, W) logits, {})``,
            K' = max(K, 2).
        """
        logits = self.layers(features)
        if self.training:
            return None, self.losses(logits, targets)
        logits = F.interpolate(
            logits, scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
        return expand_foreground_logit(logits), {}


@SEM_SEG_HEADS_REGISTRY.register()
class SemanticFPNCoarseHead(CoarseHeadForward, SemSegFPNHead):
    """
    detectron2's ``SemSegFPNHead`` (same parameters, so its checkpoints load unchanged) with the
    losses of :mod:`pointrend_d2.losses`: 0 rather than NaN on a crop whose labels are all ignored,
    and a single sigmoid foreground logit for K = 1 (inference then returns ``[0, logit]``).
    """

    single_foreground_logit: ClassVar[bool] = True
    # Its loss counts only labelled pixels, and is 0 on a crop without any: it trains from
    # sparse point labels (pointrend_d2.modeling.point_supervision).
    supports_point_supervision: ClassVar[bool] = True

    def losses(self, predictions: Tensor, targets: Tensor) -> dict[str, Tensor]:
        loss = upsampled_sem_seg_loss(predictions, targets, self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}
