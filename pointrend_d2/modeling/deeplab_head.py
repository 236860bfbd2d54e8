"""
DeepLabV3's head (Chen et al. 2017) as a coarse semantic head, registered in detectron2's
SEM_SEG_HEADS_REGISTRY as ``DeepLabV3CoarseHead``.
"""

from collections.abc import Sequence
from typing import ClassVar

from detectron2.config import CfgNode, configurable
from detectron2.layers import ASPP, Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from .coarse_head import CoarseHeadForward
from .losses import upsampled_sem_seg_loss


@SEM_SEG_HEADS_REGISTRY.register()
class DeepLabV3CoarseHead(CoarseHeadForward, nn.Module):
    """
    ASPP (a 1x1 conv, three atrous 3x3 convs and image pooling, concatenated and projected, then
    optional dropout) on one backbone map, then a 1x1 classifier: logits at the map's stride.

    Used as MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME it is PointRend's coarse head (``layers`` and
    ``losses``); used directly as MODEL.SEM_SEG_HEAD.NAME it is plain DeepLabV3, whose inference
    upsamples the logits bilinearly to the input resolution.

    With one class (K = 1) the logit is a sigmoid foreground logit trained with binary
    cross-entropy (labels 0 background, 1 foreground); inference then returns two-class logits
    ``[0, logit]`` (see :func:`pointrend_d2.coarse_head.expand_foreground_logit`).
    """

    # See pointrend_d2.coarse_head.CoarseSemSegHead.
    single_foreground_logit: ClassVar[bool] = True
    # Trains from sparse point labels: the losses of SemanticFPNCoarseHead.
    supports_point_supervision: ClassVar[bool] = True

    @configurable
    def __init__(
        self,
        *,
        in_feature: str,
        in_channels: int,
        common_stride: int,
        num_classes: int,
        aspp_channels: int = 256,
        aspp_dilations: Sequence[int] = (6, 12, 18),
        norm: str = "BN",
        dropout: float = 0.1,
        loss_weight: float = 1.0,
        ignore_value: int = 255,
    ):
        """
        Args:
            in_feature: name of the backbone map the head reads (e.g. ``"res5"``).
            in_channels: channels of that map.
            common_stride: stride of that map, which is the stride of the logits.
            num_classes: K, the number of class logits (1 for a sigmoid foreground logit).
            aspp_channels: channels of every ASPP branch and of its projection.
            aspp_dilations: the three atrous rates; (6, 12, 18) at output stride 16, doubled at 8.
            norm: normalization of the ASPP convs, see :func:`detectron2.layers.get_norm`.
            dropout: dropout rate on the ASPP output during training (0 disables it).
            loss_weight: weight of ``loss_sem_seg``.
            ignore_value: label ignored by the loss.
        """
        super().__init__()
        self.in_feature = in_feature
        # Read by PointRendSemanticHead to derive its number of subdivision steps.
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        self.ignore_value = ignore_value
        self.aspp = ASPP(
            in_channels,
            aspp_channels,
            list(aspp_dilations),
            norm=norm,
            activation=F.relu,
            dropout=dropout,
        )
        self.predictor = Conv2d(aspp_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]):
        in_features = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
        if len(in_features) != 1 or in_features[0] not in input_shape:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES={in_features}: DeepLabV3CoarseHead reads exactly "
                f"one backbone map, one of {sorted(input_shape)} (the deepest, e.g. 'res5')"
            )
        (in_feature,) = in_features
        in_shape = input_shape[in_feature]
        deeplab_cfg = cfg.MODEL.DEEPLAB_V3
        return {
            "in_feature": in_feature,
            "in_channels": in_shape.channels,
            "common_stride": in_shape.stride,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "aspp_channels": deeplab_cfg.ASPP_CHANNELS,
            "aspp_dilations": deeplab_cfg.ASPP_DILATIONS,
            "norm": deeplab_cfg.NORM,
            "dropout": deeplab_cfg.DROPOUT,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def layers(self, features: dict[str, Tensor]) -> Tensor:
        """(N, C, H / s, W / s) map ``features[in_feature]`` -> (N, K, H / s, W / s) logits."""
        return self.predictor(self.aspp(features[self.in_feature]))

    def losses(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """
        Args:
            logits: (N, K, H / s, W / s) logits from :meth:`layers`.
            targets: (N, H, W) int64 labels.

        Returns:
            ``{"loss_sem_seg": loss}``: cross-entropy (K > 1) or binary cross-entropy (K = 1) of
            the logits upsampled bilinearly to the labels' size, times ``loss_weight``.
        """
        loss = upsampled_sem_seg_loss(logits, targets, self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}
