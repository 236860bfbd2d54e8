"""
The contract between PointRend's semantic head and the coarse heads it wraps
(:class:`CoarseSemSegHead`), the single-foreground-logit convention of the coarse heads, and
SemanticFPN as a coarse head (:class:`SemanticFPNCoarseHead`).
"""

from typing import ClassVar, Protocol, runtime_checkable

import torch
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from torch import Tensor
from torch.nn import functional as F

from .losses import upsampled_sem_seg_loss

__all__ = [
    "CoarseHeadForward",
    "CoarseSemSegHead",
    "SemanticFPNCoarseHead",
    "expand_foreground_logit",
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

    def losses(self, predictions: Tensor, targets: Tensor) -> dict[str, Tensor]:
        loss = upsampled_sem_seg_loss(predictions, targets, self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}
