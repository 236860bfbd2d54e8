"""Mask R-CNN's mask head, trainable from labelled points (see :mod:`.point_supervision`)."""

from typing import ClassVar

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from detectron2.structures import Instances

from .point_supervision import (
    box_point_targets,
    mask_point_loss,
    point_supervision_from_config,
    require_masks,
)

__all__ = ["PointSupervisedMaskRCNNHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class PointSupervisedMaskRCNNHead(MaskRCNNConvUpsampleHead):
    """
    detectron2's ``MaskRCNNConvUpsampleHead`` (same layers and parameter names, so its
    checkpoints load unchanged) whose training loss, with MODEL.POINT_SUPERVISION.ENABLED, is the
    binary cross-entropy of its 28x28 mask logits sampled bilinearly at each object's labelled
    points (:func:`~pointrend_d2.modeling.point_supervision.mask_point_loss`) instead of Mask
    R-CNN's loss against a mask. Inference, and training without point supervision, are
    detectron2's.
    """

    supports_point_supervision: ClassVar[bool] = True

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, point_supervision: bool = False, **kwargs):
        """
        Args:
            input_shape, kwargs: as detectron2's ``MaskRCNNConvUpsampleHead``.
            point_supervision: train the mask loss at the labelled points.
        """
        super().__init__(input_shape, **kwargs)
        self.point_supervision = point_supervision

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec):
        return {
            **super().from_config(cfg, input_shape),
            "point_supervision": point_supervision_from_config(cfg),
        }

    def forward(self, x: torch.Tensor, instances: list[Instances]):
        if not self.training:
            return super().forward(x, instances)
        if not self.point_supervision:
            require_masks(instances)
            return super().forward(x, instances)
        point_coords, point_labels = box_point_targets(instances)
        gt_classes = torch.cat([image_instances.gt_classes for image_instances in instances])
        loss = mask_point_loss(self.layers(x), gt_classes, point_coords, point_labels)
        return {"loss_mask": loss * self.loss_weight}
