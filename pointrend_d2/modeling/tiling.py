"""
Tiled (sliding-window) semantic inference, so that the memory of segmenting a huge image is that
of one tile (and the output logits) rather than that of the whole image.

The image is cut into tiles of ``tile_size`` pixels that overlap their neighbours by ``overlap``
pixels; each tile runs the whole model (backbone, coarse head, PointRend's subdivision inside the
tile) as an image of its own. Along each axis the overlap of two neighbouring tiles is split at
its middle: every pixel takes the logits of the tile in which it lies farther from the tile's
border, at least ``overlap // 2`` pixels from any tile border that is not the image's. No logits
are averaged, so a pixel's logits are exactly those of its tile's inference.

Tiles start at multiples of ``tile_size - overlap``, which must be a multiple of the model's
coarsest stride: every tile's feature grids are then those of whole-image inference, and a pixel
whose receptive field lies within its tile gets the whole image's logits wherever the model is
local (no GroupNorm or global pooling statistics over the input) and PointRend re-predicts the
same cells (which holds when every cell is re-predicted; otherwise each tile selects its own
most uncertain cells).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

__all__ = ["TileSpan", "tile_alignment", "tile_spans", "tiled_logits", "validate_tiling"]


@dataclass(frozen=True)
class TileSpan:
    """
    One tile's extent along one axis of the image, in pixels: the tile covers
    ``[start, stop)`` and supplies the logits of ``[keep_start, keep_stop)``.
    """

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def tile_spans(length: int, tile_size: int, overlap: int) -> list[TileSpan]:
    """
    The tiles along an axis of ``length`` pixels: starts 0, s, 2 s, ... (s = ``tile_size -
    overlap``) up to the first tile that reaches the end, each ``tile_size`` long but the last,
    which ends at the image's end (and is longer than ``overlap``). Each overlap is split at its
    middle between the two tiles' kept pixels.
    """
    if length <= tile_size:
        return [TileSpan(0, length, 0, length)]
    step = tile_size - overlap
    starts = [0]
    while starts[-1] + tile_size < length:
        starts.append(starts[-1] + step)
    cuts = [0, *(start + overlap // 2 for start in starts[1:]), length]
    return [
        TileSpan(start, min(start + tile_size, length), cuts[index], cuts[index + 1])
        for index, start in enumerate(starts)
    ]


def tile_alignment(size_divisibility: int, feature_strides: list[int]) -> int:
    """The multiple of which tiles must start: the least common multiple of the strides."""
    return math.lcm(max(size_divisibility, 1), *feature_strides)


def validate_tiling(tile_size: int, overlap: int, alignment: int) -> None:
    """
    Raise a ValueError naming TEST.TILE.SIZE or TEST.TILE.OVERLAP unless ``tile_size`` is 0 (no
    tiling) or tiles of ``tile_size`` overlapping by ``overlap`` start on multiples of
    ``alignment`` (see :func:`tile_alignment`).
    """
    if tile_size < 0:
        raise ValueError(
            f"TEST.TILE.SIZE is {tile_size}: it must be 0 (whole-image inference) or the side of "
            "the tiles in pixels"
        )
    if tile_size == 0:
        return
    if not 0 <= overlap < tile_size:
        raise ValueError(
            f"TEST.TILE.OVERLAP is {overlap} with TEST.TILE.SIZE {tile_size}: the overlap must be "
            "at least 0 and smaller than the tile (a quarter to a half of it is usual)"
        )
    step = tile_size - overlap
    if step % alignment:
        fitting = step // alignment * alignment
        advice = (
            f"TEST.TILE.OVERLAP {tile_size - fitting}"
            if fitting
            else f"TEST.TILE.SIZE {overlap + alignment}"
        )
        raise ValueError(
            f"TEST.TILE.SIZE {tile_size} - TEST.TILE.OVERLAP {overlap} = {step} is not a "
            f"multiple of {alignment}, the model's coarsest stride: tiles must start on the "
            f"feature grid of whole-image inference. Use e.g. {advice}"
        )


def tiled_logits(
    image: Tensor, predict: Callable[[Tensor], Tensor], tile_size: int, overlap: int
) -> Tensor:
    """
    The (K, H, W) logits of a (C, H, W) image, tile by tile (see the module docstring).

    Args:
        image: one model input image.
        predict: the model's whole-image inference: a (C, h, w) tile of ``image`` to its
            (K, h, w) logits.
        tile_size, overlap: the tiling (:func:`tile_spans` along each axis).

    Returns:
        (K, H, W) logits, the only image-sized tensor allocated here.
    """
    height, width = image.shape[-2:]
    logits = None
    for rows in tile_spans(height, tile_size, overlap):
        for cols in tile_spans(width, tile_size, overlap):
            tile_logits = predict(image[:, rows.start : rows.stop, cols.start : cols.stop])
            if logits is None:
                logits = tile_logits.new_empty((tile_logits.shape[0], height, width))
            logits[:, rows.keep_start : rows.keep_stop, cols.keep_start : cols.keep_stop] = (
                tile_logits[
                    :,
                    rows.keep_start - rows.start : rows.keep_stop - rows.start,
                    cols.keep_start - cols.start : cols.keep_stop - cols.start,
                ]
            )
    return logits
