"""Point utilities: shapes, coordinate conventions, sampler counts, selection."""

import pytest
import torch

from pointrend_d2.modeling.point_features import (
    boundary_pixels,
    calculate_uncertainty,
    grid_cell_centers,
    point_sample,
    sample_boundary_points,
    sample_patches,
    sample_uncertain_points,
    select_uncertain_grid_points,
)


def test_point_sample_shapes():
    features = torch.randn(2, 7, 9, 11)
    points = torch.rand(2, 13, 2)
    assert point_sample(features, points).shape == (2, 7, 13)
    assert point_sample(features, points, mode="nearest").shape == (2, 7, 13)


@pytest.mark.parametrize("height,width", [(16, 32), (8, 8), (128, 256)])
def test_point_sample_at_cell_centre_is_exact(height, width):
    # Power-of-two grids: the centres are exact in float32, so bilinear weights are exactly 1/0.
    values = torch.randn(2, 3, height, width)
    indices = torch.stack([torch.randperm(height * width)[:40] for _ in range(2)])
    sampled = point_sample(values, grid_cell_centers(indices, height, width))
    expected = values.flatten(2).gather(2, indices.unsqueeze(1).expand(-1, 3, -1))
    assert torch.equal(sampled, expected)


@pytest.mark.parametrize("height,width", [(7, 13), (33, 65), (129, 255)])
def test_point_sample_at_cell_centre_odd_grid(height, width):
    # Other grids: off only by float32 rounding of the centre coordinate (~W * 2**-24 pixels).
    values = torch.randn(1, 2, height, width)
    indices = torch.randperm(height * width)[:50].unsqueeze(0)
    sampled = point_sample(values, grid_cell_centers(indices, height, width))
    expected = values.flatten(2).gather(2, indices.unsqueeze(1).expand(-1, 2, -1))
    torch.testing.assert_close(sampled, expected, rtol=0, atol=1e-4)
    # Nearest sampling (used for labels) is exact on every grid.
    labels = torch.randint(0, 20, (1, 1, height, width)).float()
    nearest = point_sample(labels, grid_cell_centers(indices, height, width), mode="nearest")
    assert torch.equal(nearest, labels.flatten(2).gather(2, indices.unsqueeze(1)))


def test_grid_cell_centers_convention():
    centres = grid_cell_centers(torch.tensor([[0, 3, 4, 11]]), height=3, width=4)
    expected = torch.tensor([[[0.125, 1 / 6], [0.875, 1 / 6], [0.125, 0.5], [0.875, 5 / 6]]])
    torch.testing.assert_close(centres, expected)


def test_uncertainty_is_negative_top1_top2_margin():
    logits = torch.tensor([[[1.0], [3.0], [2.5]]])  # (N=1, C=3, P=1)
    assert calculate_uncertainty(logits).shape == (1, 1, 1)
    assert calculate_uncertainty(logits).item() == pytest.approx(-0.5)
    single = torch.tensor([[[-2.0, 0.5]]])  # one sigmoid foreground logit
    torch.testing.assert_close(calculate_uncertainty(single), torch.tensor([[[-2.0, -0.5]]]))


@pytest.mark.parametrize(
    "num_points,oversample,beta", [(100, 3, 0.75), (64, 1, 1.0), (50, 2.5, 0.0), (33, 3, 0.5)]
)
def test_training_sampler_counts(num_points, oversample, beta):
    logits = torch.randn(3, 4, 10, 12)
    gen = torch.Generator().manual_seed(0)
    points = sample_uncertain_points(logits, num_points, oversample, beta, generator=gen)
    assert points.shape == (3, num_points, 2)
    assert points.min() >= 0 and points.max() <= 1
    # The importance points come first: they are the int(beta * N) most uncertain candidates.
    num_importance = int(beta * num_points)
    gen = torch.Generator().manual_seed(0)
    candidates = torch.rand(3, int(num_points * oversample), 2, generator=gen)
    assert torch.equal(
        points[:, :num_importance], _most_uncertain(logits, candidates, num_importance)
    )
    coverage = torch.rand(3, num_points - num_importance, 2, generator=gen)
    assert torch.equal(points[:, num_importance:], coverage)


def _most_uncertain(logits, candidates, k):
    uncertainty = calculate_uncertainty(point_sample(logits, candidates))[:, 0]
    order = uncertainty.argsort(dim=1, descending=True)[:, :k]
    return torch.gather(candidates, 1, order.unsqueeze(2).expand(-1, -1, 2))


def test_training_sampler_is_reproducible_with_generator():
    logits = torch.randn(2, 3, 8, 8)
    a = sample_uncertain_points(logits, 40, 3, 0.75, generator=torch.Generator().manual_seed(5))
    b = sample_uncertain_points(logits, 40, 3, 0.75, generator=torch.Generator().manual_seed(5))
    c = sample_uncertain_points(logits, 40, 3, 0.75, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_sampler_prefers_boundaries():
    # Left half class 0, right half class 1: the most uncertain points hug the vertical boundary.
    # (Margins are 20 inside each half; even the zero padding at the border only halves them.)
    logits = torch.full((1, 2, 16, 16), -10.0)
    logits[0, 0, :, :8] = 10
    logits[0, 1, :, 8:] = 10
    generator = torch.Generator().manual_seed(0)
    points = sample_uncertain_points(logits, 200, 3, 1.0, generator=generator)
    assert (points[0, :10, 0] - 0.5).abs().max() < 1 / 32


@pytest.mark.parametrize(
    "bad", [{"num_points": 0}, {"oversample_ratio": 0.5}, {"importance_sample_ratio": 1.5}]
)
def test_training_sampler_rejects_bad_arguments(bad):
    args = {"num_points": 10, "oversample_ratio": 3, "importance_sample_ratio": 0.75} | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        sample_uncertain_points(torch.randn(1, 2, 4, 4), **args)


def test_grid_selection_picks_the_most_uncertain_cells():
    uncertainty = torch.randn(2, 1, 9, 7)
    indices, coords = select_uncertain_grid_points(uncertainty, 10)
    assert indices.shape == (2, 10) and coords.shape == (2, 10, 2)
    for b in range(2):
        flat = uncertainty[b, 0].flatten()
        threshold = flat[indices[b]].min()
        assert set(indices[b].tolist()) == set((flat >= threshold).nonzero()[:, 0].tolist())
        assert len(set(indices[b].tolist())) == 10
    torch.testing.assert_close(coords, grid_cell_centers(indices, 9, 7))


def test_grid_selection_clips_to_grid_size():
    uncertainty = torch.randn(1, 1, 3, 5)
    indices, coords = select_uncertain_grid_points(uncertainty, 1000)
    assert indices.shape == (1, 15) and coords.shape == (1, 15, 2)
    assert sorted(indices[0].tolist()) == list(range(15))


def test_boundary_pixels_of_a_thin_strip_an_ignored_region_and_the_border():
    labels = torch.zeros(1, 6, 8, dtype=torch.int64)
    labels[0, :, 3:5] = 2  # a 2 px wide vertical strip of class 2
    labels[0, 0, :] = 255  # an ignored first row
    expected = torch.zeros(1, 6, 8, dtype=torch.bool)
    expected[0, 1:, 2:6] = True  # the strip and the pixel on each side; no ignored pixel
    assert torch.equal(boundary_pixels(labels, ignore_value=255), expected)
    # One class everywhere, or a class beside ignored pixels only: no boundary.
    assert not boundary_pixels(torch.zeros(1, 4, 4, dtype=torch.int64), 255).any()
    assert not boundary_pixels(labels.clamp(max=0).masked_fill(labels == 255, 255), 255).any()


def test_boundary_points_lie_in_boundary_pixels_and_are_reproducible():
    labels = torch.zeros(2, 16, 12, dtype=torch.int64)
    labels[0, 5, :] = 1  # a 1 px wire: it and its two neighbouring rows are the boundary
    labels[1] = 255  # nothing labelled: uniform points
    points = sample_boundary_points(labels, 300, 255, generator=torch.Generator().manual_seed(0))
    assert points.shape == (2, 300, 2) and points.dtype == torch.float32
    rows = (points[..., 1] * 16).floor()
    assert set(rows[0].tolist()) == {4.0, 5.0, 6.0}
    assert points.min() >= 0 and points.max() < 1
    assert len(set(rows[1].tolist())) == 16  # 300 uniform points reach every row
    again = sample_boundary_points(labels, 300, 255, generator=torch.Generator().manual_seed(0))
    assert torch.equal(points, again)
    with pytest.raises(ValueError, match="num_points must be > 0, got 0"):
        sample_boundary_points(labels, 0, 255)


def test_patches_are_the_cells_around_each_point_in_row_major_order():
    # Power-of-two grid: centres and one-cell offsets are exact in float32, so every sample is a
    # cell's value; offsets past the border read zero padding.
    values = torch.randn(2, 3, 16, 32)
    rows = torch.tensor([[5, 0, 15], [8, 8, 1]])
    cols = torch.tensor([[7, 0, 31], [20, 21, 30]])
    patches = sample_patches(values, grid_cell_centers(rows * 32 + cols, 16, 32), 3)
    assert patches.shape == (2, 3 * 9, 3)
    padded = torch.nn.functional.pad(values, (1, 1, 1, 1))
    for n in range(2):
        for p in range(3):
            window = padded[n, :, rows[n, p] : rows[n, p] + 3, cols[n, p] : cols[n, p] + 3]
            assert torch.equal(patches[n, :, p], window.reshape(-1))


def test_a_patch_of_one_is_the_point_sample():
    values = torch.randn(1, 4, 9, 13)
    points = torch.rand(1, 50, 2)
    assert torch.equal(sample_patches(values, points, 1), point_sample(values, points))


@pytest.mark.parametrize("size", [0, 2, -1])
def test_patch_size_must_be_odd_and_positive(size):
    with pytest.raises(ValueError, match=f"size must be an odd number >= 1, got {size}"):
        sample_patches(torch.zeros(1, 1, 4, 4), torch.rand(1, 2, 2), size)
