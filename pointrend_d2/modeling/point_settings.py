"""
The point settings of a PointRend head, read from MODEL.POINT_HEAD once and checked once: where
training applies the point loss (N points, k, beta) and how inference subdivides (steps, cells
per step, how cells are selected). The semantic and instance heads and the exporter share one
:class:`PointSettings`; the values left to resolve (``-1`` steps, ``"auto"`` selection) are
resolved where what they depend on is known: the coarse stride by the semantic head
(:meth:`PointSettings.steps_to_input_resolution`), the tensors by each subdivision call
(:func:`pointrend_d2.modeling.subdivision.resolve_selection`).
"""

import dataclasses

from detectron2.config import CfgNode

from .subdivision import SELECTIONS

__all__ = ["PointSettings"]


@dataclasses.dataclass(frozen=True)
class PointSettings:
    """
    Args:
        train_num_points: N, points per image (per foreground box for instances) at which the
            point loss is computed.
        oversample_ratio: k, ``k * N`` random candidates are drawn before importance selection.
        importance_sample_ratio: beta, the fraction of the N points chosen as the most uncertain
            candidates (the rest are uniform).
        train_boundary_ratio: the fraction of the N points drawn on the ground truth's
            boundaries instead (semantic heads; k and beta then apply to the rest).
        image_patch_size: S, the point head also reads the S x S image pixels around each point
            (semantic heads, from the backbone's stride-1 map ``"image"``); 0 reads none.
        subdivision_steps: 2x upsample-and-refine steps at inference; -1 derives them from the
            coarse stride (semantic heads only, :meth:`steps_to_input_resolution`).
        subdivision_num_points: cells re-predicted per step and map (image or box).
        subdivision_selection: "bounded", "topk" or "auto" (chosen per call), see
            :func:`pointrend_d2.modeling.subdivision.subdivision_inference`.

    Raises:
        ValueError: naming the MODEL.POINT_HEAD key of the first value out of range.
    """

    train_num_points: int
    oversample_ratio: float
    importance_sample_ratio: float
    train_boundary_ratio: float
    image_patch_size: int
    subdivision_steps: int
    subdivision_num_points: int
    subdivision_selection: str

    def __post_init__(self):
        checks = [
            ("TRAIN_NUM_POINTS", self.train_num_points, self.train_num_points > 0, "must be > 0"),
            (
                "OVERSAMPLE_RATIO",
                self.oversample_ratio,
                self.oversample_ratio >= 1,
                "must be >= 1 (k * TRAIN_NUM_POINTS candidates are drawn to choose "
                "TRAIN_NUM_POINTS from)",
            ),
            (
                "IMPORTANCE_SAMPLE_RATIO",
                self.importance_sample_ratio,
                0 <= self.importance_sample_ratio <= 1,
                "must be in [0, 1] (the fraction of the points chosen by uncertainty)",
            ),
            (
                "TRAIN_BOUNDARY_POINT_RATIO",
                self.train_boundary_ratio,
                0 <= self.train_boundary_ratio < 1,
                "must be in [0, 1) (the fraction of the points drawn on the ground truth's "
                "boundaries; the rest are chosen by uncertainty)",
            ),
            (
                "IMAGE_PATCH_SIZE",
                self.image_patch_size,
                self.image_patch_size == 0
                or (self.image_patch_size > 0 and self.image_patch_size % 2),
                "must be 0 (no image pixels) or an odd number >= 1 (the side of the patch of "
                "pixels centred on each point)",
            ),
            (
                "SUBDIVISION_STEPS",
                self.subdivision_steps,
                self.subdivision_steps >= -1,
                "must be >= 0, or -1 to derive it from the coarse stride",
            ),
            (
                "SUBDIVISION_NUM_POINTS",
                self.subdivision_num_points,
                self.subdivision_num_points > 0,
                "must be > 0 (the cells re-predicted per subdivision step)",
            ),
            (
                "SUBDIVISION_SELECTION",
                repr(self.subdivision_selection),
                self.subdivision_selection in SELECTIONS,
                f"must be one of {SELECTIONS}",
            ),
        ]
        for key, value, valid, requirement in checks:
            if not valid:
                raise ValueError(f"MODEL.POINT_HEAD.{key}={value}: {requirement}")

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "PointSettings":
        """
        The settings of MODEL.POINT_HEAD. ``TRAIN_NUM_POINTS: -1`` derives the paper's value from
        the training crop: the cells of a stride-16 map of an absolute INPUT.CROP.SIZE,
        ``ceil(crop_h / 16) * ceil(crop_w / 16)`` (2048 for 512 x 1024 crops).

        Raises:
            ValueError: naming the key, for a value out of range or a -1 without an absolute
                crop.
        """
        point_cfg = cfg.MODEL.POINT_HEAD
        return cls(
            train_num_points=_train_num_points(point_cfg.TRAIN_NUM_POINTS, cfg.INPUT.CROP),
            oversample_ratio=point_cfg.OVERSAMPLE_RATIO,
            importance_sample_ratio=point_cfg.IMPORTANCE_SAMPLE_RATIO,
            train_boundary_ratio=point_cfg.TRAIN_BOUNDARY_POINT_RATIO,
            image_patch_size=point_cfg.IMAGE_PATCH_SIZE,
            subdivision_steps=point_cfg.SUBDIVISION_STEPS,
            subdivision_num_points=point_cfg.SUBDIVISION_NUM_POINTS,
            subdivision_selection=point_cfg.SUBDIVISION_SELECTION,
        )

    def steps_to_input_resolution(self, coarse_stride: int) -> int:
        """
        The subdivision steps that take logits of stride ``coarse_stride`` to the input
        resolution, ``log2(coarse_stride)`` (stride 4: 2, 8: 3, 16: 4), which
        ``subdivision_steps`` must be unless it is -1.

        Raises:
            ValueError: if ``coarse_stride`` is not a power of 2, or a value set by hand does not
                reach the input resolution.
        """
        required_steps = coarse_stride.bit_length() - 1
        if coarse_stride < 1 or coarse_stride != 1 << required_steps:
            raise ValueError(f"The coarse head's stride must be a power of 2, got {coarse_stride}")
        if self.subdivision_steps not in (-1, required_steps):
            raise ValueError(
                f"MODEL.POINT_HEAD.SUBDIVISION_STEPS={self.subdivision_steps} does not reach the "
                f"input resolution from the coarse stride {coarse_stride}: it must be "
                f"{required_steps} (log2 of the stride), or -1 to derive it"
            )
        return required_steps


def _train_num_points(train_num_points: int, crop_cfg: CfgNode) -> int:
    if train_num_points != -1:
        if train_num_points <= 0:
            raise ValueError(
                f"MODEL.POINT_HEAD.TRAIN_NUM_POINTS={train_num_points}: must be > 0, or -1 to "
                "derive it from INPUT.CROP.SIZE"
            )
        return train_num_points
    if not crop_cfg.ENABLED or crop_cfg.TYPE != "absolute":
        raise ValueError(
            "MODEL.POINT_HEAD.TRAIN_NUM_POINTS=-1 derives the number of points from the training "
            "crop size, which needs INPUT.CROP.ENABLED=True and INPUT.CROP.TYPE='absolute' (got "
            f"ENABLED={crop_cfg.ENABLED}, TYPE={crop_cfg.TYPE!r}); set TRAIN_NUM_POINTS instead"
        )
    crop_height, crop_width = crop_cfg.SIZE
    return -(-crop_height // 16) * -(-crop_width // 16)
