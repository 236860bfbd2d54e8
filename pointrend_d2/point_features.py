"""
Point utilities of PointRend: pure tensor functions, no config.

Shape shorthand in this module:

    N: batch size (number of images)
    C: number of channels of a feature map, or of classes of a logit map
    H, W: height and width of a map
    P: number of points per image

Coordinate convention: a point is ``(x, y)`` in the ``[0, 1] x [0, 1]`` square of the image, with
``(0, 0)`` the top-left corner of the top-left pixel and ``(1, 1)`` the bottom-right corner of the
bottom-right pixel (``grid_sample`` with ``align_corners=False``). The centre of cell ``(i, j)``
(row ``i``, column ``j``) of an ``H x W`` grid is ``((j + 0.5) / W, (i + 0.5) / H)``, and the
cell's flat index is ``i * W + j``. The same point addresses the same place in every map of the
image, whatever its stride.
"""

import torch
from torch import Tensor
from torch.nn import functional as F


def point_sample(
    input: Tensor, point_coords: Tensor, *, mode: str = "bilinear", align_corners: bool = False
) -> Tensor:
    """
    Sample a map at points with ``grid_sample``.

    Args:
        input: (N, C, H, W) map.
        point_coords: (N, P, 2) points ``(x, y)`` in ``[0, 1] x [0, 1]`` image coordinates.
        mode: ``"bilinear"`` for features and logits, ``"nearest"`` for labels.
        align_corners: passed to ``grid_sample``; the module convention is False.

    Returns:
        (N, C, P) values at the points. Points outside the square read zero padding.
    """
    # grid_sample needs one dtype; cell centres come in float32 whatever the map's dtype.
    grid = (2.0 * point_coords.to(input.dtype) - 1.0).unsqueeze(2)
    return F.grid_sample(input, grid, mode=mode, align_corners=align_corners).squeeze(3)


def uncertainty_and_label(logits: Tensor) -> tuple[Tensor, Tensor]:
    """
    Uncertainty and top class of each location: ``-(top1 - top2)`` over the class dimension, so
    near-ties score highest (close to 0) and confident locations very negative. With a single
    class (a sigmoid foreground logit) the uncertainty is ``-|logit|`` and the label
    ``logit > 0``.

    Args:
        logits: (N, K, ...) class logits.

    Returns:
        uncertainty: (N, ...) scores, higher is more uncertain.
        label: (N, ...) int64 top class (0 or 1 for a single logit).
    """
    if logits.shape[1] == 1:
        return -logits[:, 0].abs(), (logits[:, 0] > 0).to(torch.int64)
    top2 = torch.topk(logits, k=2, dim=1)
    return top2.values[:, 1] - top2.values[:, 0], top2.indices[:, 0]


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """
    The uncertainty of :func:`uncertainty_and_label` with the class dimension kept:
    (N, K, ...) logits -> (N, 1, ...) scores, higher is more uncertain.
    """
    return uncertainty_and_label(logits)[0].unsqueeze(1)


def sample_uncertain_points(
    coarse_logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """
    PointRend's training point sampler. Draw ``int(k * num_points)`` uniform candidates, keep the
    ``int(beta * num_points)`` most uncertain of them (importance) and add the remaining
    ``num_points - int(beta * num_points)`` uniform points (coverage).

    The uncertainty of a candidate is computed from the logits interpolated at the candidate, not
    interpolated from per-cell uncertainties: between two confident cells of different classes
    the interpolated logits are a near-tie, which is exactly a boundary point.

    Args:
        coarse_logits: (N, C, H, W) coarse class logits (C = 1 for a sigmoid foreground logit).
        num_points: P, the number of points returned per image; > 0.
        oversample_ratio: k >= 1.
        importance_sample_ratio: beta in [0, 1].
        generator: random generator for reproducible draws; the global one if None.

    Returns:
        (N, P, 2) points in ``[0, 1] x [0, 1]`` image coordinates: the importance points first,
        then the coverage points.
    """
    if num_points <= 0:
        raise ValueError(f"num_points must be > 0, got {num_points}")
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0.0 <= importance_sample_ratio <= 1.0:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    batch_size = coarse_logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_importance = int(importance_sample_ratio * num_points)
    num_coverage = num_points - num_importance
    rand_kwargs = {
        "generator": generator,
        "device": coarse_logits.device,
        "dtype": coarse_logits.dtype,
    }

    candidates = torch.rand(batch_size, num_candidates, 2, **rand_kwargs)
    uncertainty = calculate_uncertainty(point_sample(coarse_logits, candidates))[:, 0]
    top_indices = torch.topk(uncertainty, k=num_importance, dim=1).indices
    importance = torch.gather(candidates, 1, top_indices.unsqueeze(2).expand(-1, -1, 2))
    if num_coverage == 0:
        return importance
    coverage = torch.rand(batch_size, num_coverage, 2, **rand_kwargs)
    return torch.cat([importance, coverage], dim=1)


def grid_cell_centers(point_indices: Tensor, height: int, width: int) -> Tensor:
    """
    Centres of grid cells given by flat index.

    Args:
        point_indices: (N, P) flat indices ``i * W + j`` into an ``H x W`` grid.
        height, width: H and W.

    Returns:
        (N, P, 2) float32 cell centres ``((j + 0.5) / W, (i + 0.5) / H)``.
    """
    rows = torch.div(point_indices, width, rounding_mode="floor")
    cols = point_indices - rows * width
    x = (cols.to(torch.float32) + 0.5) / width
    y = (rows.to(torch.float32) + 0.5) / height
    return torch.stack([x, y], dim=2)


def select_uncertain_grid_points(uncertainty_map: Tensor, num_points: int) -> tuple[Tensor, Tensor]:
    """
    The ``num_points`` most uncertain cells of a grid, for one subdivision step.

    Args:
        uncertainty_map: (N, 1, H, W) uncertainty of each cell, higher is more uncertain.
        num_points: the number of cells to select; clipped to ``H * W``.

    Returns:
        point_indices: (N, P) int64 flat indices ``i * W + j`` of the selected cells, most
            uncertain first, with ``P = min(num_points, H * W)``.
        point_coords: (N, P, 2) float32 centres of those cells in ``[0, 1] x [0, 1]``.
    """
    batch_size, _, height, width = uncertainty_map.shape
    num_points = min(num_points, height * width)
    point_indices = torch.topk(uncertainty_map.reshape(batch_size, -1), k=num_points).indices
    return point_indices, grid_cell_centers(point_indices, height, width)
