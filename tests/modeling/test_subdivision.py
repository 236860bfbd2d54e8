"""
The subdivision inference against a straightforward dense implementation, its two selections
against each other (also on batches of up to 100 instance-like maps, and on none), its step
records, and the top-k selection under torch.export.
"""

from unittest import mock

import pytest
import torch
from torch.nn import functional as F

from pointrend_d2.modeling import subdivision
from pointrend_d2.modeling.point_features import (
    calculate_uncertainty,
    grid_cell_centers,
    point_sample,
    select_uncertain_grid_points,
    uncertainty_and_label,
)
from pointrend_d2.modeling.subdivision import (
    AUTO_BOUNDED_MIN_CLASS_CELLS,
    exact_uncertainty_bounds,
    resolve_selection,
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


def assert_same_refinement(coarse, num_steps, num_points, selection="bounded"):
    fine_map = torch.randn(coarse.shape[0], coarse.shape[1], 64, 96) * 3
    expected_head, actual_head = RecordingPointHead(fine_map), RecordingPointHead(fine_map)
    expected = straightforward_subdivision(coarse, num_steps, num_points, expected_head)
    actual = subdivision_inference(
        coarse, num_steps, num_points, selection=selection, predict_points=actual_head
    )
    assert actual.shape == expected.shape
    for step, (a, e) in enumerate(zip(actual_head.calls, expected_head.calls, strict=True)):
        # The same cells are refined (the order within a step does not matter).
        assert a.shape == e.shape, step
        for b in range(a.shape[0]):
            assert torch.equal(a[b][a[b][:, 1].argsort()].unique(dim=0), e[b].unique(dim=0))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert torch.equal(actual.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("selection", ["bounded", "topk"])
@pytest.mark.parametrize("num_classes", [1, 2, 5, 19])
@pytest.mark.parametrize("height,width", [(7, 13), (25, 40)])
def test_matches_straightforward_on_random_logits(selection, num_classes, height, width):
    coarse = torch.randn(2, num_classes, height, width) * 3
    assert_same_refinement(coarse, num_steps=2, num_points=60, selection=selection)


@pytest.mark.parametrize("selection", ["bounded", "topk"])
@pytest.mark.parametrize("num_classes", [1, 2, 19])
@pytest.mark.parametrize("num_steps", [1, 2, 3])
def test_matches_straightforward_on_smooth_logits(selection, num_classes, num_steps):
    coarse = smooth_logits(2, num_classes, 19, 33)
    assert_same_refinement(coarse, num_steps=num_steps, num_points=100, selection=selection)


@pytest.mark.parametrize("selection", ["bounded", "topk"])
def test_matches_straightforward_when_points_exceed_grid(selection):
    coarse = torch.randn(1, 4, 5, 6)
    assert_same_refinement(coarse, num_steps=2, num_points=10_000, selection=selection)


def run_recorded(coarse, num_steps, num_points, selection, fine_map):
    """Refined logits and the :class:`SubdivisionStep` records of one run."""
    steps = []
    refined = subdivision_inference(
        coarse,
        num_steps,
        num_points,
        selection=selection,
        predict_points=RecordingPointHead(fine_map),
        on_step=steps.append,
    )
    return refined, steps


@pytest.mark.parametrize("num_classes", [1, 2, 5, 19])
@pytest.mark.parametrize("num_steps", [0, 1, 2, 3])
def test_bounded_and_topk_select_the_same_cells(num_classes, num_steps):
    """Many random and smooth maps, odd sizes, N below and above the grid: equal outputs."""
    generator = torch.Generator().manual_seed(num_classes * 10 + num_steps)
    for trial in range(6):
        height, width = torch.randint(1, 23, (2,), generator=generator).tolist()
        num_points = [1, 37, 150, 5000][trial % 4]
        if trial % 2:
            coarse = smooth_logits(2, num_classes, height, width, region_size=3)
        else:
            coarse = torch.randn(2, num_classes, height, width, generator=generator) * 3
        fine_map = torch.randn(2, num_classes, 40, 56, generator=generator) * 3
        bounded, bounded_steps = run_recorded(coarse, num_steps, num_points, "bounded", fine_map)
        topk, topk_steps = run_recorded(coarse, num_steps, num_points, "topk", fine_map)
        assert torch.equal(bounded, topk), (trial, height, width, num_points)
        assert len(bounded_steps) == len(topk_steps) == num_steps
        for b_step, t_step in zip(bounded_steps, topk_steps, strict=True):
            # The same cells; their order differs only among equal uncertainties (a map of
            # width 1 upsamples to two equal columns).
            b_indices = b_step.point_indices.sort(dim=1).values
            assert torch.equal(b_indices, t_step.point_indices.sort(dim=1).values)


@pytest.mark.parametrize("selection", ["bounded", "topk"])
def test_step_records_describe_each_step(selection):
    coarse = smooth_logits(2, 5, 9, 14)
    fine_map = torch.randn(2, 5, 40, 56) * 3
    refined, steps = run_recorded(coarse, 3, 70, selection, fine_map)
    previous = coarse
    for index, step in enumerate(steps):
        assert step.step == index
        upsampled = F.interpolate(previous, scale_factor=2, mode="bilinear", align_corners=False)
        assert torch.equal(step.upsampled, upsampled)
        height, width = upsampled.shape[2:]
        assert step.point_indices.shape == (2, 70)
        torch.testing.assert_close(
            step.point_coords, grid_cell_centers(step.point_indices, height, width)
        )
        changed = (step.refined != step.upsampled).any(1).flatten(1)
        selected = torch.zeros_like(changed).scatter(1, step.point_indices, True)
        assert not (changed & ~selected).any()
        previous = step.refined
    assert refined is steps[-1].refined


def test_unknown_selection_is_refused():
    with pytest.raises(ValueError, match="selection must be one of"):
        subdivision_inference(
            torch.zeros(1, 2, 3, 3), 1, 4, selection="dense", predict_points=lambda c: c
        )


@pytest.mark.parametrize("selection", ["bounded", "topk"])
def test_explicit_selection_is_kept(selection):
    assert resolve_selection(selection, torch.zeros(1, 19, 8, 8, device="meta"), 2) == selection


def test_auto_selection_follows_the_tensors():
    """auto is bounded on the CPU; elsewhere (a meta tensor stands for a GPU's: only its device and
    shape are read) bounded from AUTO_BOUNDED_MIN_CLASS_CELLS logits at the final resolution."""
    assert resolve_selection("auto", torch.zeros(1, 2, 4, 4), 1) == "bounded"
    below = AUTO_BOUNDED_MIN_CLASS_CELLS // 16 - 1  # class-cells before 2 steps
    assert resolve_selection("auto", torch.zeros(1, 1, 1, below, device="meta"), 2) == "topk"
    above = below + 1
    assert resolve_selection("auto", torch.zeros(1, 1, 1, above, device="meta"), 2) == "bounded"
    # The H200 measurements behind the threshold: 19 classes at 1024 x 2048 (coarse stride 4,
    # 2 steps) chose topk, 150 classes bounded; 100 boxes of 224 x 224 masks topk.
    assert resolve_selection("auto", torch.zeros(1, 19, 256, 512, device="meta"), 2) == "topk"
    assert resolve_selection("auto", torch.zeros(1, 150, 256, 512, device="meta"), 2) == "bounded"
    assert resolve_selection("auto", torch.zeros(100, 1, 28, 28, device="meta"), 3) == "topk"


class ExportableSubdivision(torch.nn.Module):
    """Subdivision with a point head reading a map at the points, for torch.export."""

    def __init__(self, num_points, selection):
        super().__init__()
        self.num_points = num_points
        self.selection = selection

    def forward(self, coarse, fine_map):
        return subdivision_inference(
            coarse,
            2,
            self.num_points,
            selection=self.selection,
            predict_points=lambda coords: point_sample(fine_map, coords),
        )


@pytest.mark.parametrize("selection", ["topk", "auto"])
def test_topk_selection_exports_with_dynamic_sizes(selection):
    """
    No host sync and no data-dependent shape: torch.export traces it with a dynamic map size,
    and the program clips N to the grid symbolically (N exceeds the smaller grids here). "auto"
    is "topk" while exporting (and "bounded" when the eager module runs on the CPU: the same
    cells).
    """
    height, width = torch.export.Dim("height", min=1, max=512), torch.export.Dim("width", max=512)
    model = ExportableSubdivision(num_points=300, selection=selection)
    program = torch.export.export(
        model,
        (smooth_logits(1, 5, 12, 20), torch.randn(1, 5, 30, 30)),
        dynamic_shapes=({2: height, 3: width}, None),
    )
    for size in [(12, 20), (3, 5), (7, 31), (1, 1)]:
        coarse, fine_map = smooth_logits(1, 5, *size), torch.randn(1, 5, 30, 30)
        expected = model(coarse, fine_map)
        assert torch.equal(program.module()(coarse, fine_map), expected), size


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
    point_indices, candidates = select_uncertain_cells(upsampled.flatten(2), bound, 1000)
    dense_indices, _ = select_uncertain_grid_points(calculate_uncertainty(upsampled), 1000)
    assert set(point_indices[0].tolist()) == set(dense_indices[0].tolist())
    candidate_cells = torch.cat([found.cells.flatten() for found in candidates]).unique()
    assert candidate_cells.numel() < 0.25 * upsampled[0, 0].numel()


def instance_like_logits(batch_size, num_classes, kind, generator, size=28):
    """
    Coarse logits of a batch of instance-like maps: random, smooth, or smooth with a large
    constant confident region (exactly tied cells, which windows inside it rule out at once).
    """
    if kind == "random":
        return torch.randn(batch_size, num_classes, size, size, generator=generator) * 3
    low = torch.randn(batch_size, num_classes, 4, 4, generator=generator) * 4
    logits = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    if kind == "constant_region":
        # The left 40% of each map is one confident background, logit -12 (class 0 at +12 for
        # several classes), far below the selected uncertainties, so its ties never reach the
        # N-th cell; the rest is smooth between -3 and 3.
        logits = 3 * torch.tanh(logits / 3)
        logits[..., : size * 2 // 5] = -12.0
        logits[:, 0, :, : size * 2 // 5] = 12.0 if num_classes > 1 else -12.0
    return logits


def assert_bounded_equals_topk(coarse, num_steps, num_points, fine_map):
    """Both selections: equal refined logits, the same cells at each step, most uncertain first."""
    bounded, bounded_steps = run_recorded(coarse, num_steps, num_points, "bounded", fine_map)
    topk, topk_steps = run_recorded(coarse, num_steps, num_points, "topk", fine_map)
    assert torch.equal(bounded, topk)
    for b_step, t_step in zip(bounded_steps, topk_steps, strict=True):
        assert torch.equal(b_step.point_indices.sort(1).values, t_step.point_indices.sort(1).values)
        uncertainty = uncertainty_and_label(b_step.upsampled)[0].flatten(1)
        selected = uncertainty.gather(1, b_step.point_indices)
        assert (selected[:, :-1] >= selected[:, 1:]).all(), b_step.step


@pytest.mark.parametrize("kind", ["random", "smooth", "constant_region"])
@pytest.mark.parametrize("batch_size", [1, 100])
def test_bounded_equals_topk_on_batches_of_instance_masks(kind, batch_size):
    """The instance head's case: R single-logit 28x28 masks, 3 steps to 224x224, 784 points."""
    generator = torch.Generator().manual_seed(batch_size)
    coarse = instance_like_logits(batch_size, 1, kind, generator)
    fine_map = torch.randn(batch_size, 1, 224, 224, generator=generator) * 3
    assert_bounded_equals_topk(coarse, 3, 784, fine_map)


@pytest.mark.parametrize("num_classes,batch_size", [(5, 100), (19, 20)])
@pytest.mark.parametrize("kind", ["random", "smooth", "constant_region"])
def test_bounded_equals_topk_on_batches_of_multi_class_maps(num_classes, batch_size, kind):
    generator = torch.Generator().manual_seed(num_classes)
    coarse = instance_like_logits(batch_size, num_classes, kind, generator, size=14)
    fine_map = torch.randn(batch_size, num_classes, 56, 56, generator=generator) * 3
    assert_bounded_equals_topk(coarse, 2, 150, fine_map)


def test_maps_whose_candidates_fall_short_take_a_second_round():
    """
    A point head predicting near-zero logits leaves bounds of about 0 around its cells, which the
    interpolated cells do not reach: maps need the second round, and it stays exact.
    """
    generator = torch.Generator().manual_seed(0)
    coarse = instance_like_logits(20, 1, "smooth", generator)
    fine_map = torch.randn(20, 1, 224, 224, generator=generator) * 1e-3
    with mock.patch.object(
        subdivision, "candidate_windows", wraps=subdivision.candidate_windows
    ) as candidate_windows:
        assert_bounded_equals_topk(coarse, 3, 784, fine_map)
    assert candidate_windows.call_count > 3


@pytest.mark.parametrize("selection", ["bounded", "topk"])
@pytest.mark.parametrize("num_classes", [1, 5])
def test_no_maps_give_an_empty_result(selection, num_classes):
    """An image without detections: zero maps in, zero maps of the refined size out."""
    steps = []
    refined = subdivision_inference(
        torch.zeros(0, num_classes, 28, 28),
        3,
        784,
        selection=selection,
        predict_points=lambda coords: torch.zeros(0, num_classes, coords.shape[1]),
        on_step=steps.append,
    )
    assert refined.shape == (0, num_classes, 224, 224)
    assert [step.point_indices.shape for step in steps] == [(0, 784)] * 3


@pytest.mark.parametrize("num_classes", [1, 19])
def test_bounded_selection_has_no_loop_over_maps(num_classes):
    """
    The candidates' uncertainties are computed for all maps at once: as many calls for 100 maps
    as for one (the same map repeated, so the same rounds), and at most 2 rounds per step.
    """
    generator = torch.Generator().manual_seed(num_classes)
    coarse = instance_like_logits(1, num_classes, "smooth", generator)
    fine_map = torch.randn(1, num_classes, 112, 112, generator=generator) * 3

    def count_calls(batch_size):
        with mock.patch.object(
            subdivision, "uncertainty_and_label", wraps=uncertainty_and_label
        ) as uncertainty:
            refined = subdivision_inference(
                coarse.expand(batch_size, -1, -1, -1),
                2,
                300,
                predict_points=lambda coords: point_sample(
                    fine_map.expand(batch_size, -1, -1, -1), coords
                ),
            )
        assert torch.equal(refined, refined[:1].expand_as(refined))
        return uncertainty.call_count

    calls = count_calls(1)
    assert count_calls(100) == calls
    # The coarse map, at most two rounds of candidates per step, the points of all but the last.
    assert calls <= 1 + 2 * 2 + 1
