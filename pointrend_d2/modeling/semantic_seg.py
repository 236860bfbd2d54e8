"""PointRend semantic segmentation head, registered in detectron2's SEM_SEG_HEADS_REGISTRY."""

from collections.abc import Callable
from typing import ClassVar

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from .coarse_head import build_coarse_head, expand_foreground_logit
from .image_feature_backbone import IMAGE_FEATURE
from .losses import point_loss
from .point_features import (
    point_sample,
    sample_boundary_points,
    sample_patches,
    sample_uncertain_points,
)
from .point_head import build_point_head, point_in_features
from .point_settings import PointSettings
from .point_supervision import (
    labelled_pixel_points,
    point_supervision_from_config,
    require_point_supervision,
)
from .subdivision import SubdivisionStep, subdivision_inference


@SEM_SEG_HEADS_REGISTRY.register()
class PointRendSemanticHead(nn.Module):
    """
    PointRend for semantic segmentation: a coarse semantic head from SEM_SEG_HEADS_REGISTRY
    predicts low-resolution logits, and a point head re-predicts them at selected points from
    fine-grained features sampled there.

    Training returns the coarse head's own losses and a point loss at points sampled around the
    coarse boundaries. Inference upsamples the coarse logits 2x per subdivision step
    and re-predicts the most uncertain cells, reaching the input resolution in
    ``log2(coarse stride)`` steps.

    The coarse head must satisfy :class:`pointrend_d2.coarse_head.CoarseSemSegHead`: logits from
    ``layers(features)``, their stride ``common_stride`` and its own ``losses``, as detectron2's
    ``SemSegFPNHead``, :class:`SemanticFPNCoarseHead` and :class:`DeepLabV3CoarseHead` do.

    With one class (K = 1) the logit is a sigmoid foreground logit (labels 0 background,
    1 foreground), trained with binary cross-entropy; inference returns two-class logits
    ``[0, logit]`` (see :func:`expand_foreground_logit`).

    With point supervision (MODEL.POINT_SUPERVISION.ENABLED; sparse label maps, the ignore value
    everywhere but at clicked pixels) the point loss is taken at the labelled pixels themselves
    (at most ``train_num_points`` per image, see
    :func:`~pointrend_d2.modeling.point_supervision.labelled_pixel_points`), and the coarse
    head's loss, which ignores unlabelled pixels, counts only them.
    """

    supports_point_supervision: ClassVar[bool] = True

    @configurable
    def __init__(
        self,
        *,
        coarse_sem_seg_head: nn.Module,
        point_head: nn.Module,
        in_features: list[str],
        point_settings: PointSettings,
        ignore_value: int = 255,
        point_sampler: Callable[..., Tensor] = sample_uncertain_points,
        point_supervision: bool = False,
    ):
        """
        Args:
            coarse_sem_seg_head: the coarse head (see the class docstring for its contract).
            point_head: a point head (see ``POINT_HEAD_REGISTRY``).
            in_features: names of the backbone maps sampled as fine-grained features.
            point_settings: training points and subdivision; its ``subdivision_steps`` must take
                the coarse head's stride to the input resolution (-1 derives them).
            ignore_value: label ignored by the losses.
            point_sampler: the training point sampler, called as ``point_sampler(coarse_logits,
                num_points, oversample_ratio, importance_sample_ratio)`` -> (N, P, 2) points;
                :func:`sample_uncertain_points` (PointRend's) by default.
            point_supervision: take the point loss at the labelled pixels of the targets
                instead of at sampled points.
        """
        super().__init__()
        # Attribute names match detectron2's PointRend so its checkpoints load unchanged.
        self.coarse_sem_seg_head = coarse_sem_seg_head
        self.point_head = point_head
        self.in_features = list(in_features)
        self.ignore_value = ignore_value
        self.point_settings = point_settings
        self.subdivision_steps = point_settings.steps_to_input_resolution(
            coarse_sem_seg_head.common_stride
        )
        self.point_sampler = point_sampler
        self.point_supervision = point_supervision

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]):
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        if num_classes < 1:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}: must be >= 1 (1 is a single "
                "sigmoid foreground logit)"
            )
        point_settings = PointSettings.from_config(cfg)
        in_features = point_in_features(cfg, input_shape)
        input_channels = sum(input_shape[f].channels for f in in_features)
        if point_settings.image_patch_size > 0:
            input_channels += image_patch_channels(input_shape, point_settings.image_patch_size)
        coarse_head = build_coarse_head(cfg, input_shape)
        point_supervision = point_supervision_from_config(cfg)
        if point_supervision:
            require_point_supervision(
                type(coarse_head),
                "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME",
                SEM_SEG_HEADS_REGISTRY,
            )
        return {
            "coarse_sem_seg_head": coarse_head,
            "point_head": build_point_head(cfg, input_channels, num_classes),
            "in_features": in_features,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "point_settings": point_settings,
            "point_supervision": point_supervision,
        }

    def forward(
        self, features: dict[str, Tensor], targets: Tensor | None = None
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """
        Args:
            features: backbone maps by name, each (N, C_f, H_f, W_f).
            targets: (N, H, W) int64 labels at the padded input resolution (training only).

        Returns:
            In training, ``(None, losses)`` with ``loss_sem_seg`` (coarse) and
            ``loss_sem_seg_point``. In inference, ``((N, K', H', W') logits, {})`` where H', W' is
            the coarse size times ``2 ** subdivision_steps`` and K' = max(K, 2).
        """
        coarse_logits = self.coarse_sem_seg_head.layers(features)
        if self.training:
            # Non-finite values in training show up in the losses, which the Trainer checks once
            # per step anyway (pointrend_d2.engine.Trainer.run_step): no extra sync here.
            losses = self.coarse_sem_seg_head.losses(coarse_logits, targets)
            point_coords, point_labels = self.training_points(coarse_logits, targets)
            point_logits = self.predict_points(features, coarse_logits, point_coords)
            losses["loss_sem_seg_point"] = point_loss(point_logits, point_labels, self.ignore_value)
            return None, losses
        # NaN logits give an arbitrary argmax; fail instead, and say where to look. An exported
        # graph has no data-dependent errors, so the check stays out of it.
        if not torch.compiler.is_exporting() and not torch.isfinite(coarse_logits).all():
            raise FloatingPointError(
                "PointRendSemanticHead: the coarse logits are NaN or infinite; the input images "
                "(or the model's weights) contain non-finite values"
            )
        return expand_foreground_logit(self.subdivision_inference(features, coarse_logits)), {}

    @torch.no_grad()
    def training_points(self, coarse_logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """
        The points of the point loss and their labels: the labelled pixels of sparse targets
        with point supervision, otherwise the point sampler's points and, with
        ``train_boundary_ratio`` > 0, that fraction of them on the targets' boundaries (see
        :func:`~pointrend_d2.modeling.point_features.sample_boundary_points`), labelled from the
        targets.

        Args:
            coarse_logits: (N, K, H_c, W_c) coarse logits.
            targets: (N, H, W) int64 labels.

        Returns:
            (N, P, 2) points in ``[0, 1] x [0, 1]`` image coordinates and (N, P) int64 labels.
        """
        if self.point_supervision:
            return labelled_pixel_points(
                targets, self.ignore_value, self.point_settings.train_num_points
            )
        settings = self.point_settings
        num_boundary = int(settings.train_boundary_ratio * settings.train_num_points)
        point_coords = self.point_sampler(
            coarse_logits,
            settings.train_num_points - num_boundary,
            settings.oversample_ratio,
            settings.importance_sample_ratio,
        )
        if num_boundary > 0:
            boundary_coords = sample_boundary_points(targets, num_boundary, self.ignore_value)
            point_coords = torch.cat([point_coords, boundary_coords.to(point_coords)], dim=1)
        point_labels = point_sample(
            targets.unsqueeze(1).to(torch.float32), point_coords, mode="nearest"
        )[:, 0].to(torch.long)
        return point_coords, point_labels

    def predict_points(
        self, features: dict[str, Tensor], coarse_logits: Tensor, point_coords: Tensor
    ) -> Tensor:
        """
        Run the point head at points.

        Args:
            features: backbone maps by name, each (N, C_f, H_f, W_f).
            coarse_logits: (N, K, H_c, W_c) coarse logits.
            point_coords: (N, P, 2) points in ``[0, 1] x [0, 1]`` image coordinates.

        Returns:
            (N, K, P) point logits.
        """
        patch_size = self.point_settings.image_patch_size
        sampled = [point_sample(features[name], point_coords) for name in self.in_features]
        if patch_size > 0:
            sampled.append(sample_patches(features[IMAGE_FEATURE], point_coords, patch_size))
        fine_grained_features = torch.cat(sampled, dim=1)
        coarse_features = point_sample(coarse_logits, point_coords)
        return self.point_head(fine_grained_features, coarse_features)

    def subdivision_inference(
        self,
        features: dict[str, Tensor],
        coarse_logits: Tensor,
        on_step: Callable[[SubdivisionStep], None] | None = None,
    ) -> Tensor:
        """
        Adaptive subdivision: per step, upsample the logits 2x bilinearly, select the most
        uncertain cells and overwrite their logits with the point head's prediction (see
        :func:`pointrend_d2.modeling.subdivision.subdivision_inference`).

        Args:
            features: backbone maps by name.
            coarse_logits: (N, K, H_c, W_c) coarse logits.
            on_step: called after each step with its record (for pictures and tests).

        Returns:
            (N, K, H_c * 2**steps, W_c * 2**steps) refined logits.
        """
        return subdivision_inference(
            coarse_logits,
            self.subdivision_steps,
            self.point_settings.subdivision_num_points,
            selection=self.point_settings.subdivision_selection,
            predict_points=lambda point_coords: self.predict_points(
                features, coarse_logits, point_coords
            ),
            on_step=on_step,
        )


def image_patch_channels(input_shape: dict[str, ShapeSpec], patch_size: int) -> int:
    """
    The point head's input channels from ``patch_size x patch_size`` patches of the backbone's
    :data:`IMAGE_FEATURE` map (MODEL.POINT_HEAD.IMAGE_PATCH_SIZE).

    Raises:
        ValueError: if the backbone has no stride-1 image map, saying how to add one.
    """
    image_shape = input_shape.get(IMAGE_FEATURE)
    if image_shape is None or image_shape.stride != 1:
        raise ValueError(
            f"MODEL.POINT_HEAD.IMAGE_PATCH_SIZE={patch_size} reads the backbone's stride-1 map "
            f"{IMAGE_FEATURE!r}, which it does not output (its maps: {sorted(input_shape)}); set "
            "MODEL.BACKBONE.NAME to 'build_backbone_with_image' and MODEL.BACKBONE.WRAPPED_NAME "
            "to the backbone it wraps, or IMAGE_PATCH_SIZE to 0"
        )
    return image_shape.channels * patch_size * patch_size
