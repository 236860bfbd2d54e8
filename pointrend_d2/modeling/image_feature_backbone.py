"""
A backbone that also outputs the input image as a map, registered in detectron2's
BACKBONE_REGISTRY as ``build_backbone_with_image``: it builds the backbone named by
MODEL.BACKBONE.WRAPPED_NAME and adds the map ``"image"`` (stride 1, the image's channels), so that
a point head can look at the pixels around its points (MODEL.POINT_HEAD.IMAGE_PATCH_SIZE).
"""

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor

#: The name of the image map among the backbone's outputs.
IMAGE_FEATURE = "image"


def standardize_per_image(images: Tensor) -> Tensor:
    """
    Each channel of each image to zero mean and unit variance over its pixels (padding included),
    so the pixels a point head reads have the scale of its other inputs whatever PIXEL_MEAN and
    PIXEL_STD are, and no image's brightness or contrast sets them apart.

    Args:
        images: (N, C, H, W).

    Returns:
        (N, C, H, W); a constant channel becomes 0.
    """
    mean = images.mean(dim=(2, 3), keepdim=True)
    std = images.std(dim=(2, 3), keepdim=True, correction=0)
    return (images - mean) / std.clamp_min(1e-6)


class ImageFeatureBackbone(Backbone):
    """
    ``backbone``'s maps plus :data:`IMAGE_FEATURE`: the (normalised, padded) input it was given,
    standardised per image (:func:`standardize_per_image`). Padding and its constraints are
    ``backbone``'s.
    """

    def __init__(self, backbone: Backbone, input_channels: int):
        """
        Args:
            backbone: the wrapped backbone.
            input_channels: the input's channels (3 for RGB or BGR images).
        """
        super().__init__()
        if IMAGE_FEATURE in backbone.output_shape():
            raise ValueError(
                f"The wrapped backbone {type(backbone).__name__} already outputs a map named "
                f"{IMAGE_FEATURE!r}"
            )
        self.backbone = backbone
        self.input_channels = input_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {**self.backbone(x), IMAGE_FEATURE: standardize_per_image(x)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        image_shape = ShapeSpec(channels=self.input_channels, stride=1)
        return {**self.backbone.output_shape(), IMAGE_FEATURE: image_shape}

    @property
    def size_divisibility(self) -> int:
        return self.backbone.size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return self.backbone.padding_constraints


@BACKBONE_REGISTRY.register()
def build_backbone_with_image(cfg: CfgNode, input_shape: ShapeSpec) -> ImageFeatureBackbone:
    """
    Build the backbone named by MODEL.BACKBONE.WRAPPED_NAME and wrap it in an
    :class:`ImageFeatureBackbone`.

    Raises:
        ValueError: naming MODEL.BACKBONE.WRAPPED_NAME if it is not registered or names this
            builder.
    """
    name, this_builder = cfg.MODEL.BACKBONE.WRAPPED_NAME, build_backbone_with_image.__name__
    if name == this_builder or name not in BACKBONE_REGISTRY:
        raise ValueError(
            f"MODEL.BACKBONE.WRAPPED_NAME={name!r}: must name another backbone builder of "
            f"BACKBONE_REGISTRY (the backbone whose maps come with the image), one of "
            f"{sorted(n for n, _ in BACKBONE_REGISTRY if n != this_builder)}"
        )
    return ImageFeatureBackbone(BACKBONE_REGISTRY.get(name)(cfg, input_shape), input_shape.channels)
