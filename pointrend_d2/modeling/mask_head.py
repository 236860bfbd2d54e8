"""
PointRend for instance segmentation: mask heads registered in detectron2's ROI_MASK_HEAD_REGISTRY,
for the ``StandardROIHeads`` of a Mask R-CNN.

``ConvFCCoarseMaskHead`` predicts a coarse ``S x S`` (7x7) mask per box from pooled region
features with a conv and fully connected layers. ``PointRendInstanceMaskHead`` pools its own
region features from MODEL.ROI_MASK_HEAD.IN_FEATURES (p2) by point sampling, runs the coarse head,
and renders each mask with a point head on fine-grained features (MODEL.POINT_HEAD.IN_FEATURES,
p2) sampled at points of the box:

* training: for each foreground box, points sampled by the uncertainty ``-|logit|`` of the coarse
  logit of its ground-truth class; their labels come from the ground-truth masks at the exact
  points (the pixel that contains a point for bit masks, point-in-polygon for polygons); loss =
  the coarse mask loss + the point loss (binary cross-entropy of the ground-truth class's logit);
* inference: the point head at every cell of a grid (the coarse side doubled while a subdivision
  step would re-predict every cell anyway: 28x28 with the defaults), then adaptive subdivision of
  the predicted class's logit up to 224x224
  (:func:`pointrend_d2.modeling.subdivision.subdivision_inference` batched over the boxes), then
  detectron2's ``mask_rcnn_inference``; the masks are pasted into the image by the
  meta-architecture, as for any Mask R-CNN.

Only the predicted class's logit is carried through the subdivision, not all K: the refined logit
of a class depends only on that class's channel, so the masks are the same as when every class is
refined (detectron2's reference does), at 1/K of the memory. For the same reason the point head
predicts only that class's logit at each point (in training, the ground-truth class's).

Parameter names follow detectron2's ``projects/PointRend`` instance head (``coarse_head.*``,
``point_head.*``), so its checkpoints load unchanged.

Implicit PointRend's head (:mod:`pointrend_d2.modeling.implicit_mask_head`) shares the pieces of
a head that pools its own region features: :class:`ConvFCLayers`, :func:`region_in_features`,
:func:`pool_region_features`, :func:`instance_point_settings` and the point-by-point inference of
:class:`SubdivisionInstanceMaskHead`.

Shape shorthand: R boxes of all images together, K mask classes (MODEL.ROI_HEADS.NUM_CLASSES, or 1
with MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK), S the coarse side, P points per box. Point
coordinates are box-normalized (see :mod:`pointrend_d2.point_features`).
"""

from collections.abc import Callable, Sequence
from typing import ClassVar

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import (
    BaseMaskRCNNHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from detectron2.structures import BitMasks, Instances, PolygonMasks
from torch import Tensor, nn
from torch.nn import functional as F

from .losses import point_loss
from .point_features import (
    bitmask_point_labels,
    box_points_to_image,
    point_sample,
    polygon_point_labels,
    regular_grid_points,
    roi_point_features,
    sample_uncertain_points,
)
from .point_head import build_point_head, point_in_features
from .point_settings import PointSettings
from .point_supervision import (
    IGNORED_POINT,
    box_point_targets,
    mask_point_loss,
    point_supervision_from_config,
    require_masks,
)
from .subdivision import SubdivisionStep, subdivision_inference

__all__ = [
    "ConvFCCoarseMaskHead",
    "ConvFCLayers",
    "PointRendInstanceMaskHead",
    "SubdivisionInstanceMaskHead",
    "instance_point_labels",
    "instance_point_settings",
    "num_mask_classes",
    "pool_region_features",
    "region_in_features",
]


def num_mask_classes(cfg: CfgNode) -> int:
    """K, the mask logits per box: MODEL.ROI_HEADS.NUM_CLASSES, or 1 for class-agnostic masks."""
    return 1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES


class ConvFCLayers:
    """
    The layers of detectron2's PointRend ``ConvFCHead``, mixed into an ``nn.Module``: pooled
    (C, H, W) region features, a 1x1 conv reducing the channels to ``conv_dim`` (only if there are
    more), a 2x2 stride-2 conv, ``len(fc_dims)`` fully connected layers, and a linear prediction
    of ``output_dim`` values per region. Names and layout follow detectron2's, so its checkpoints
    load. Shared by the coarse mask head and the implicit head's parameter head.
    """

    def add_conv_fc_layers(
        self, input_shape: ShapeSpec, conv_dim: int, fc_dims: Sequence[int], output_dim: int
    ) -> None:
        """Add the layers for (R, C, H, W) regions of ``input_shape`` (even sides)."""
        self.conv_layers = []
        if input_shape.channels > conv_dim:
            self.reduce_channel_dim_conv = Conv2d(
                input_shape.channels, conv_dim, kernel_size=1, activation=F.relu
            )
            self.conv_layers.append(self.reduce_channel_dim_conv)
        self.reduce_spatial_dim_conv = Conv2d(
            conv_dim, conv_dim, kernel_size=2, stride=2, activation=F.relu
        )
        self.conv_layers.append(self.reduce_spatial_dim_conv)
        for layer in self.conv_layers:
            weight_init.c2_msra_fill(layer)
        input_dim = conv_dim * (input_shape.height // 2) * (input_shape.width // 2)
        self.fcs = []
        for index, fc_dim in enumerate(fc_dims):
            fc = nn.Linear(input_dim, fc_dim)
            weight_init.c2_xavier_fill(fc)
            self.add_module(f"fc{index + 1}", fc)
            self.fcs.append(fc)
            input_dim = fc_dim
        self.prediction = nn.Linear(input_dim, output_dim)
        # Near-zero initial predictions: coarse masks start uncertain everywhere, implicit
        # functions near zero.
        nn.init.normal_(self.prediction.weight, std=0.001)
        nn.init.constant_(self.prediction.bias, 0)

    def conv_fc(self, x: Tensor) -> Tensor:
        """(R, C, H, W) pooled region features -> (R, output_dim) predictions."""
        for layer in self.conv_layers:
            x = layer(x)
        x = torch.flatten(x, start_dim=1)
        for layer in self.fcs:
            x = F.relu(layer(x))
        return self.prediction(x)

    @staticmethod
    def conv_fc_config(cfg: CfgNode) -> dict:
        """``conv_dim`` and ``fc_dims`` from MODEL.ROI_MASK_HEAD, checked with its
        POOLER_RESOLUTION (the side of the pooled regions)."""
        mask_cfg = cfg.MODEL.ROI_MASK_HEAD
        positive_keys = {
            "MODEL.ROI_MASK_HEAD.NUM_FC": mask_cfg.NUM_FC,
            "MODEL.ROI_MASK_HEAD.FC_DIM": mask_cfg.FC_DIM,
            "MODEL.ROI_MASK_HEAD.CONV_DIM": mask_cfg.CONV_DIM,
        }
        for key, value in positive_keys.items():
            if value < 1:
                raise ValueError(f"{key}={value}: must be >= 1")
        if mask_cfg.POOLER_RESOLUTION < 2 or mask_cfg.POOLER_RESOLUTION % 2:
            raise ValueError(
                f"MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION={mask_cfg.POOLER_RESOLUTION}: must be even "
                "and >= 2 (the mask head halves it with a 2x2 stride-2 conv)"
            )
        return {"conv_dim": mask_cfg.CONV_DIM, "fc_dims": [mask_cfg.FC_DIM] * mask_cfg.NUM_FC}


@ROI_MASK_HEAD_REGISTRY.register()
class ConvFCCoarseMaskHead(ConvFCLayers, BaseMaskRCNNHead):
    """
    PointRend's coarse mask head: :class:`ConvFCLayers` predicting K ``S x S`` mask logits.

    Registered on its own it is a Mask R-CNN mask head on detectron2's pooled features
    (MODEL.ROI_MASK_HEAD.POOLER_TYPE set, POOLER_RESOLUTION = 2S) whose masks are S x S;
    :class:`PointRendInstanceMaskHead` uses it as its coarse head.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dim: int = 256,
        fc_dims: Sequence[int] = (1024, 1024),
        output_side_resolution: int = 7,
        loss_weight: float = 1.0,
        vis_period: int = 0,
    ):
        """
        Args:
            input_shape: channels, height and width of the pooled region features (even sides).
            num_classes: K, 1 for class-agnostic masks.
            conv_dim: channels of the conv layers.
            fc_dims: width of each fully connected layer (at least one).
            output_side_resolution: S, the side of the predicted masks.
            loss_weight: weight of the mask loss.
            vis_period: detectron2's mask-loss visualization period (0 disables it).
        """
        super().__init__(loss_weight=loss_weight, vis_period=vis_period)
        self.num_classes = num_classes
        self.output_side_resolution = output_side_resolution
        self.add_conv_fc_layers(
            input_shape, conv_dim, fc_dims, num_classes * output_side_resolution**2
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: ShapeSpec):
        mask_cfg = cfg.MODEL.ROI_MASK_HEAD
        positive_keys = {
            "MODEL.ROI_HEADS.NUM_CLASSES": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION": mask_cfg.OUTPUT_SIDE_RESOLUTION,
        }
        for key, value in positive_keys.items():
            if value < 1:
                raise ValueError(f"{key}={value}: must be >= 1")
        return {
            **super().from_config(cfg, input_shape),
            **cls.conv_fc_config(cfg),
            "input_shape": input_shape,
            "num_classes": num_mask_classes(cfg),
            "output_side_resolution": mask_cfg.OUTPUT_SIDE_RESOLUTION,
        }

    def layers(self, x: Tensor) -> Tensor:
        """(R, C, H, W) pooled region features -> (R, K, S, S) coarse mask logits."""
        side = self.output_side_resolution
        return self.conv_fc(x).view(-1, self.num_classes, side, side)


def instance_point_labels(instances: list[Instances], point_coords: Tensor) -> Tensor:
    """
    The ground-truth labels of the foreground boxes' points, from ``gt_masks`` at the exact
    points: bit masks by the pixel that contains a point, polygons by point-in-polygon.

    Args:
        instances: per image, the foreground proposals with ``proposal_boxes`` and ``gt_masks``
            (``BitMasks`` or ``PolygonMasks``), R boxes together.
        point_coords: (R, P, 2) box-normalized points, in the order of ``instances``.

    Returns:
        (R, P) int64 labels, 1 inside the box's ground-truth mask.
    """
    labels = []
    counts = [len(x) for x in instances]
    for image_instances, points in zip(instances, point_coords.split(counts), strict=True):
        if len(image_instances) == 0:
            continue
        image_points = box_points_to_image(image_instances.proposal_boxes.tensor, points)
        gt_masks = image_instances.gt_masks
        if isinstance(gt_masks, BitMasks):
            labels.append(bitmask_point_labels(gt_masks.tensor, image_points))
        elif isinstance(gt_masks, PolygonMasks):
            polygons = [
                [torch.as_tensor(polygon) for polygon in instance_polygons]
                for instance_polygons in gt_masks.polygons
            ]
            labels.append(polygon_point_labels(polygons, image_points))
        else:
            raise TypeError(
                f"gt_masks of type {type(gt_masks).__name__}: PointRend's instance head needs "
                "BitMasks or PolygonMasks (INPUT.MASK_FORMAT 'bitmask' or 'polygon')"
            )
    if not labels:
        return point_coords.new_zeros(point_coords.shape[:2], dtype=torch.int64)
    return torch.cat(labels)


def _select_class(logits: Tensor, classes: Tensor) -> Tensor:
    """(R, K, ...) logits and (R,) classes -> (R, 1, ...) the logit of each box's class (of the
    only one for class-agnostic masks)."""
    if logits.shape[1] == 1:
        return logits
    return logits[torch.arange(len(logits), device=logits.device), classes].unsqueeze(1)


def region_in_features(
    cfg: CfgNode, input_shape: dict[str, ShapeSpec], head_name: str
) -> list[str]:
    """
    MODEL.ROI_MASK_HEAD.IN_FEATURES, the maps a mask head that pools its own region features
    (``head_name``) pools, checked against the maps it receives (``input_shape``, by name).

    Raises:
        ValueError: if MODEL.ROI_MASK_HEAD.POOLER_TYPE is set, or IN_FEATURES is empty or names
            a map not in ``input_shape``.
    """
    mask_cfg = cfg.MODEL.ROI_MASK_HEAD
    if mask_cfg.POOLER_TYPE:
        raise ValueError(
            f"MODEL.ROI_MASK_HEAD.POOLER_TYPE={mask_cfg.POOLER_TYPE!r}: {head_name} pools "
            "its own region features (by point sampling MODEL.ROI_MASK_HEAD.IN_FEATURES), so "
            "it needs the feature maps, not detectron2's pooled features: set POOLER_TYPE to ''"
        )
    in_features = list(mask_cfg.IN_FEATURES)
    missing = [name for name in in_features if name not in input_shape]
    if not in_features or missing:
        raise ValueError(
            f"MODEL.ROI_MASK_HEAD.IN_FEATURES={in_features}: {missing or 'none'} not among "
            f"the maps the ROI heads receive (MODEL.ROI_HEADS.IN_FEATURES="
            f"{sorted(input_shape)}); name one or more of them"
        )
    return in_features


def instance_point_settings(cfg: CfgNode) -> PointSettings:
    """
    :meth:`PointSettings.from_config` for an instance mask head, whose training points are per
    box: MODEL.POINT_HEAD.TRAIN_NUM_POINTS must be set (> 0), not derived from a crop (-1), and
    TRAIN_BOUNDARY_POINT_RATIO and IMAGE_PATCH_SIZE 0.
    """
    train_num_points = cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS
    if train_num_points <= 0:
        raise ValueError(
            f"MODEL.POINT_HEAD.TRAIN_NUM_POINTS={train_num_points}: must be > 0 for "
            "instance masks (points per box; the paper's 14 * 14 = 196)"
        )
    settings = PointSettings.from_config(cfg)
    if settings.train_boundary_ratio > 0:
        raise ValueError(
            f"MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO={settings.train_boundary_ratio}: "
            "the instance mask heads sample no points on ground-truth boundaries (semantic "
            "PointRend only); set it to 0"
        )
    if settings.image_patch_size > 0:
        raise ValueError(
            f"MODEL.POINT_HEAD.IMAGE_PATCH_SIZE={settings.image_patch_size}: the instance mask "
            "heads read no image pixels at their points (semantic PointRend only); set it to 0"
        )
    return settings


def pool_region_features(
    features: list[Tensor], strides: list[int], boxes: list[Tensor], side: int
) -> Tensor:
    """
    Region features pooled by bilinear sampling at the centres of a ``side x side`` grid over
    each box (RoIAlign with one sample per bin), concatenated over the maps.

    Args:
        features: maps, each (N, C_i, H_i, W_i), of stride ``strides[i]``.
        boxes: per image, (R_n, 4) boxes in absolute image coordinates.

    Returns:
        (R, sum(C_i), side, side) region features.
    """
    num_boxes = sum(len(b) for b in boxes)
    grid = regular_grid_points(num_boxes, side, features[0].device)
    region_features = roi_point_features(features, strides, boxes, grid)
    return region_features.view(num_boxes, region_features.shape[1], side, side)


class SubdivisionInstanceMaskHead(nn.Module):
    """
    Inference of an instance mask head that predicts each box's mask point by point: its
    :meth:`point_predictor` at every cell of an ``initial_resolution``-sided grid over each box,
    then ``subdivision_steps`` steps of adaptive subdivision with ``point_settings``' cells per
    step and selection, of the predicted class's logit only; then detectron2's
    ``mask_rcnn_inference``. Subclasses set the three attributes and implement
    :meth:`point_predictor`.
    """

    point_settings: PointSettings
    initial_resolution: int
    subdivision_steps: int

    def point_predictor(
        self, features: dict[str, Tensor], boxes: list[Tensor], classes: Tensor
    ) -> Callable[[Tensor], Tensor]:
        """
        The function from (R, P, 2) box-normalized points to the (R, 1, P) logits of each box's
        class there, for R >= 1 boxes.

        Args:
            features: maps by name.
            boxes: per image, (R_n, 4) boxes in absolute image coordinates.
            classes: (R,) the class of each box.
        """
        raise NotImplementedError

    def inference(self, features: dict[str, Tensor], instances: list[Instances]):
        """``instances`` (``pred_boxes``, ``pred_classes``) with ``pred_masks`` (R_n, 1, M, M)
        mask probabilities, M = initial_resolution * 2**subdivision_steps."""
        boxes = [x.pred_boxes.tensor for x in instances]
        pred_classes = torch.cat([x.pred_classes for x in instances])
        mask_logits = self.subdivision_inference(features, boxes, pred_classes)
        mask_rcnn_inference(mask_logits, instances)
        return instances

    def subdivision_inference(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        classes: Tensor,
        on_step: Callable[[SubdivisionStep], None] | None = None,
    ) -> Tensor:
        """
        The mask logits of each box's class: the point predictor at every cell of the initial
        grid, then adaptive subdivision.

        Args:
            features: maps by name.
            boxes: per image, (R_n, 4) detected boxes in absolute image coordinates.
            classes: (R,) the class of each box.
            on_step: called after each subdivision step with its record (for pictures, tests).

        Returns:
            (R, 1, M, M) logits, M = initial resolution * 2**steps.
        """
        num_boxes = len(classes)
        initial = self.initial_resolution
        if num_boxes == 0:
            side = initial * 2**self.subdivision_steps
            return classes.new_zeros((0, 1, side, side), dtype=torch.float32)
        predict_points = self.point_predictor(features, boxes, classes)
        grid = regular_grid_points(num_boxes, initial, classes.device)
        initial_logits = predict_points(grid).view(num_boxes, 1, initial, initial)
        return subdivision_inference(
            initial_logits,
            self.subdivision_steps,
            self.point_settings.subdivision_num_points,
            selection=self.point_settings.subdivision_selection,
            predict_points=predict_points,
            on_step=on_step,
        )


@ROI_MASK_HEAD_REGISTRY.register()
class PointRendInstanceMaskHead(SubdivisionInstanceMaskHead):
    """
    PointRend's instance mask head (see the module docstring). It receives the feature maps of
    MODEL.ROI_HEADS.IN_FEATURES by name, not pooled features, so MODEL.ROI_MASK_HEAD.POOLER_TYPE
    must be empty.

    With point supervision (MODEL.POINT_SUPERVISION.ENABLED) both losses are taken at each
    object's labelled points instead (:mod:`pointrend_d2.modeling.point_supervision`): the coarse
    mask loss of the coarse logits sampled there, and the point loss of the point head there.
    """

    supports_point_supervision: ClassVar[bool] = True

    @configurable
    def __init__(
        self,
        *,
        coarse_head: ConvFCCoarseMaskHead,
        point_head: nn.Module,
        roi_in_features: list[str],
        point_in_features: list[str],
        feature_strides: dict[str, int],
        point_settings: PointSettings,
        pooler_resolution: int = 14,
        point_sampler: Callable[..., Tensor] = sample_uncertain_points,
        point_supervision: bool = False,
    ):
        """
        Args:
            coarse_head: predicts (R, K, S, S) coarse logits from (R, C, pooler_resolution,
                pooler_resolution) region features.
            point_head: a point head (see ``POINT_HEAD_REGISTRY``) with K outputs.
            roi_in_features: maps pooled for the coarse head (concatenated).
            point_in_features: maps sampled at the points as fine-grained features.
            feature_strides: the stride of each map by name.
            point_settings: training points per foreground box, and subdivision: steps from
                the coarse S x S (>= 0; 5: 7 -> 224), cells per step and box, selection.
            pooler_resolution: side of the grid of region features for the coarse head.
            point_sampler: the training point sampler, ``point_sampler(logits (R, 1, S, S),
                num_points, oversample_ratio, importance_sample_ratio)`` -> (R, P, 2).
            point_supervision: train both losses at the objects' labelled points (the
                instances' ``gt_point_coords``, ``gt_point_labels``), not from masks.
        """
        super().__init__()
        self.coarse_head = coarse_head
        self.point_head = point_head
        self.roi_in_features = list(roi_in_features)
        self.point_in_features = list(point_in_features)
        self.feature_strides = dict(feature_strides)
        self.pooler_resolution = pooler_resolution
        self.point_settings = point_settings
        self.point_sampler = point_sampler
        self.point_supervision = point_supervision
        # While a step would re-predict every cell of the doubled grid, predicting every cell of
        # that grid directly gives the same logits with one step fewer (7x7 -> 28x28 for 784).
        if point_settings.subdivision_steps < 0:
            raise ValueError(
                f"MODEL.POINT_HEAD.SUBDIVISION_STEPS={point_settings.subdivision_steps}: must be "
                ">= 0 for instance masks (each step doubles the mask side: 5 takes 7x7 to 224x224)"
            )
        self.initial_resolution = coarse_head.output_side_resolution
        self.subdivision_steps = point_settings.subdivision_steps
        while self.subdivision_steps > 0 and 4 * self.initial_resolution**2 <= (
            point_settings.subdivision_num_points
        ):
            self.initial_resolution *= 2
            self.subdivision_steps -= 1

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]):
        roi_in_features = region_in_features(cfg, input_shape, cls.__name__)
        point_settings = instance_point_settings(cfg)
        point_features = point_in_features(cfg, input_shape)
        roi_channels = sum(input_shape[f].channels for f in roi_in_features)
        resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        coarse_shape = ShapeSpec(channels=roi_channels, height=resolution, width=resolution)
        point_channels = sum(input_shape[f].channels for f in point_features)
        return {
            "coarse_head": ConvFCCoarseMaskHead(cfg, coarse_shape),
            "point_head": build_point_head(cfg, point_channels, num_mask_classes(cfg)),
            "roi_in_features": roi_in_features,
            "point_in_features": point_features,
            "feature_strides": {name: shape.stride for name, shape in input_shape.items()},
            "pooler_resolution": resolution,
            "point_settings": point_settings,
            "point_supervision": point_supervision_from_config(cfg),
        }

    def forward(self, features: dict[str, Tensor], instances: list[Instances]):
        """
        Args:
            features: the maps of MODEL.ROI_HEADS.IN_FEATURES by name, each (N, C, H, W).
            instances: per image, the foreground proposals (``proposal_boxes``, ``gt_classes``,
                ``gt_masks``) in training, the detections (``pred_boxes``, ``pred_classes``) in
                inference.

        Returns:
            In training, ``{"loss_mask", "loss_mask_point"}``. In inference, ``instances`` with
            ``pred_masks`` (R_n, 1, M, M) mask probabilities, M = S * 2**steps (224).
        """
        if self.training and self.point_supervision:
            return self.point_supervised_losses(features, instances)
        if self.training:
            require_masks(instances)
            boxes = [x.proposal_boxes.tensor for x in instances]
            coarse_logits = self.coarse_logits(features, boxes)
            losses = {
                "loss_mask": mask_rcnn_loss(coarse_logits, instances, self.coarse_head.vis_period)
                * self.coarse_head.loss_weight
            }
            gt_classes = torch.cat([x.gt_classes for x in instances])
            with torch.no_grad():
                point_coords = self.point_sampler(
                    _select_class(coarse_logits, gt_classes),
                    self.point_settings.train_num_points,
                    self.point_settings.oversample_ratio,
                    self.point_settings.importance_sample_ratio,
                )
                point_labels = instance_point_labels(instances, point_coords)
            point_logits = self.predict_points(
                features, boxes, coarse_logits, point_coords, gt_classes
            )
            losses["loss_mask_point"] = point_loss(point_logits, point_labels, ignore_value=-1)
            return losses
        return self.inference(features, instances)

    def point_supervised_losses(
        self, features: dict[str, Tensor], instances: list[Instances]
    ) -> dict[str, Tensor]:
        """
        The coarse and point losses at each object's labelled points (box-normalized in each
        foreground proposal; points outside the proposal's box are ignored).

        Returns:
            ``{"loss_mask", "loss_mask_point"}``.
        """
        boxes = [x.proposal_boxes.tensor for x in instances]
        coarse_logits = self.coarse_logits(features, boxes)
        gt_classes = torch.cat([x.gt_classes for x in instances])
        point_coords, point_labels = box_point_targets(instances)
        coarse_loss = mask_point_loss(coarse_logits, gt_classes, point_coords, point_labels)
        point_logits = self.predict_points(features, boxes, coarse_logits, point_coords, gt_classes)
        return {
            "loss_mask": coarse_loss * self.coarse_head.loss_weight,
            "loss_mask_point": point_loss(point_logits, point_labels, ignore_value=IGNORED_POINT),
        }

    def coarse_logits(self, features: dict[str, Tensor], boxes: list[Tensor]) -> Tensor:
        """
        The coarse head on region features pooled by bilinear sampling at the centres of a
        ``pooler_resolution``-sided grid over each box (RoIAlign with one sample per bin).

        Args:
            features: maps by name.
            boxes: per image, (R_n, 4) boxes in absolute image coordinates.

        Returns:
            (R, K, S, S) coarse logits.
        """
        region_features = pool_region_features(
            [features[f] for f in self.roi_in_features],
            [self.feature_strides[f] for f in self.roi_in_features],
            boxes,
            self.pooler_resolution,
        )
        return self.coarse_head.layers(region_features)

    def predict_points(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        coarse_logits: Tensor,
        point_coords: Tensor,
        classes: Tensor,
    ) -> Tensor:
        """
        The point head's logit of each box's class at box-normalized points.

        Args:
            features: maps by name.
            boxes: per image, (R_n, 4) boxes in absolute image coordinates.
            coarse_logits: (R, K, S, S) coarse logits of the boxes.
            point_coords: (R, P, 2) box-normalized points.
            classes: (R,) the class of each box (ignored for class-agnostic masks).

        Returns:
            (R, 1, P) point logits.
        """
        fine_grained_features = roi_point_features(
            [features[f] for f in self.point_in_features],
            [self.feature_strides[f] for f in self.point_in_features],
            boxes,
            point_coords,
        )
        coarse_features = point_sample(coarse_logits, point_coords)
        if coarse_logits.shape[1] == 1:
            return self.point_head(fine_grained_features, coarse_features)
        return self.point_head(fine_grained_features, coarse_features, classes)

    def point_predictor(
        self, features: dict[str, Tensor], boxes: list[Tensor], classes: Tensor
    ) -> Callable[[Tensor], Tensor]:
        """The point head on the boxes' coarse logits (see
        :meth:`SubdivisionInstanceMaskHead.point_predictor`)."""
        coarse_logits = self.coarse_logits(features, boxes)

        def predict_class_points(point_coords: Tensor) -> Tensor:
            return self.predict_points(features, boxes, coarse_logits, point_coords, classes)

        return predict_class_points
