"""The tile layout and stitching of tiled semantic inference (pointrend_d2.modeling.tiling)."""

import pytest
import torch

from pointrend_d2.modeling.tiling import tile_alignment, tile_spans, tiled_logits, validate_tiling


@pytest.mark.parametrize("length", [1, 63, 64, 65, 96, 160, 191, 1000])
@pytest.mark.parametrize("tile_size, overlap", [(64, 0), (64, 32), (128, 96), (100, 36)])
def test_tiles_cover_the_axis_and_keep_pixels_far_from_tile_borders(length, tile_size, overlap):
    spans = tile_spans(length, tile_size, overlap)
    step = tile_size - overlap
    # The kept pixels partition the axis, in order.
    assert spans[0].keep_start == 0 and spans[-1].keep_stop == length
    for before, after in zip(spans, spans[1:], strict=False):
        assert before.keep_stop == after.keep_start
    for index, span in enumerate(spans):
        assert span.start == index * step
        assert span.start <= span.keep_start < span.keep_stop <= span.stop
        assert span.stop - span.start == min(tile_size, length - span.start)
        # A tile border that is not the image's lies at least overlap // 2 from a kept pixel.
        if span.start > 0:
            assert span.keep_start - span.start >= overlap // 2
        if span.stop < length:
            assert span.stop - span.keep_stop >= overlap // 2
    # The last tile reaches the end, the one before does not (no tile is wasted), and every
    # tile is longer than the overlap.
    assert spans[-1].stop == length
    if len(spans) > 1:
        assert spans[-2].stop < length
        assert all(span.stop - span.start > overlap for span in spans)


def test_each_pixel_takes_the_tile_where_it_is_farthest_from_the_border():
    """A stand-in model whose logits say which tile and where: stitched, every pixel holds its
    own coordinates, from the tile in which it lies farthest from a border inside the image."""
    height, width, tile_size, overlap = 70, 150, 64, 32
    image = torch.zeros(3, height, width)
    rows_of, cols_of = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    image[0], image[1] = rows_of.float(), cols_of.float()
    calls = []

    def predict(tile):
        calls.append(tuple(tile.shape[-2:]))
        # Channels: the pixel's row and column, and its distance to the tile's inner borders.
        rows, cols = tile[0], tile[1]
        top, left = rows[0, 0], cols[0, 0]
        bottom, right = rows[-1, 0], cols[0, -1]
        inf = torch.tensor(float("inf"))
        distance = torch.stack(
            [
                rows - top if top > 0 else inf.expand_as(rows),
                bottom - rows if bottom < height - 1 else inf.expand_as(rows),
                cols - left if left > 0 else inf.expand_as(cols),
                right - cols if right < width - 1 else inf.expand_as(cols),
            ]
        )
        return torch.stack([rows, cols, distance.amin(dim=0)])

    stitched = tiled_logits(image, predict, tile_size, overlap)
    assert torch.equal(stitched[0], rows_of.float()) and torch.equal(stitched[1], cols_of.float())
    # rows: tiles [0, 64), [32, 70); columns: [0, 64), [32, 96), [64, 128), [96, 150).
    assert calls == [(64, 64), (64, 64), (64, 64), (64, 54), (38, 64), (38, 64), (38, 64), (38, 54)]
    # Every pixel is at least overlap // 2 from its tile's inner borders ...
    assert stitched[2].min() >= overlap // 2
    # ... and no tile gives it more room (the tiles form a grid, so the best tile is the best
    # row of tiles and the best column of tiles: overlaps cut at their middle).
    best = torch.full((height, width), -1.0)
    for rows in tile_spans(height, tile_size, overlap):
        for cols in tile_spans(width, tile_size, overlap):
            tile = image[:, rows.start : rows.stop, cols.start : cols.stop]
            region = best[rows.start : rows.stop, cols.start : cols.stop]
            torch.maximum(region, predict(tile)[2], out=region)
    assert torch.equal(best, stitched[2])


def test_alignment_and_validation_errors():
    assert tile_alignment(32, [4, 8, 16, 32, 64]) == 64
    assert tile_alignment(0, [4, 16]) == 16
    validate_tiling(0, 12345, 64)  # no tiling: the overlap is not read
    validate_tiling(512, 128, 64)
    with pytest.raises(ValueError, match=r"TEST.TILE.SIZE is -1: it must be 0"):
        validate_tiling(-1, 0, 64)
    with pytest.raises(ValueError, match=r"TEST.TILE.OVERLAP is 512 with TEST.TILE.SIZE 512"):
        validate_tiling(512, 512, 64)
    with pytest.raises(ValueError, match=r"TEST.TILE.OVERLAP is -8"):
        validate_tiling(512, -8, 64)
    with pytest.raises(
        ValueError, match=r"= 412 is not a multiple of 64.*Use e.g. TEST.TILE.OVERLAP 128"
    ):
        validate_tiling(512, 100, 64)
    with pytest.raises(ValueError, match=r"= 40 is not a multiple of 64.*TEST.TILE.SIZE 88"):
        validate_tiling(64, 24, 64)
