"""
Adaptive subdivision inference, with two ways of selecting each step's cells.

Each step of PointRend's inference upsamples the logits 2x and re-predicts the N most uncertain
cells. :func:`subdivision_inference` selects them in one of two ways, which give the same cells
(up to exactly equal uncertainties):

``"topk"``: the uncertainty (a top-2 over classes) at every cell of the upsampled map, then a
top-N. Fixed shapes, no host sync and no Python loop over images, so it runs asynchronously on a
GPU and is what an exported graph (``torch.export``, ONNX) contains.

``"bounded"``: the uncertainty only where it can matter. Computing it at every cell is most of
the cost of a step on the CPU, yet only cells near class boundaries can be among the N most
uncertain. A bound that holds for bilinear 2x upsampling rules out the others:

    An upsampled cell is a convex combination of a 2x2 window of source cells. If all of them
    have the same top class ``a`` with margins (top-1 minus top-2) of at least ``m``, the
    combination has top class ``a`` and a margin of at least ``m``, because for every class
    ``b``: ``v_a - v_b = sum_i w_i (x_ia - x_ib) >= sum_i w_i m = m``.

So the uncertainty ``-margin`` of an upsampled cell is at most ``-m`` of its window when the
window agrees on its top class (0 otherwise). The cells whose bound is below the N-th largest exact
uncertainty among the candidates cannot be selected and are never looked at. The bounds of the
next step come from these windows, from the exact values at the candidates, and from the point
head's predictions, so no step computes a dense top-2 over classes after the coarse map. The
candidates' number depends on the data: it syncs with the host and loops over the images.

Shape shorthand and coordinates as in :mod:`pointrend_d2.point_features`; additionally
``K`` is the number of class logits and ``(H, W)`` the size of the map before a 2x step.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from .point_features import (
    calculate_uncertainty,
    grid_cell_centers,
    select_uncertain_grid_points,
    uncertainty_and_label,
)

#: The values of ``selection`` of :func:`subdivision_inference`.
SELECTIONS = ("bounded", "topk")

# Relative float32 rounding allowance of the bound: an interpolated margin can come out a few ulps
# of the logits' magnitude below the exact convex-combination bound.
_ROUNDING_SLACK = 16 * torch.finfo(torch.float32).eps


class UncertaintyBounds(NamedTuple):
    """
    What is known about the cells of a logit map, without its dense top-2.

    uncertainty: (N, H, W) an upper bound on each cell's uncertainty (minus its margin, the top-1
        minus top-2 logit, or minus |logit| for a single foreground logit).
    label: (N, H, W) int64 top class of each cell, -1 where unknown.
    max_abs_logit: an upper bound on the magnitude of the map's logits (for rounding slack).
    """

    uncertainty: Tensor
    label: Tensor
    max_abs_logit: float


def exact_uncertainty_bounds(logits: Tensor) -> UncertaintyBounds:
    """Exact :class:`UncertaintyBounds` of an (N, K, H, W) logit map (one dense top-2)."""
    uncertainty, label = uncertainty_and_label(logits)
    return UncertaintyBounds(uncertainty, label, logits.abs().max().item())


def window_uncertainty_bounds(bounds: UncertaintyBounds) -> tuple[Tensor, Tensor]:
    """
    Upper bounds on the uncertainty of the cells of the 2x bilinear upsampling of a map.

    Window ``(p, q)`` is the 2x2 block of source cells ``p-1..p`` x ``q-1..q`` (edges replicated),
    which the upsampled cells ``2p-1..2p`` x ``2q-1..2q`` interpolate (align_corners=False).

    Args:
        bounds: :class:`UncertaintyBounds` of the (N, K, H, W) source map.

    Returns:
        uncertainty_bound: (N, H+1, W+1) an upper bound on the uncertainty of the window's cells:
            the largest bound of its 4 cells plus rounding slack if they have the same known
            label, else 0.
        label: (N, H+1, W+1) int64 the window's common label, -1 if none.
    """
    # One max-pool over (uncertainty, label, -label) gives the largest uncertainty bound and the
    # largest and smallest label of each window.
    label = bounds.label.to(bounds.uncertainty.dtype)
    stacked = torch.stack([bounds.uncertainty, label, -label], dim=1)
    pooled = F.max_pool2d(F.pad(stacked, (1, 1, 1, 1), mode="replicate"), kernel_size=2, stride=1)
    max_uncertainty, max_label, min_label = pooled[:, 0], pooled[:, 1], -pooled[:, 2]
    agree = (max_label == min_label) & (min_label >= 0)
    slack = _ROUNDING_SLACK * bounds.max_abs_logit
    uncertainty_bound = torch.where(agree, max_uncertainty + slack, 0.0)
    window_label = torch.where(agree, max_label, -1.0).to(torch.int64)
    return uncertainty_bound, window_label


def window_cells(windows: Tensor, window_width: int, height: int, width: int) -> Tensor:
    """
    Flat indices of the upsampled cells of windows.

    Args:
        windows: (M,) flat indices ``p * window_width + q`` of windows.
        window_width: W + 1.
        height, width: 2H and 2W, the size of the upsampled map.

    Returns:
        (S,) int64 flat indices ``r * width + c`` of the upsampled cells of the windows, M <= S <=
        4M; each cell belongs to exactly one window.
    """
    rows = torch.div(windows, window_width, rounding_mode="floor")
    cols = windows - rows * window_width
    cell_rows = torch.stack([2 * rows - 1, 2 * rows - 1, 2 * rows, 2 * rows], dim=1)
    cell_cols = torch.stack([2 * cols - 1, 2 * cols, 2 * cols - 1, 2 * cols], dim=1)
    inside = (cell_rows >= 0) & (cell_rows < height) & (cell_cols >= 0) & (cell_cols < width)
    return (cell_rows * width + cell_cols)[inside]


class Selection(NamedTuple):
    """The cells selected in one image at one step, and the exact values at all candidates."""

    point_indices: Tensor  # (P,) flat indices of the selected cells, most uncertain first
    candidates: Tensor  # (S,) flat indices of the cells whose uncertainty was computed
    candidate_uncertainty: Tensor  # (S,) their exact uncertainties
    candidate_label: Tensor  # (S,) their exact labels


def select_uncertain_cells(
    upsampled: Tensor, uncertainty_bound: Tensor, num_points: int
) -> Selection:
    """
    The ``num_points`` most uncertain cells of one upsampled logit map, the same cells as a top-k
    over its dense uncertainty map (up to exactly equal uncertainties), but computing the
    uncertainty only at candidate cells whose bound allows them to be selected.

    Args:
        upsampled: (K, 2H * 2W) one image's upsampled logits, flattened.
        uncertainty_bound: (H+1, W+1) the window bounds of :func:`window_uncertainty_bounds`.
        num_points: N, clipped to the number of cells.

    Returns:
        :class:`Selection`.
    """
    window_height, window_width = uncertainty_bound.shape
    height, width = 2 * (window_height - 1), 2 * (window_width - 1)
    num_points = min(num_points, height * width)
    flat_bound = uncertainty_bound.reshape(-1)
    # Each window has at least one cell, so the windows whose bound reaches that of the N-th
    # highest window hold at least N cells.
    threshold = torch.topk(flat_bound, min(num_points, flat_bound.numel()), sorted=False).values
    threshold = threshold.min()
    while True:
        candidates = window_cells(
            (flat_bound >= threshold).nonzero()[:, 0], window_width, height, width
        )
        uncertainty, label = uncertainty_and_label(upsampled.index_select(1, candidates)[None])
        top = torch.topk(uncertainty[0], num_points)
        # Cells outside the candidates have uncertainty <= bound < threshold: if the N-th
        # candidate reaches the threshold, none of them can be selected. Otherwise one more round
        # with the N-th candidate's uncertainty as threshold is exact.
        nth_uncertainty = top.values[-1]
        if nth_uncertainty >= threshold:
            return Selection(candidates[top.indices], candidates, uncertainty[0], label[0])
        threshold = nth_uncertainty


def upsampled_bounds(
    uncertainty_bound: Tensor,
    window_label: Tensor,
    selections: list,
    point_logits: Tensor,
    max_abs_logit: float,
) -> UncertaintyBounds:
    """
    :class:`UncertaintyBounds` of the upsampled map after the selected cells were re-predicted:
    window bounds everywhere, exact values at the candidates, the point head's values at the
    points.

    Args:
        uncertainty_bound, window_label: (N, H+1, W+1) from :func:`window_uncertainty_bounds`.
        selections: N :class:`Selection` of this step.
        point_logits: (N, K, P) the point head's logits at the selected cells.
        max_abs_logit: bound on the magnitude of the upsampled map's logits before refinement.

    Returns:
        :class:`UncertaintyBounds` of the (N, K, 2H, 2W) refined map.
    """

    def to_cells(window_map: Tensor) -> Tensor:
        # Window p holds the upsampled rows 2p-1 and 2p: repeat each window twice, drop the ends.
        return window_map.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[:, 1:-1, 1:-1]

    uncertainty = to_cells(uncertainty_bound).contiguous()
    label = to_cells(window_label).contiguous()
    batch_size, height, width = uncertainty.shape
    flat_uncertainty, flat_label = uncertainty.view(batch_size, -1), label.view(batch_size, -1)
    point_uncertainty, point_label = uncertainty_and_label(point_logits)
    for b, selection in enumerate(selections):
        flat_uncertainty[b, selection.candidates] = selection.candidate_uncertainty
        flat_label[b, selection.candidates] = selection.candidate_label
        flat_uncertainty[b, selection.point_indices] = point_uncertainty[b]
        flat_label[b, selection.point_indices] = point_label[b]
    max_abs = max(max_abs_logit, point_logits.abs().max().item())
    return UncertaintyBounds(uncertainty, label, max_abs)


class SubdivisionStep(NamedTuple):
    """What :func:`subdivision_inference` passes to ``on_step`` after each step."""

    step: int  # 0-based step index
    upsampled: Tensor  # (N, K, 2H, 2W) the 2x-upsampled logits before refinement
    point_indices: Tensor  # (N, P) flat indices of the re-predicted cells, most uncertain first
    point_coords: Tensor  # (N, P, 2) their centres in [0, 1] x [0, 1]
    refined: Tensor  # (N, K, 2H, 2W) the logits after refinement (the next step's input)


def subdivision_inference(
    coarse_logits: Tensor,
    num_steps: int,
    num_points: int,
    *,
    selection: str = "bounded",
    predict_points: Callable[[Tensor], Tensor],
    on_step: Callable[[SubdivisionStep], None] | None = None,
) -> Tensor:
    """
    PointRend's adaptive subdivision: ``num_steps`` times, upsample the logits 2x bilinearly and
    overwrite the ``num_points`` most uncertain cells with ``predict_points`` at their centres.

    Args:
        coarse_logits: (N, K, H, W) coarse logits.
        num_steps: number of 2x steps.
        num_points: cells re-predicted per step (clipped to the map size).
        selection: how a step finds its cells (see the module docstring), the same cells either
            way: "topk" (dense uncertainty and top-k; no host sync, exportable) or "bounded"
            (uncertainty only where a bound allows selection; faster on the CPU).
        predict_points: maps (N, P, 2) cell centres in ``[0, 1] x [0, 1]`` to (N, K, P) logits.
        on_step: called with a :class:`SubdivisionStep` after each step, for pictures and tests.

    Returns:
        (N, K, H * 2**num_steps, W * 2**num_steps) refined logits.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    logits = coarse_logits
    bounded = selection == "bounded" and num_steps > 0
    bounds = exact_uncertainty_bounds(coarse_logits) if bounded else None
    for step in range(num_steps):
        logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        batch_size, num_classes, height, width = logits.shape
        if bounded:
            uncertainty_bound, window_label = window_uncertainty_bounds(bounds)
            flat_logits = logits.view(batch_size, num_classes, height * width)
            selections = [
                select_uncertain_cells(flat_logits[b], uncertainty_bound[b], num_points)
                for b in range(batch_size)
            ]
            point_indices = torch.stack([s.point_indices for s in selections])
            point_coords = grid_cell_centers(point_indices, height, width)
        else:
            point_indices, point_coords = select_uncertain_grid_points(
                calculate_uncertainty(logits), num_points
            )
        point_logits = predict_points(point_coords)
        # Only a step record needs the map before refinement: the copy is made for it alone.
        upsampled = logits.clone() if on_step is not None else None
        logits = logits.view(batch_size, num_classes, height * width)
        logits.scatter_(2, point_indices.unsqueeze(1).expand(-1, num_classes, -1), point_logits)
        logits = logits.view(batch_size, num_classes, height, width)
        if on_step is not None:
            on_step(SubdivisionStep(step, upsampled, point_indices, point_coords, logits))
        if bounded and step + 1 < num_steps:
            bounds = upsampled_bounds(
                uncertainty_bound, window_label, selections, point_logits, bounds.max_abs_logit
            )
    return logits
