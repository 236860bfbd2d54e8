"""
Property tests (hypothesis) of the point utilities and the subdivision inference, over random
shapes, class counts, numbers of points, steps and dtypes, with logits that are random, smooth or
full of exact ties.
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from pointrend_d2.modeling.point_features import (
    grid_cell_centers,
    point_sample,
    sample_uncertain_points,
    select_uncertain_grid_points,
    uncertainty_and_label,
)
from pointrend_d2.modeling.subdivision import SELECTIONS, subdivision_inference

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)
DTYPES = st.sampled_from([torch.float32, torch.float64])


@st.composite
def logit_maps(draw, max_size: int = 12):
    """(N, K, H, W) logits: random, smooth (upsampled noise) or integer-valued (many ties)."""
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 20)),
        draw(st.integers(1, max_size)),
        draw(st.integers(1, max_size)),
    )
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    dtype = draw(DTYPES)
    logits = torch.randn(shape, generator=generator, dtype=dtype) * draw(st.sampled_from([0.1, 4]))
    kind = draw(st.sampled_from(["random", "smooth", "ties"]))
    if kind == "smooth":
        low = logits[..., ::3, ::3]
        logits = F.interpolate(low, size=shape[2:], mode="bilinear", align_corners=False)
    elif kind == "ties":
        logits = logits.round()
    return logits


def cell_indices(coords, height: int, width: int):
    """Flat indices of the cells containing (N, P, 2) points."""
    rows = (coords[..., 1] * height).floor().long()
    cols = (coords[..., 0] * width).floor().long()
    return rows * width + cols


@PROPERTY_SETTINGS
@given(logits=logit_maps())
def test_point_sample_at_cell_centres_reads_the_cells(logits):
    batch_size, num_classes, height, width = logits.shape
    indices = torch.arange(height * width).expand(batch_size, -1)
    values = point_sample(logits, grid_cell_centers(indices, height, width))
    assert values.shape == (batch_size, num_classes, height * width)
    assert values.dtype == logits.dtype
    # Exact up to the rounding of the float32 centres (1e-7 of the map's width, in cells).
    torch.testing.assert_close(values, logits.flatten(2), rtol=1e-5, atol=1e-4)


@PROPERTY_SETTINGS
@given(logits=logit_maps())
def test_uncertainty_is_minus_the_top2_margin(logits):
    uncertainty, label = uncertainty_and_label(logits)
    assert uncertainty.shape == label.shape == logits.shape[:1] + logits.shape[2:]
    assert (uncertainty <= 0).all() and torch.isfinite(uncertainty).all()
    if logits.shape[1] == 1:
        assert torch.equal(uncertainty, -logits[:, 0].abs())
        assert torch.equal(label, (logits[:, 0] > 0).long())
    else:
        top2 = logits.topk(2, dim=1).values
        assert torch.equal(uncertainty, top2[:, 1] - top2[:, 0])
        assert torch.equal(logits.gather(1, label.unsqueeze(1))[:, 0], top2[:, 0])


@PROPERTY_SETTINGS
@given(
    logits=logit_maps(),
    num_points=st.integers(1, 300),
    oversample_ratio=st.sampled_from([1, 2, 3, 4.5]),
    importance_sample_ratio=st.sampled_from([0.0, 0.3, 0.75, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_training_points_keep_the_most_uncertain_candidates(
    logits, num_points, oversample_ratio, importance_sample_ratio, seed
):
    points = sample_uncertain_points(
        logits,
        num_points,
        oversample_ratio,
        importance_sample_ratio,
        generator=torch.Generator().manual_seed(seed),
    )
    assert points.shape == (logits.shape[0], num_points, 2) and points.dtype == logits.dtype
    assert ((points >= 0) & (points < 1)).all()
    # The documented draw: k * N uniform candidates first, the beta * N most uncertain kept.
    candidates = torch.rand(
        logits.shape[0],
        int(num_points * oversample_ratio),
        2,
        generator=torch.Generator().manual_seed(seed),
        dtype=logits.dtype,
    )
    num_importance = int(importance_sample_ratio * num_points)
    candidate_uncertainty = uncertainty_and_label(point_sample(logits, candidates))[0]
    importance = points[:, :num_importance]
    importance_uncertainty = uncertainty_and_label(point_sample(logits, importance))[0]
    for b in range(logits.shape[0]):
        is_candidate = (importance[b][:, None] == candidates[b][None]).all(dim=2).any(dim=1)
        assert is_candidate.all()
        expected = candidate_uncertainty[b].topk(num_importance).values
        assert torch.equal(importance_uncertainty[b].sort(descending=True).values, expected)


@PROPERTY_SETTINGS
@given(logits=logit_maps(), num_points=st.integers(1, 300))
def test_grid_selection_is_a_top_k_of_unique_cells(logits, num_points):
    batch_size, _, height, width = logits.shape
    uncertainty = uncertainty_and_label(logits)[0].unsqueeze(1)
    indices, coords = select_uncertain_grid_points(uncertainty, num_points)
    num_selected = min(num_points, height * width)
    assert indices.shape == (batch_size, num_selected) and coords.shape == (*indices.shape, 2)
    assert ((coords > 0) & (coords < 1)).all()
    assert torch.equal(cell_indices(coords, height, width), indices)
    flat = uncertainty.flatten(1)
    for b in range(batch_size):
        assert indices[b].unique().numel() == num_selected
        selected = flat[b, indices[b]].sort(descending=True).values
        assert torch.equal(selected, flat[b].topk(num_selected).values)


class OffsetPointHead:
    """
    A point-head stand-in whose predictions differ from every upsampled value: step s predicts
    ``100 * (s + 1)`` plus small position- and class-dependent terms, above anything the map
    held before (|coarse logits| < 100). Records the points of each step.
    """

    def __init__(self, num_classes: int, dtype: torch.dtype):
        self.class_term = 0.01 * torch.arange(num_classes, dtype=dtype)[None, :, None]
        self.calls = []

    def predict(self, step: int, coords):
        """(N, P, 2) points -> (N, K, P) predictions of step ``step``."""
        position = (coords[..., 0] + 0.5 * coords[..., 1])[:, None, :]
        return 100.0 * (step + 1) + position.to(self.class_term.dtype) + self.class_term

    def __call__(self, coords):
        self.calls.append(coords)
        return self.predict(len(self.calls) - 1, coords)


@PROPERTY_SETTINGS
@given(
    logits=logit_maps(),
    num_steps=st.integers(0, 3),
    num_points=st.integers(1, 200),
    selection=st.sampled_from(SELECTIONS),
)
def test_subdivision_refines_exactly_the_top_uncertain_cells(
    logits, num_steps, num_points, selection
):
    """
    At each step, replayed on the dense map: the selected cells are unique, inside the grid,
    given by their centres, and a top-N of the dense uncertainty of the upsampled map; they take
    the point head's values, and every other cell keeps the plain bilinear upsampling.
    """
    batch_size, num_classes, height, width = logits.shape
    head = OffsetPointHead(num_classes, logits.dtype)
    refined = subdivision_inference(
        logits, num_steps, num_points, selection=selection, predict_points=head
    )

    scale = 2**num_steps
    assert refined.shape == (batch_size, num_classes, height * scale, width * scale)
    assert refined.dtype == logits.dtype and torch.isfinite(refined).all()
    assert len(head.calls) == num_steps
    expected = logits
    for step, coords in enumerate(head.calls):
        upsampled = F.interpolate(expected, scale_factor=2, mode="bilinear", align_corners=False)
        step_height, step_width = upsampled.shape[2:]
        num_selected = min(num_points, step_height * step_width)
        assert coords.shape == (batch_size, num_selected, 2)
        indices = cell_indices(coords, step_height, step_width)
        torch.testing.assert_close(coords, grid_cell_centers(indices, step_height, step_width))
        uncertainty = uncertainty_and_label(upsampled)[0].flatten(1)
        for b in range(batch_size):
            assert indices[b].unique().numel() == num_selected, step
            selected = uncertainty[b, indices[b]].sort(descending=True).values
            assert torch.equal(selected, uncertainty[b].topk(num_selected).values), step

        flat = upsampled.flatten(2).scatter(
            2, indices.unsqueeze(1).expand(-1, num_classes, -1), head.predict(step, coords)
        )
        changed = flat != upsampled.flatten(2)
        refined_cells = torch.zeros_like(changed[:, 0]).scatter(1, indices, True)
        assert torch.equal(changed.all(1), refined_cells), step
        assert torch.equal(changed.any(1), refined_cells), step
        expected = flat.view_as(upsampled)
    assert torch.equal(refined, expected)
