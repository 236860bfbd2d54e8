"""
Adaptive subdivision inference, with two ways of selecting each step's cells.

Each step of PointRend's inference upsamples the logits 2x and re-predicts the P most uncertain
cells of each map. :func:`subdivision_inference` selects them in one of two ways, which give the
same cells (up to exactly equal uncertainties), most uncertain first:

``"topk"``: the uncertainty (a top-2 over classes) at every cell of the upsampled maps, then a
top-P. Fixed shapes, no host sync and no Python loop over maps, so it runs asynchronously on a
GPU and is what an exported graph (``torch.export``, ONNX) contains.

``"bounded"``: the uncertainty only where it can matter. Computing it at every cell is most of
the cost of a step on the CPU, yet only cells near class boundaries can be among the P most
uncertain. A bound that holds for bilinear 2x upsampling rules out the others:

    An upsampled cell is a convex combination of a 2x2 window of source cells. If all of them
    have the same top class ``a`` with margins (top-1 minus top-2) of at least ``m``, the
    combination has top class ``a`` and a margin of at least ``m``, because for every class
    ``b``: ``v_a - v_b = sum_i w_i (x_ia - x_ib) >= sum_i w_i m = m``.

(With a single foreground logit, the margin is ``|logit|`` and the class its sign, and the same
holds.) So the uncertainty ``-margin`` of an upsampled cell is at most ``-m`` of its window when the
window agrees on its top class (0 otherwise). Each map gets a threshold, the P-th largest of its
window bounds; the cells of the windows that reach it, at least P, are its candidates. A cell
outside them has an uncertainty below the threshold, so where a map's P-th largest candidate reaches
the threshold, its top-P candidates are its top-P cells. The other maps take one more round with
that P-th value as their threshold, which is then exact. The bounds of the next step come from the
windows, from the exact values at the candidates, and from the point head's predictions, so no step
computes a dense top-2 over classes after the coarse map.

The maps of a batch (a few images in semantic segmentation, up to a hundred instance masks) are
selected together, with no Python loop over them: one top-k over the window bounds of all maps
gives their thresholds, one ``nonzero`` their candidate windows, laid out one row per map (padded
to the longest), one gather the exact values at their cells, and one top-k over the rows each map's
top-P, most uncertain first. The second round, where a map needs it, again covers the whole batch,
but only the windows between a map's two thresholds (none for the maps already done), whose cells
compete with the map's P best so far. The candidates' number depends on the data, so each round
syncs with the host.

Shape shorthand and coordinates as in :mod:`pointrend_d2.point_features`, except that ``N``
counts maps (images, or instances of an instance head); additionally ``K`` is the number of class
logits, ``(H, W)`` the size of the map before a 2x step, ``M`` a number of candidate windows per
map and ``S = 4M`` the number of their cells.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from .point_features import grid_cell_centers, uncertainty_and_label

#: The values of ``selection`` of :func:`subdivision_inference`.
SELECTIONS = ("auto", "bounded", "topk")

# "auto" on a GPU: "bounded" pays a fixed cost per step (host syncs and small kernels), "topk" a
# dense top-2 over every class of every cell. Measured on an H200 (torch 2.11, CUDA 13), refinement
# times topk / bounded: 5e6 class-cells (100 boxes x 224 x 224) 14.1 / 24.2 ms, 1.0e7 (19 classes x
# 512 x 1024) 2.7 / 6.7 ms, 4.0e7 (19 x 1024 x 2048) 7.1 / 8.1 ms, 3.1e8 (150 x 1024 x 2048)
# 26.4 / 11.5 ms: the crossover lies between the last two.
AUTO_BOUNDED_MIN_CLASS_CELLS = 10**8

# Relative float32 rounding allowance of the bound: an interpolated margin can come out a few ulps
# of the logits' magnitude below the exact convex-combination bound.
_ROUNDING_SLACK = 16 * torch.finfo(torch.float32).eps


def resolve_selection(selection: str, logits: Tensor, num_steps: int) -> str:
    """
    The selection a subdivision call uses: ``selection``, or for "auto" the faster one for these
    tensors, by a rule measured on each kind of device (see :data:`AUTO_BOUNDED_MIN_CLASS_CELLS`
    and the docs' performance page): "topk" while tracing or exporting (fixed shapes), "bounded"
    on the CPU (as fast or faster at every size measured), and on other devices "bounded" from
    :data:`AUTO_BOUNDED_MIN_CLASS_CELLS` logits at the final resolution, else "topk".

    Args:
        selection: one of :data:`SELECTIONS`.
        logits: (N, K, H, W) the coarse logits of the call.
        num_steps: its number of 2x steps.

    Raises:
        ValueError: for an unknown ``selection``.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if selection != "auto":
        return selection
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return "topk"
    if logits.device.type == "cpu":
        return "bounded"
    final_class_cells = logits.numel() * 4**num_steps
    return "bounded" if final_class_cells >= AUTO_BOUNDED_MIN_CLASS_CELLS else "topk"


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
    """Exact :class:`UncertaintyBounds` of an (N, K, H, W) logit map, N > 0 (one dense top-2)."""
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
    uncertainty, label = (
        F.pad(values.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
        for values in (bounds.uncertainty, bounds.label)
    )
    row_pairs = torch.maximum(uncertainty[:, :-1], uncertainty[:, 1:])
    max_uncertainty = torch.maximum(row_pairs[:, :, :-1], row_pairs[:, :, 1:])
    # A window agrees if its top-left label is known and equals the other three.
    same_as_below = label[:, :-1] == label[:, 1:]
    same_as_right = label[:, :, :-1] == label[:, :, 1:]
    corner_label = label[:, :-1, :-1]
    agree = same_as_below[:, :, :-1] & same_as_below[:, :, 1:] & same_as_right[:, :-1]
    agree &= corner_label >= 0
    slack = _ROUNDING_SLACK * bounds.max_abs_logit
    uncertainty_bound = torch.where(agree, max_uncertainty + slack, 0.0)
    window_label = torch.where(agree, corner_label, -1)
    return uncertainty_bound, window_label


def window_cells(height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """
    The upsampled cells of each window.

    Args:
        height, width: 2H and 2W, the size of the upsampled map.
        device: where the tables go.

    Returns:
        cells: ((H+1) * (W+1), 4) int64 flat indices ``r * width + c`` of the cells ``2p-1..2p``
            x ``2q-1..2q`` of window ``p * (W+1) + q``, each clamped to the map: a window at the
            edge repeats one of its cells.
        inside: ((H+1) * (W+1), 4) bool, False at those repeats. The cells inside belong to
            exactly one window.
    """
    window_rows = torch.arange(height // 2 + 1, device=device).view(-1, 1, 1)
    window_cols = torch.arange(width // 2 + 1, device=device).view(1, -1, 1)
    cell_rows = 2 * window_rows - 1 + torch.tensor([0, 0, 1, 1], device=device)
    cell_cols = 2 * window_cols - 1 + torch.tensor([0, 1, 0, 1], device=device)
    inside = (cell_rows >= 0) & (cell_rows < height) & (cell_cols >= 0) & (cell_cols < width)
    cells = cell_rows.clamp(0, height - 1) * width + cell_cols.clamp(0, width - 1)
    return cells.view(-1, 4), inside.view(-1, 4)


def candidate_windows(flat_bound: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """
    The windows whose bound lies in ``[lower, upper)`` of their map, one row per map.

    Args:
        flat_bound: (N, (H+1) * (W+1)) window bounds, flattened.
        lower, upper: (N,) each map's range.

    Returns:
        windows: (N, M) flat window indices, each map's first, then window 0 as padding.
        valid: (N, M) bool, False at the padding.
    """
    in_range = (flat_bound >= lower.unsqueeze(1)) & (flat_bound < upper.unsqueeze(1))
    maps, windows = in_range.nonzero().unbind(1)
    counts = torch.bincount(maps, minlength=len(flat_bound))
    slots = torch.arange(len(maps), device=maps.device) - (counts.cumsum(0) - counts)[maps]
    rows = windows.new_zeros(len(flat_bound), int(counts.max()))
    rows[maps, slots] = windows
    return rows, torch.arange(rows.shape[1], device=maps.device) < counts.unsqueeze(1)


class Candidates(NamedTuple):
    """
    The cells of each map whose exact uncertainty was computed in one round of a step. A cell may
    repeat (at an edge, or as padding), always with the same values.
    """

    cells: Tensor  # (N, S) flat indices of the candidate cells
    uncertainty: Tensor  # (N, S) their exact uncertainties
    label: Tensor  # (N, S) their exact labels


def select_uncertain_cells(
    upsampled: Tensor, uncertainty_bound: Tensor, num_points: int
) -> tuple[Tensor, list[Candidates]]:
    """
    The ``num_points`` most uncertain cells of each upsampled logit map, the same cells as a
    top-k over the dense uncertainty maps (up to exactly equal uncertainties), but computing the
    uncertainty only at candidate cells whose bound allows them to be selected.

    Args:
        upsampled: (N, K, 2H * 2W) upsampled logits, flattened; N > 0 and finite.
        uncertainty_bound: (N, H+1, W+1) the window bounds of :func:`window_uncertainty_bounds`.
        num_points: P, clipped to the number of cells.

    Returns:
        point_indices: (N, P) int64 flat indices of the selected cells, most uncertain first.
        candidates: the :class:`Candidates` of each round, exact values at a superset of the
            points.
    """
    batch_size, num_classes, _ = upsampled.shape
    height, width = 2 * (uncertainty_bound.shape[1] - 1), 2 * (uncertainty_bound.shape[2] - 1)
    num_points = min(num_points, height * width)
    all_cells, all_inside = window_cells(height, width, upsampled.device)
    # Each window has at least one cell, so the windows whose bound reaches that of a map's P-th
    # highest window hold at least P cells.
    flat_bound = uncertainty_bound.flatten(1)
    num_windows = min(num_points, flat_bound.shape[1])
    threshold = torch.topk(flat_bound, num_windows, dim=1, sorted=False).values.amin(1)
    point_indices = torch.empty(batch_size, num_points, dtype=torch.int64, device=upsampled.device)
    candidates = []
    todo = torch.ones(batch_size, dtype=torch.bool, device=upsampled.device)
    upper = torch.full_like(threshold, float("inf"))
    # The P most uncertain candidates so far of each map, none before the first round.
    best_uncertainty = threshold.new_empty(batch_size, 0)
    best_cells = point_indices.new_empty(batch_size, 0)
    while True:
        windows, valid = candidate_windows(flat_bound, threshold, upper)
        cells = all_cells[windows].flatten(1)
        selectable = (all_inside[windows] & valid.unsqueeze(2)).flatten(1)
        candidate_logits = upsampled.gather(2, cells.unsqueeze(1).expand(-1, num_classes, -1))
        uncertainty, label = uncertainty_and_label(candidate_logits)
        candidates.append(Candidates(cells, uncertainty, label))
        pool_uncertainty = torch.cat(
            [best_uncertainty, uncertainty.masked_fill(~selectable, float("-inf"))], dim=1
        )
        top = torch.topk(pool_uncertainty, num_points, dim=1)
        best_uncertainty = top.values
        best_cells = torch.cat([best_cells, cells], dim=1).gather(1, top.indices)
        # Cells outside the candidates have uncertainty <= bound < threshold: where the P-th
        # candidate reaches the threshold, none of them can be selected. The other maps take one
        # more round with their P-th candidate's uncertainty as threshold (the windows between
        # the two thresholds), which is exact.
        nth_uncertainty = best_uncertainty[:, -1]
        done = todo & (nth_uncertainty >= threshold)
        point_indices[done] = best_cells[done]
        todo &= ~done
        if not todo.any():
            return point_indices, candidates
        # An infinite threshold gives the maps done no more candidates.
        threshold, upper = torch.where(todo, nth_uncertainty, float("inf")), threshold


def upsampled_bounds(
    uncertainty_bound: Tensor,
    window_label: Tensor,
    candidates: list[Candidates],
    point_indices: Tensor,
    point_logits: Tensor,
    max_abs_logit: float,
) -> UncertaintyBounds:
    """
    :class:`UncertaintyBounds` of the upsampled map after the selected cells were re-predicted:
    window bounds everywhere, exact values at the candidates, the point head's values at the
    points.

    Args:
        uncertainty_bound, window_label: (N, H+1, W+1) from :func:`window_uncertainty_bounds`.
        candidates: the :class:`Candidates` of this step's rounds.
        point_indices: (N, P) flat indices of the re-predicted cells.
        point_logits: (N, K, P) the point head's logits at those cells.
        max_abs_logit: bound on the magnitude of the upsampled map's logits before refinement.

    Returns:
        :class:`UncertaintyBounds` of the (N, K, 2H, 2W) refined map.
    """

    def to_cells(window_map: Tensor) -> Tensor:
        # Window p holds the upsampled rows 2p-1 and 2p: repeat each window twice, drop the ends.
        batch_size, window_height, window_width = window_map.shape
        repeated = window_map[:, :, None, :, None].expand(-1, -1, 2, -1, 2)
        cell_map = repeated.reshape(batch_size, 2 * window_height, 2 * window_width)
        return cell_map[:, 1:-1, 1:-1].contiguous()

    uncertainty, label = to_cells(uncertainty_bound), to_cells(window_label)
    batch_size = uncertainty.shape[0]
    flat_uncertainty, flat_label = uncertainty.view(batch_size, -1), label.view(batch_size, -1)
    # A repeated candidate cell writes the same values each time.
    for found in candidates:
        flat_uncertainty.scatter_(1, found.cells, found.uncertainty)
        flat_label.scatter_(1, found.cells, found.label)
    point_uncertainty, point_label = uncertainty_and_label(point_logits)
    flat_uncertainty.scatter_(1, point_indices, point_uncertainty)
    flat_label.scatter_(1, point_indices, point_label)
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
    selection: str = "auto",
    predict_points: Callable[[Tensor], Tensor],
    on_step: Callable[[SubdivisionStep], None] | None = None,
) -> Tensor:
    """
    PointRend's adaptive subdivision: ``num_steps`` times, upsample the logits 2x bilinearly and
    overwrite the ``num_points`` most uncertain cells of each map with ``predict_points`` at their
    centres.

    Args:
        coarse_logits: (N, K, H, W) coarse logits; N may be 0 (an image without instances).
        num_steps: number of 2x steps.
        num_points: cells re-predicted per map and step (clipped to the map size).
        selection: how a step finds its cells (see the module docstring), the same cells either
            way: "topk" (dense uncertainty and top-k; no host sync, exportable), "bounded"
            (uncertainty only where a bound allows selection; faster on the CPU), or "auto",
            chosen for these tensors by :func:`resolve_selection`.
        predict_points: maps (N, P, 2) cell centres in ``[0, 1] x [0, 1]`` to (N, K, P) logits.
        on_step: called with a :class:`SubdivisionStep` after each step, for pictures and tests.

    Returns:
        (N, K, H * 2**num_steps, W * 2**num_steps) refined logits.
    """
    selection = resolve_selection(selection, coarse_logits, num_steps)
    logits = coarse_logits
    # Without maps there is nothing to bound: the dense path handles the empty batch.
    bounded = selection == "bounded" and num_steps > 0 and len(coarse_logits) > 0
    bounds = exact_uncertainty_bounds(coarse_logits) if bounded else None
    for step in range(num_steps):
        logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        batch_size, num_classes, height, width = logits.shape
        flat_logits = logits.view(batch_size, num_classes, height * width)
        if bounded:
            uncertainty_bound, window_label = window_uncertainty_bounds(bounds)
            point_indices, candidates = select_uncertain_cells(
                flat_logits, uncertainty_bound, num_points
            )
        else:
            uncertainty = uncertainty_and_label(flat_logits)[0]
            point_indices = torch.topk(uncertainty, min(num_points, height * width)).indices
        point_coords = grid_cell_centers(point_indices, height, width)
        point_logits = predict_points(point_coords)
        # Only a step record needs the map before refinement: the copy is made for it alone.
        upsampled = logits.clone() if on_step is not None else None
        flat_logits.scatter_(
            2, point_indices.unsqueeze(1).expand(-1, num_classes, -1), point_logits
        )
        if on_step is not None:
            on_step(SubdivisionStep(step, upsampled, point_indices, point_coords, logits))
        if bounded and step + 1 < num_steps:
            bounds = upsampled_bounds(
                uncertainty_bound,
                window_label,
                candidates,
                point_indices,
                point_logits,
                bounds.max_abs_logit,
            )
    return logits
