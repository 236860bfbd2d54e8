"""
A dilated ResNet (DeepLab's backbone) registered in detectron2's BACKBONE_REGISTRY as
``build_dilated_resnet_backbone``: res4 and/or res5 trade their stride for dilation, so the
deepest map has output stride 16 or 8, and any stage (e.g. ``res2`` and ``res5``) can be output.
"""

from detectron2.config import CfgNode
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock, ResNet
from fvcore.nn import weight_init
from torch import Tensor
from torch.nn import functional as F

# (RES4_DILATION, RES5_DILATION) -> output stride of res5.
OUTPUT_STRIDE_OF_DILATIONS = {(1, 1): 32, (1, 2): 16, (2, 4): 8}


def stage_strides_and_dilations(res4_dilation: int, res5_dilation: int) -> list[tuple[int, int]]:
    """
    ``(first block stride, dilation)`` of res2, res3, res4 and res5. A dilated stage keeps its
    input resolution (stride 1) and dilates its 3x3 convs by the total stride given up so far,
    which keeps the receptive field of the plain ResNet.

    Raises:
        ValueError: for a pair other than (1, 1), (1, 2) (output stride 16) or (2, 4) (8).
    """
    if (res4_dilation, res5_dilation) not in OUTPUT_STRIDE_OF_DILATIONS:
        raise ValueError(
            f"MODEL.RESNETS.RES4_DILATION={res4_dilation} with MODEL.RESNETS.RES5_DILATION="
            f"{res5_dilation} is not supported; use (1, 2) for output stride 16, (2, 4) for "
            "output stride 8 or (1, 1) for output stride 32"
        )
    return [
        (1, 1),
        (2, 1),
        (1 if res4_dilation > 1 else 2, res4_dilation),
        (1 if res5_dilation > 1 else 2, res5_dilation),
    ]


class DilatedBasicBlock(CNNBlockBase):
    """
    detectron2's ``BasicBlock`` (ResNet-18/34) with a ``dilation`` argument, which the stock block
    lacks. Module names match ``BasicBlock`` so that R-18/34 checkpoints load unchanged.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, dilation: int = 1, norm="BN"
    ):
        """
        Args:
            in_channels, out_channels: channels of the block's input and output.
            stride: stride of the first 3x3 conv (and of the projection shortcut).
            dilation: dilation of both 3x3 convs: both run at the resolution the stage kept.
            norm: normalization of every conv, see :func:`detectron2.layers.get_norm`.
        """
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=get_norm(norm, out_channels),
            )
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            padding=dilation,
            dilation=dilation,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride)."""
        out = self.conv2(F.relu_(self.conv1(x)))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


class DilatedResNet(ResNet):
    """
    detectron2's ``ResNet`` whose ``size_divisibility`` is its deepest stride: inputs padded to a
    multiple of it give every stage an exact ``H / stride x W / stride`` map, so maps of different
    strides cover the same image area and a point addresses the same place in each.
    """

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())


@BACKBONE_REGISTRY.register()
def build_dilated_resnet_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> DilatedResNet:
    """
    Build a :class:`DilatedResNet` from MODEL.RESNETS: DEPTH (18, 34, 50, 101, 152), NORM,
    STEM_OUT_CHANNELS, RES2_OUT_CHANNELS, NUM_GROUPS, WIDTH_PER_GROUP, STRIDE_IN_1X1 (bottleneck
    depths), RES4_DILATION and RES5_DILATION (see :func:`stage_strides_and_dilations`),
    OUT_FEATURES, and MODEL.BACKBONE.FREEZE_AT.
    """
    resnet_cfg = cfg.MODEL.RESNETS
    depth = resnet_cfg.DEPTH
    num_blocks_per_stage = {
        18: [2, 2, 2, 2],
        34: [3, 4, 6, 3],
        50: [3, 4, 6, 3],
        101: [3, 4, 23, 3],
        152: [3, 8, 36, 3],
    }[depth]
    if any(resnet_cfg.DEFORM_ON_PER_STAGE):
        raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE is not supported by the dilated ResNet")
    if depth < 50 and resnet_cfg.NUM_GROUPS != 1:
        raise ValueError(f"MODEL.RESNETS.NUM_GROUPS must be 1 for ResNet-{depth}")
    strides_and_dilations = stage_strides_and_dilations(
        resnet_cfg.RES4_DILATION, resnet_cfg.RES5_DILATION
    )

    norm = resnet_cfg.NORM
    stem = BasicStem(
        in_channels=input_shape.channels, out_channels=resnet_cfg.STEM_OUT_CHANNELS, norm=norm
    )
    in_channels = resnet_cfg.STEM_OUT_CHANNELS
    out_channels = resnet_cfg.RES2_OUT_CHANNELS
    bottleneck_channels = resnet_cfg.NUM_GROUPS * resnet_cfg.WIDTH_PER_GROUP
    stages = []
    for num_blocks, (stride, dilation) in zip(
        num_blocks_per_stage, strides_and_dilations, strict=True
    ):
        if depth < 50:
            block_kwargs = {"block_class": DilatedBasicBlock}
        else:
            block_kwargs = {
                "block_class": BottleneckBlock,
                "bottleneck_channels": bottleneck_channels,
                "num_groups": resnet_cfg.NUM_GROUPS,
                "stride_in_1x1": resnet_cfg.STRIDE_IN_1X1,
            }
        stages.append(
            ResNet.make_stage(
                num_blocks=num_blocks,
                in_channels=in_channels,
                out_channels=out_channels,
                stride_per_block=[stride] + [1] * (num_blocks - 1),
                dilation=dilation,
                norm=norm,
                **block_kwargs,
            )
        )
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return DilatedResNet(
        stem, stages, out_features=resnet_cfg.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT
    )
