"""
Implicit PointRend for instance segmentation: a mask head registered in detectron2's
ROI_MASK_HEAD_REGISTRY for the ``StandardROIHeads`` of a Mask R-CNN, with the parameters of
detectron2's ``projects/PointRend`` ImplicitPointRendMaskHead (``parameter_head.*``,
``point_head.*``), so its checkpoints load unchanged.

No coarse mask: a parameter head (:class:`ImplicitParameterHead`, the layers of PointRend's coarse
mask head) predicts, from region features pooled from MODEL.ROI_MASK_HEAD.IN_FEATURES (p2), the
weights of each box's point head
(:class:`~pointrend_d2.modeling.implicit_point_head.ImplicitMLPPointHead`), a per-instance
implicit function of the box-normalized point, on the fine-grained features of
MODEL.POINT_HEAD.IN_FEATURES (p2) there and a positional encoding of the point:

* training: MODEL.POINT_HEAD.TRAIN_NUM_POINTS uniform random points per foreground box, labelled
  from the ground-truth masks at the exact points (as PointRend's instance head); loss = the point
  loss (binary cross-entropy of the ground-truth class's logit) + MODEL.IMPLICIT_POINTREND.
  PARAMS_L2_REGULARIZER times the mean square of the predicted parameters;
* inference: the implicit function at every cell of an ``S x S`` grid over each box, ``S =
  floor(sqrt(MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS))`` (28 for 784; detectron2 requires a
  square), then MODEL.POINT_HEAD.SUBDIVISION_STEPS steps of adaptive subdivision (3: 28x28 to
  224x224) of the predicted class's logit, with the exact selections of
  :func:`pointrend_d2.modeling.subdivision.subdivision_inference`; then detectron2's
  ``mask_rcnn_inference`` (:class:`~pointrend_d2.modeling.mask_head.SubdivisionInstanceMaskHead`).

As in PointRend's instance head, only the predicted class's logit is evaluated and refined (the
ground-truth class's in training): the output layer's row of that class, the same masks as
refining all K.
"""

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY
from detectron2.structures import Instances
from torch import Tensor, nn

from .implicit_point_head import ImplicitMLPPointHead
from .losses import point_loss
from .mask_head import (
    ConvFCLayers,
    SubdivisionInstanceMaskHead,
    instance_point_labels,
    instance_point_settings,
    num_mask_classes,
    pool_region_features,
    region_in_features,
)
from .point_features import roi_point_features
from .point_head import point_in_features
from .point_settings import PointSettings
from .point_supervision import (
    IGNORED_POINT,
    box_point_targets,
    point_supervision_from_config,
    require_masks,
)

__all__ = ["ImplicitParameterHead", "ImplicitPointRendInstanceMaskHead", "sample_uniform_points"]


class ImplicitParameterHead(ConvFCLayers, nn.Module):
    """Predicts each region's point-head parameter vector from its pooled (R, C, H, W) features:
    :class:`~pointrend_d2.modeling.mask_head.ConvFCLayers` with ``num_params`` outputs."""

    def __init__(
        self, input_shape: ShapeSpec, *, num_params: int, conv_dim: int, fc_dims: Sequence[int]
    ):
        super().__init__()
        self.add_conv_fc_layers(input_shape, conv_dim, fc_dims, num_params)

    def forward(self, region_features: Tensor) -> Tensor:
        """(R, C, H, W) -> (R, num_params)."""
        return self.conv_fc(region_features)


def sample_uniform_points(num_boxes: int, num_points: int, device: torch.device) -> Tensor:
    """(R, P, 2) box-normalized points drawn uniformly (the same draws as detectron2's implicit
    head from the same random state)."""
    return torch.rand(num_boxes, num_points, 2, device=device)


@ROI_MASK_HEAD_REGISTRY.register()
class ImplicitPointRendInstanceMaskHead(SubdivisionInstanceMaskHead):
    """
    Implicit PointRend's instance mask head (see the module docstring). It receives the feature
    maps of MODEL.ROI_HEADS.IN_FEATURES by name, not pooled features, so
    MODEL.ROI_MASK_HEAD.POOLER_TYPE must be empty. With point supervision its point loss is taken
    at the objects' labelled points.
    """

    supports_point_supervision: ClassVar[bool] = True

    @configurable
    def __init__(
        self,
        *,
        parameter_head: nn.Module,
        point_head: ImplicitMLPPointHead,
        roi_in_features: list[str],
        point_in_features: list[str],
        feature_strides: dict[str, int],
        point_settings: PointSettings,
        pooler_resolution: int = 14,
        params_l2_weight: float = 0.00001,
        point_sampler: Callable[[int, int, torch.device], Tensor] = sample_uniform_points,
        point_supervision: bool = False,
    ):
        """
        Args:
            parameter_head: predicts (R, point_head.num_params) from (R, C, pooler_resolution,
                pooler_resolution) region features.
            point_head: the implicit function, K outputs.
            roi_in_features: maps pooled for the parameter head (concatenated).
            point_in_features: maps sampled at the points as fine-grained features.
            feature_strides: the stride of each map by name.
            point_settings: training points per foreground box, and subdivision: cells per step
                and box (the initial grid's side is their square root, rounded down), steps
                (>= 0; 3: 28 -> 224), selection.
            pooler_resolution: side of the grid of region features for the parameter head.
            params_l2_weight: weight of the mean square of the predicted parameters in the loss.
            point_sampler: the training point sampler, ``point_sampler(R, P, device)`` ->
                (R, P, 2).
            point_supervision: train the point loss at the objects' labelled points (the
                instances' ``gt_point_coords``, ``gt_point_labels``) instead of at sampled points
                labelled from masks (:mod:`pointrend_d2.modeling.point_supervision`).
        """
        super().__init__()
        if point_settings.subdivision_steps < 0:
            raise ValueError(
                f"MODEL.POINT_HEAD.SUBDIVISION_STEPS={point_settings.subdivision_steps}: must be "
                ">= 0 for instance masks (each step doubles the mask side: 3 takes 28x28 to "
                "224x224)"
            )
        self.parameter_head = parameter_head
        self.point_head = point_head
        self.roi_in_features = list(roi_in_features)
        self.point_in_features = list(point_in_features)
        self.feature_strides = dict(feature_strides)
        self.point_settings = point_settings
        self.pooler_resolution = pooler_resolution
        self.params_l2_weight = params_l2_weight
        self.point_sampler = point_sampler
        self.point_supervision = point_supervision
        self.initial_resolution = math.isqrt(point_settings.subdivision_num_points)
        self.subdivision_steps = point_settings.subdivision_steps

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]):
        if cfg.MODEL.ROI_HEADS.NUM_CLASSES < 1:
            raise ValueError(
                f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES}: must be >= 1"
            )
        params_l2_weight = cfg.MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER
        if params_l2_weight < 0:
            raise ValueError(
                f"MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER={params_l2_weight}: must be >= 0 "
                "(the weight of the predicted parameters' mean square in the loss)"
            )
        roi_in_features = region_in_features(cfg, input_shape, cls.__name__)
        point_settings = instance_point_settings(cfg)
        point_features = point_in_features(cfg, input_shape)
        point_channels = sum(input_shape[f].channels for f in point_features)
        point_head = ImplicitMLPPointHead(cfg, point_channels, num_mask_classes(cfg))
        resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        region_shape = ShapeSpec(
            channels=sum(input_shape[f].channels for f in roi_in_features),
            height=resolution,
            width=resolution,
        )
        return {
            "parameter_head": ImplicitParameterHead(
                region_shape, num_params=point_head.num_params, **ConvFCLayers.conv_fc_config(cfg)
            ),
            "point_head": point_head,
            "roi_in_features": roi_in_features,
            "point_in_features": point_features,
            "feature_strides": {name: shape.stride for name, shape in input_shape.items()},
            "point_settings": point_settings,
            "pooler_resolution": resolution,
            "params_l2_weight": params_l2_weight,
            "point_supervision": point_supervision_from_config(cfg),
        }

    def forward(self, features: dict[str, Tensor], instances: list[Instances]):
        """
        As :meth:`PointRendInstanceMaskHead.forward
        <pointrend_d2.modeling.mask_head.PointRendInstanceMaskHead.forward>`, but training returns
        ``{"loss_l2", "loss_mask_point"}`` (detectron2's names).
        """
        if self.training:
            boxes = [x.proposal_boxes.tensor for x in instances]
            parameters = self.predict_parameters(features, boxes)
            # A sum over the count, not a mean: 0 rather than NaN without foreground boxes.
            mean_square = parameters.float().square().sum() / max(parameters.numel(), 1)
            losses = {"loss_l2": self.params_l2_weight * mean_square}
            gt_classes = torch.cat([x.gt_classes for x in instances])
            if self.point_supervision:
                point_coords, point_labels = box_point_targets(instances)
            else:
                require_masks(instances)
                with torch.no_grad():
                    point_coords = self.point_sampler(
                        len(gt_classes), self.point_settings.train_num_points, parameters.device
                    )
                    point_labels = instance_point_labels(instances, point_coords)
            point_logits = self.predict_points(
                features, boxes, parameters, point_coords, gt_classes
            )
            losses["loss_mask_point"] = point_loss(
                point_logits, point_labels, ignore_value=IGNORED_POINT
            )
            return losses
        return self.inference(features, instances)

    def predict_parameters(self, features: dict[str, Tensor], boxes: list[Tensor]) -> Tensor:
        """
        The parameter head on region features pooled by bilinear sampling at the centres of a
        ``pooler_resolution``-sided grid over each box.

        Args:
            features: maps by name.
            boxes: per image, (R_n, 4) boxes in absolute image coordinates.

        Returns:
            (R, num_params) each box's point-head parameters.
        """
        region_features = pool_region_features(
            [features[f] for f in self.roi_in_features],
            [self.feature_strides[f] for f in self.roi_in_features],
            boxes,
            self.pooler_resolution,
        )
        return self.parameter_head(region_features)

    def predict_points(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        parameters: Tensor,
        point_coords: Tensor,
        classes: Tensor,
    ) -> Tensor:
        """
        Each box's implicit function at box-normalized points, the logit of its class.

        Args:
            features: maps by name.
            boxes: per image, (R_n, 4) boxes in absolute image coordinates.
            parameters: (R, num_params) the boxes' point-head parameters.
            point_coords: (R, P, 2) box-normalized points.
            classes: (R,) the class of each box (ignored for class-agnostic masks).

        Returns:
            (R, 1, P) point logits.
        """
        fine_grained_features = None
        if self.point_head.image_features:
            fine_grained_features = roi_point_features(
                [features[f] for f in self.point_in_features],
                [self.feature_strides[f] for f in self.point_in_features],
                boxes,
                point_coords,
            )
        return self.point_head(fine_grained_features, point_coords, parameters, classes)

    def point_predictor(
        self, features: dict[str, Tensor], boxes: list[Tensor], classes: Tensor
    ) -> Callable[[Tensor], Tensor]:
        """Each box's implicit function, its parameters predicted once (see
        :meth:`~pointrend_d2.modeling.mask_head.SubdivisionInstanceMaskHead.point_predictor`)."""
        parameters = self.predict_parameters(features, boxes)

        def predict_class_points(point_coords: Tensor) -> Tensor:
            return self.predict_points(features, boxes, parameters, point_coords, classes)

        return predict_class_points
