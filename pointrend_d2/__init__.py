"""
pointrend_d2: PointRend semantic and instance segmentation (Kirillov et al., CVPR 2020) as a
detectron2 extension. Importing the package registers its heads and its dilated ResNet backbone in
detectron2's registries and its embedded dataset in detectron2's DatasetCatalog.
"""

from . import data
from .config import add_pointrend_config
from .modeling import (
    POINT_HEAD_REGISTRY,
    ConvFCCoarseMaskHead,
    DeepLabV3CoarseHead,
    DilatedResNet,
    ExactSizeSemanticSegmentor,
    ImplicitMLPPointHead,
    ImplicitPointRendInstanceMaskHead,
    MLPPointHead,
    PointRendInstanceMaskHead,
    PointRendSemanticHead,
    SemanticFPNCoarseHead,
    build_dilated_resnet_backbone,
    build_point_head,
)

__version__ = "0.1.0"

data.register_textured_shapes()
data.register_textured_shapes_instances()
data.register_textured_shapes_points()

__all__ = [
    "POINT_HEAD_REGISTRY",
    "DeepLabV3CoarseHead",
    "DilatedResNet",
    "ExactSizeSemanticSegmentor",
    "MLPPointHead",
    "PointRendSemanticHead",
    "SemanticFPNCoarseHead",
    "add_pointrend_config",
    "build_dilated_resnet_backbone",
    "build_point_head",
    "ConvFCCoarseMaskHead",
    "PointRendInstanceMaskHead",
    "ImplicitMLPPointHead",
    "ImplicitPointRendInstanceMaskHead",
]
