"""PointRend semantic segmentation head, registered in detectron2's SEM_SEG_HEADS_REGISTRY."""

from collections.abc import Callable

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from ..config_checks import (
    resolve_subdivision_selection,
    resolve_subdivision_steps,
    resolve_train_num_points,
    validate_coarse_head,
    validate_point_head_config,
)
from .coarse_head import expand_foreground_logit
from .losses import point_loss
from .point_features import point_sample, sample_uncertain_points
from .point_head import build_point_head
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
    """

    @configurable
    def __init__(
        self,
        *,
        coarse_sem_seg_head: nn.Module,
        point_head: nn.Module,
        in_features: list[str],
        ignore_value: int = 255,
        train_num_points: int = 2048,
        oversample_ratio: float = 3,
        importance_sample_ratio: float = 0.75,
        subdivision_steps: int = 2,
        subdivision_num_points: int = 8192,
        subdivision_selection: str = "bounded",
        point_sampler: Callable[..., Tensor] = sample_uncertain_points,
    ):
        """
        Args:
            coarse_sem_seg_head: the coarse head (see the class docstring for its contract).
            point_head: a point head (see ``POINT_HEAD_REGISTRY``).
            in_features: names of the backbone maps sampled as fine-grained features.
            ignore_value: label ignored by the losses.
            train_num_points: points per image for the point loss.
            oversample_ratio: k of the training sampler.
            importance_sample_ratio: beta of the training sampler.
            subdivision_steps: number of 2x upsample-and-refine steps at inference.
            subdivision_num_points: cells re-predicted at each subdivision step.
            subdivision_selection: how each step selects its cells, "bounded" or "topk" (the
                same cells; see :func:`pointrend_d2.subdivision.subdivision_inference`).
            point_sampler: the training point sampler, called as ``point_sampler(coarse_logits,
                num_points, oversample_ratio, importance_sample_ratio)`` -> (N, P, 2) points;
                :func:`sample_uncertain_points` (PointRend's) by default.
        """
        super().__init__()
        # Attribute names match detectron2's PointRend so its checkpoints load unchanged.
        self.coarse_sem_seg_head = coarse_sem_seg_head
        self.point_head = point_head
        self.in_features = list(in_features)
        self.ignore_value = ignore_value
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points
        self.subdivision_selection = subdivision_selection
        self.point_sampler = point_sampler

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]):
        validate_point_head_config(cfg, input_shape)
        point_cfg = cfg.MODEL.POINT_HEAD
        in_features = list(point_cfg.IN_FEATURES)
        coarse_head_name = point_cfg.COARSE_SEM_SEG_HEAD_NAME
        coarse_sem_seg_head = SEM_SEG_HEADS_REGISTRY.get(coarse_head_name)(cfg, input_shape)
        validate_coarse_head(
            coarse_sem_seg_head, coarse_head_name, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        )
        input_channels = sum(input_shape[f].channels for f in in_features)
        return {
            "coarse_sem_seg_head": coarse_sem_seg_head,
            "point_head": build_point_head(cfg, input_channels, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES),
            "in_features": in_features,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "train_num_points": resolve_train_num_points(cfg),
            "oversample_ratio": point_cfg.OVERSAMPLE_RATIO,
            "importance_sample_ratio": point_cfg.IMPORTANCE_SAMPLE_RATIO,
            "subdivision_steps": resolve_subdivision_steps(
                point_cfg.SUBDIVISION_STEPS, coarse_sem_seg_head.common_stride
            ),
            "subdivision_num_points": point_cfg.SUBDIVISION_NUM_POINTS,
            "subdivision_selection": resolve_subdivision_selection(
                point_cfg.SUBDIVISION_SELECTION, cfg.MODEL.DEVICE
            ),
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
            with torch.no_grad():
                point_coords = self.point_sampler(
                    coarse_logits,
                    self.train_num_points,
                    self.oversample_ratio,
                    self.importance_sample_ratio,
                )
            point_logits = self.predict_points(features, coarse_logits, point_coords)
            point_labels = point_sample(
                targets.unsqueeze(1).to(torch.float32), point_coords, mode="nearest"
            )[:, 0].to(torch.long)
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
        fine_grained_features = torch.cat(
            [point_sample(features[name], point_coords) for name in self.in_features], dim=1
        )
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
        :func:`pointrend_d2.subdivision.subdivision_inference`).

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
            self.subdivision_num_points,
            selection=self.subdivision_selection,
            predict_points=lambda point_coords: self.predict_points(
                features, coarse_logits, point_coords
            ),
            on_step=on_step,
        )
