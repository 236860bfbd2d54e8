"""The bounded subdivision inference against a straightforward dense implementation."""

import pytest
import torch
from torch.nn import functional as F

from pointrend_d2.point_features import (
    calculate_uncertainty,
    point_sample,
    select_uncertain_grid_points,
)
from pointrend_d2.subdivision import (
    exact_uncertainty_bounds,
    select_uncertain_cells,
    subdivision_inference,
    window_uncertainty_bounds,
)


def straightforward_subdivision(coarse_logits, num_steps, num_points, predict_points):
    """Dense uncertainty map and top-k at every step, as described in the paper."""
    logits = coarse_logits
    for _ in range(num_steps):
        logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        batch_size, num_classes, height, width = logits.shape
        indices, coords = select_uncertain_grid_points(calculate_uncertainty(logits), num_points)
        point_logits = predict_points(coords)
        logits = (
            logits.reshape(batch_size, num_classes, -1)
            .scatter(2, indices.unsqueeze(1).expand(-1, num_classes, -1), point_logits)
            .view(batch_size, num_classes, height, width)
        )
    return logits


class RecordingPointHead:
    """A deterministic stand-in for the point head: a fixed fine map sampled at the points."""

    def __init__(self, fine_map):
        self.fine_map = fine_map
        self.calls = []

    def __call__(self, coords):
        self.calls.append(coords)
        return point_sample(self.fine_map, coords)


def smooth_logits(batch_size, num_classes, height, width, region_size=4, scale=4.0):
    """Piecewise-smooth logits: regions of one class, as a trained coarse head predicts."""
    low_size = (max(2, height // region_size), max(2, width // region_size))
    low = torch.randn(batch_size, num_classes, *low_size) * scale
    return F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)


def assert_same_refinement(coarse, num_steps, num_points):
    fine_map = torch.randn(coarse.shape[0], coarse.shape[1], 64, 96) * 3
    expected_head, actual_head = RecordingPointHead(fine_map), RecordingPointHead(fine_map)
    expected = straightforward_subdivision(coarse, num_steps, num_points, expected_head)
    actual = subdivision_inference(coarse, num_steps, num_points, actual_head)
    assert actual.shape == expected.shape
    for step, (a, e) in enumerate(zip(actual_head.calls, expected_head.calls, strict=True)):
        # The same cells are refined (the order within a step does not matter).
        assert a.shape == e.shape, step
        for b in range(a.shape[0]):
            assert torch.equal(a[b][a[b][:, 1].argsort()].unique(dim=0), e[b].unique(dim=0))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert torch.equal(actual.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("num_classes", [1, 2, 5, 19])
@pytest.mark.parametrize("height,width", [(7, 13), (25, 40)])
def test_matches_straightforward_on_random_logits(num_classes, height, width):
    coarse = torch.randn(2, num_classes, height, width) * 3
    assert_same_refinement(coarse, num_steps=2, num_points=60)


@pytest.mark.parametrize("num_classes", [1, 2, 19])
@pytest.mark.parametrize("num_steps", [1, 2, 3])
def test_matches_straightforward_on_smooth_logits(num_classes, num_steps):
    coarse = smooth_logits(2, num_classes, 19, 33)
    assert_same_refinement(coarse, num_steps=num_steps, num_points=100)


def test_matches_straightforward_when_points_exceed_grid():
    coarse = torch.randn(1, 4, 5, 6)
    assert_same_refinement(coarse, num_steps=2, num_points=10_000)


def test_bound_holds_at_every_upsampled_cell():
    coarse = smooth_logits(2, 6, 30, 50)
    bound, label = window_uncertainty_bounds(exact_uncertainty_bounds(coarse))
    upsampled = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
    exact_uncertainty = calculate_uncertainty(upsampled)[:, 0]
    cell_bound = bound.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, 1:-1, 1:-1]
    cell_label = label.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, 1:-1, 1:-1]
    assert (exact_uncertainty <= cell_bound).all()
    known = cell_label >= 0
    assert torch.equal(upsampled.argmax(1)[known], cell_label[known])
    assert known.float().mean() > 0.5  # smooth maps: most windows agree on their class


def test_candidates_are_a_small_part_of_a_smooth_map():
    coarse = smooth_logits(1, 19, 64, 128, region_size=16)
    bound, _ = window_uncertainty_bounds(exact_uncertainty_bounds(coarse))
    upsampled = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
    selection = select_uncertain_cells(upsampled[0].flatten(1), bound[0], 1000)
    dense_indices, _ = select_uncertain_grid_points(calculate_uncertainty(upsampled), 1000)
    assert set(selection.point_indices.tolist()) == set(dense_indices[0].tolist())
    assert len(selection.candidates) < 0.25 * upsampled[0, 0].numel()
