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


def boundary_pixels(labels: Tensor, ignore_value: int) -> Tensor:
    """
    The ground truth's boundary pixels: labelled pixels with a differently labelled pixel among
    their 8 neighbours (ignored pixels and the image border are no boundary). Every pixel of a
    structure at most 2 px wide is a boundary pixel, and so is the pixel beside it.

    Args:
        labels: (N, H, W) int64 labels.
        ignore_value: the label of unlabelled pixels.

    Returns:
        (N, H, W) bool.
    """
    height, width = labels.shape[-2:]
    padded = F.pad(labels, (1, 1, 1, 1), value=ignore_value)
    labelled = labels != ignore_value
    boundary = torch.zeros_like(labelled)
    for dy in range(3):
        for dx in range(3):
            neighbour = padded[:, dy : dy + height, dx : dx + width]
            boundary |= (neighbour != labels) & (neighbour != ignore_value)
    return boundary & labelled


def sample_boundary_points(
    labels: Tensor,
    num_points: int,
    ignore_value: int,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """
    Training points on the ground truth's boundaries (:func:`boundary_pixels`): ``num_points``
    boundary pixels per image drawn uniformly with replacement, each point uniform inside its
    pixel. An image without boundary pixels gets uniform points over the image. Unlike the
    uncertainty of :func:`sample_uncertain_points`, this reaches structures that the coarse
    prediction misses altogether, such as 1-4 px wires.

    Args:
        labels: (N, H, W) int64 labels at the input resolution.
        num_points: P > 0.
        ignore_value: the label of unlabelled pixels.
        generator: random generator for reproducible draws; the global one if None.

    Returns:
        (N, P, 2) float32 points in ``[0, 1] x [0, 1]`` image coordinates.
    """
    if num_points <= 0:
        raise ValueError(f"num_points must be > 0, got {num_points}")
    batch_size, height, width = labels.shape
    weights = boundary_pixels(labels, ignore_value).reshape(batch_size, -1).to(torch.float32)
    weights[weights.sum(dim=1) == 0] = 1.0
    pixel_indices = torch.multinomial(weights, num_points, replacement=True, generator=generator)
    rows = torch.div(pixel_indices, width, rounding_mode="floor")
    cols = pixel_indices - rows * width
    offsets = torch.rand(batch_size, num_points, 2, generator=generator, device=labels.device)
    x = (cols.to(torch.float32) + offsets[..., 0]) / width
    y = (rows.to(torch.float32) + offsets[..., 1]) / height
    return torch.stack([x, y], dim=2)


def sample_patches(input: Tensor, point_coords: Tensor, size: int) -> Tensor:
    """
    The ``size x size`` neighbourhood of each point in a map: the map sampled bilinearly at the
    point and at offsets of whole cells around it (-(size - 1) / 2 to (size - 1) / 2 cells in x
    and y). With a stride-1 map of the image it gives a point head the pixels around a point,
    where a structure 1-4 px wide shows even when the coarser maps blur it.

    Args:
        input: (N, C, H, W) map.
        point_coords: (N, P, 2) points in ``[0, 1] x [0, 1]`` image coordinates.
        size: S, an odd number >= 1 (1 is :func:`point_sample` itself).

    Returns:
        (N, C * S * S, P): channel ``c`` at offset ``o`` (row-major over the S x S offsets, top
        left first) is channel ``c * S * S + o``. Offsets outside the map read zero padding.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be an odd number >= 1, got {size}")
    batch_size, num_points = point_coords.shape[:2]
    channels, height, width = input.shape[1:]
    steps = torch.arange(size, dtype=torch.float32, device=point_coords.device) - (size - 1) / 2
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    offsets = torch.stack([dx.reshape(-1) / width, dy.reshape(-1) / height], dim=1)
    coords = point_coords.unsqueeze(2) + offsets.to(point_coords.dtype)
    values = point_sample(input, coords.reshape(batch_size, num_points * size * size, 2))
    values = values.reshape(batch_size, channels, num_points, size * size).transpose(2, 3)
    return values.reshape(batch_size, channels * size * size, num_points)


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
    # Half a step plus whole steps, as detectron2 computes them: (j + 0.5) / W can differ in the
    # last bit, and the same weights should give the same points (and select the same cells).
    x_step, y_step = 1.0 / width, 1.0 / height
    x = x_step / 2 + cols.to(torch.float32) * x_step
    y = y_step / 2 + rows.to(torch.float32) * y_step
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


# Points of regions (boxes). A box-normalized point ``(u, v)`` in ``[0, 1] x [0, 1]`` is the point
# ``(x0 + u * (x1 - x0), y0 + v * (y1 - y0))`` of the image, in absolute input-image coordinates
# (pixels, ``(0, 0)`` the top-left corner of the top-left pixel; pixel ``(i, j)`` covers
# ``[j, j + 1) x [i, i + 1)``), for a box ``(x0, y0, x1, y1)`` in the same coordinates. Shape
# shorthand: R is the number of boxes (of all images together), P the number of points per box.


def regular_grid_points(num_boxes: int, side: int, device: torch.device | str) -> Tensor:
    """
    The centres of the cells of a ``side x side`` grid over each box, in row-major order.

    Returns:
        (R, side * side, 2) box-normalized points; cell ``i * side + j`` is ``(j + 0.5) / side,
        (i + 0.5) / side)``.
    """
    # affine_grid's centres of the cells of [-1, 1]^2, scaled and shifted onto [0, 1]^2: the
    # points of detectron2's regular grids to the last bit, so the same weights give the same
    # masks.
    to_unit_square = torch.tensor([[[0.5, 0.0, 0.5], [0.0, 0.5, 0.5]]], device=device)
    grid = F.affine_grid(to_unit_square, [1, 1, side, side], align_corners=False)
    return grid.view(1, -1, 2).expand(num_boxes, -1, -1)


def box_points_to_image(boxes: Tensor, point_coords: Tensor) -> Tensor:
    """
    Box-normalized points to absolute image coordinates.

    Args:
        boxes: (R, 4) boxes ``(x0, y0, x1, y1)`` in absolute image coordinates.
        point_coords: (R, P, 2) box-normalized points.

    Returns:
        (R, P, 2) absolute image coordinates ``(x, y)``.
    """
    return point_coords * (boxes[:, None, 2:] - boxes[:, None, :2]) + boxes[:, None, :2]


def roi_point_features(
    features: list[Tensor], strides: list[int], boxes: list[Tensor], point_coords: Tensor
) -> Tensor:
    """
    Sample image feature maps at box-normalized points (bilinear, zero outside the maps).

    Args:
        features: maps, each (N, C_i, H_i, W_i), of stride ``strides[i]`` in the input image: a
            map covers the ``(W_i * stride_i) x (H_i * stride_i)`` pixels of the padded batch.
        strides: the stride of each map.
        boxes: N tensors (R_n, 4), the boxes of each image in absolute image coordinates, with
            ``R = sum(R_n)``.
        point_coords: (R, P, 2) box-normalized points of the boxes, in the order of ``boxes``.

    Returns:
        (R, sum(C_i), P) the maps' values at the points, concatenated over the maps (not
        necessarily contiguous).
    """
    image_points = box_points_to_image(torch.cat(boxes), point_coords)
    per_image = []
    for image_index, points in enumerate(image_points.split([len(b) for b in boxes])):
        num_boxes, num_points = points.shape[:2]
        if num_boxes == 0:
            # grid_sample refuses an empty grid; an image without boxes adds no rows.
            continue
        sampled = []
        for feature_map, stride in zip(features, strides, strict=True):
            height, width = feature_map.shape[-2:]
            extent = points.new_tensor([width * stride, height * stride])
            values = point_sample(
                feature_map[image_index : image_index + 1], (points / extent).reshape(1, -1, 2)
            )
            sampled.append(values[0].view(-1, num_boxes, num_points).transpose(0, 1))
        per_image.append(sampled[0] if len(sampled) == 1 else torch.cat(sampled, dim=1))
    if not per_image:
        num_channels = sum(feature_map.shape[1] for feature_map in features)
        return image_points.new_zeros((0, num_channels, image_points.shape[1]))
    # A single piece stays a strided view: the point head's matrix products read it as fast as
    # a contiguous copy, and the copy is skipped.
    return per_image[0] if len(per_image) == 1 else torch.cat(per_image)


def bitmask_point_labels(masks: Tensor, points: Tensor) -> Tensor:
    """
    Labels of points from bit masks, by the masks' own geometry: a point's label is the value of
    the pixel that contains it (no interpolation), 0 outside the image.

    Args:
        masks: (R, H, W) bool masks over the image.
        points: (R, P, 2) points in absolute image coordinates.

    Returns:
        (R, P) int64 labels, 1 inside the mask.
    """
    height, width = masks.shape[-2:]
    cols, rows = points.floor().to(torch.int64).unbind(dim=2)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    flat_indices = rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)
    values = torch.gather(masks.reshape(len(masks), -1), 1, flat_indices)
    return (values & inside).to(torch.int64)


def polygon_point_labels(polygons: list[list[Tensor]], points: Tensor) -> Tensor:
    """
    Labels of points from polygons, by the polygons' own geometry (no rasterization): a point is
    inside an instance if it is inside any of its polygons (COCO's union), and inside a polygon by
    the even-odd rule.

    Args:
        polygons: R lists of polygons, each a (2V,) tensor ``x0, y0, x1, y1, ...`` in absolute
            image coordinates.
        points: (R, P, 2) points in absolute image coordinates.

    Returns:
        (R, P) int64 labels, 1 inside.
    """
    labels = torch.zeros(points.shape[:2], dtype=torch.bool, device=points.device)
    for index, instance_polygons in enumerate(polygons):
        x, y = points[index, :, 0:1], points[index, :, 1:2]  # (P, 1) each
        for polygon in instance_polygons:
            vertices = polygon.to(points).view(-1, 2)
            x0, y0 = vertices[:, 0], vertices[:, 1]
            x1, y1 = x0.roll(-1), y0.roll(-1)
            # Edges that straddle the horizontal line through the point, crossed to its right.
            straddles = (y0 > y) != (y1 > y)
            dy = torch.where(straddles, y1 - y0, torch.ones_like(y0))
            crosses = straddles & (x < x0 + (x1 - x0) * (y - y0) / dy)
            labels[index] |= crosses.sum(dim=1) % 2 == 1
    return labels.to(torch.int64)
