"""
The models: cfg-free point machinery (``point_features``, ``subdivision``) shared by every head,
the point head, the coarse heads, and the PointRend semantic and instance heads registered in
detectron2's registries.
"""

from .coarse_head import SemanticFPNCoarseHead
from .deeplab_head import DeepLabV3CoarseHead
from .dilated_resnet import DilatedResNet, build_dilated_resnet_backbone
from .image_feature_backbone import ImageFeatureBackbone, build_backbone_with_image
from .implicit_mask_head import ImplicitPointRendInstanceMaskHead
from .implicit_point_head import ImplicitMLPPointHead
from .mask_head import ConvFCCoarseMaskHead, PointRendInstanceMaskHead
from .meta_arch import ExactSizeSemanticSegmentor
from .point_head import POINT_HEAD_REGISTRY, MLPPointHead, build_point_head
from .point_supervised_mask_rcnn import PointSupervisedMaskRCNNHead
from .semantic_seg import PointRendSemanticHead

__all__ = [
    "POINT_HEAD_REGISTRY",
    "ConvFCCoarseMaskHead",
    "DeepLabV3CoarseHead",
    "DilatedResNet",
    "ExactSizeSemanticSegmentor",
    "ImageFeatureBackbone",
    "ImplicitMLPPointHead",
    "ImplicitPointRendInstanceMaskHead",
    "MLPPointHead",
    "PointRendInstanceMaskHead",
    "PointRendSemanticHead",
    "PointSupervisedMaskRCNNHead",
    "SemanticFPNCoarseHead",
    "build_backbone_with_image",
    "build_dilated_resnet_backbone",
    "build_point_head",
]
