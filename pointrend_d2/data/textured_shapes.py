"""
"Textured shapes": a small, procedurally generated semantic-segmentation dataset.

Every image is a deterministic function of ``(seed, split, index)``, so the dataset needs no
download: it is generated on first use into a cache directory (see :func:`default_dataset_root`)
and any single image can be regenerated on its own.

Classes (label values are the indices into :data:`CLASSES`):

* ``background`` (0): low-frequency smooth colour noise.
* ``blob`` (1): large superellipses with wobbly (metaball-like) outlines, filled with oriented
  stripes of a class-specific period.
* ``ring`` (2): elliptical annuli (some are open arcs), 6-20 px wide, filled with a small
  checkerboard.
* ``wire`` (3): thin Bezier / sine curves, 1-4 px wide, plain colour.
* ``dot`` (4): many small discs, radius 3-10 px, plain colour.

Each instance draws its colours from a per-class hue bias with wide overlap, and every image gets
Gaussian pixel noise, a colour cast and a brightness/contrast jitter, so colour alone does not
separate the classes: texture and shape must be used. A few "void" patches (label
:data:`IGNORE_LABEL`) with visible content are not scored.

On disk (both PNG, lossless), one folder per split and set of generation parameters::

    <root>/<split>-<key>/images/<split>_0000.png  RGB, uint8, H x W x 3
    <root>/<split>-<key>/labels/<split>_0000.png  one channel, uint8, H x W, values {0..4, 255}
    <root>/<split>-<key>/parameters.json          the parameters it was generated with

``<key>`` hashes every parameter the files depend on (:data:`DATASET_VERSION`, split, number of
images, seed, height, width), so other parameters never reuse a folder generated for different
ones, and the same parameters always reuse it.

The same generator also yields instances (:func:`generate_textured_shapes_instances`): which
painted shape owns each pixel. The instance-segmentation version of the dataset, in COCO format,
is in :mod:`pointrend_d2.data.textured_shapes_instances`.
"""

from __future__ import annotations

import colorsys
import os
import zlib

import cv2
import numpy as np

from .folder import load_folder_dataset
from .generated_splits import (
    keyed_split_dir,
    register_generated_splits,
    split_file_stem,
    write_rgb_png,
    write_split_once,
)

__all__ = [
    "CLASSES",
    "COLORS",
    "DATASET_VERSION",
    "IGNORE_LABEL",
    "default_dataset_root",
    "generate_textured_shapes_image",
    "generate_textured_shapes_instances",
    "generate_textured_shapes_split",
    "load_textured_shapes",
    "register_textured_shapes",
    "resolve_dataset_root",
    "textured_shapes_split_dir",
]

# Bump whenever the generator's output changes: it is part of every split folder's key, so
# stale caches are not reused.
DATASET_VERSION = "textured_shapes_v1"

CLASSES: tuple[str, ...] = ("background", "blob", "ring", "wire", "dot")
# Visualisation colours (RGB), one per class; not related to the colours in the images.
COLORS: tuple[tuple[int, int, int], ...] = (
    (40, 40, 40),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
)
IGNORE_LABEL = 255

BACKGROUND, BLOB, RING, WIRE, DOT = range(len(CLASSES))

# Centre of each class's hue distribution (degrees); the spread below makes them overlap widely.
_HUE_CENTERS = (30.0, 100.0, 170.0, 240.0, 310.0)
_HUE_SPREAD = 55.0
# Sizes of blobs and rings are given for a 512 x 1024 image and scale with the image; wire
# widths and dot radii are absolute, so they stay "thin" and "small" at any resolution.
_REFERENCE_HEIGHT, _REFERENCE_WIDTH = 512, 1024


def default_dataset_root() -> str:
    """
    The default dataset directory: ``$POINTREND_D2_DATA/textured_shapes``, where
    ``POINTREND_D2_DATA`` defaults to ``~/.cache/pointrend_d2/datasets``. Read at call time.
    """
    parent = os.environ.get(
        "POINTREND_D2_DATA", os.path.expanduser("~/.cache/pointrend_d2/datasets")
    )
    return os.path.join(parent, "textured_shapes")


def resolve_dataset_root(root: str | None) -> str:
    """``root`` as an absolute path, ``~`` expanded; :func:`default_dataset_root` if None."""
    return os.path.abspath(os.path.expanduser(root if root is not None else default_dataset_root()))


def _split_id(split: str) -> int:
    # A stable hash (unlike hash()), so any split name maps to the same images in every process.
    return zlib.crc32(split.encode("utf-8"))


def _sample_color(rng: np.random.Generator, class_id: int) -> np.ndarray:
    """An RGB colour (float32, shape (3,), range 0-255) from the class's biased distribution."""
    hue = (_HUE_CENTERS[class_id] + rng.normal(0.0, _HUE_SPREAD)) % 360.0
    rgb = colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(0.2, 0.85), rng.uniform(0.3, 0.9))
    return np.array(rgb, dtype=np.float32) * 255.0


def _sample_color_pair(rng: np.random.Generator, class_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Two colours of one texture: a class colour and a clearly lighter or darker variant."""
    first = _sample_color(rng, class_id)
    contrast = rng.uniform(50.0, 100.0) * rng.choice((-1.0, 1.0))
    second = first + contrast + rng.normal(0.0, 15.0, size=3).astype(np.float32)
    return first, np.clip(second, 0.0, 255.0)


def _blend(first: np.ndarray, second: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-pixel mix of two RGB colours: weight (h, w) in [0, 1] -> float32 (h, w, 3)."""
    weight = weight[..., None].astype(np.float32)
    return first * (1.0 - weight) + second * weight


def _window(
    center_x: float, center_y: float, radius: float, height: int, width: int
) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """
    The part of the image within ``radius`` of a centre, clipped to the image.

    Returns:
        (rows, cols, x, y): slices into the image and the pixel coordinates relative to the
        centre as broadcastable float32 arrays of shapes (1, w) and (h, 1).
    """
    x0, x1 = max(int(center_x - radius), 0), min(int(center_x + radius) + 2, width)
    y0, y1 = max(int(center_y - radius), 0), min(int(center_y + radius) + 2, height)
    x = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(center_x)
    y = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(center_y)
    return slice(y0, y1), slice(x0, x1), x, y


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (x, y) in a frame rotated by ``angle`` radians (broadcast to (h, w))."""
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * cos + y * sin, y * cos - x * sin


def _paint(
    image: np.ndarray,
    label: np.ndarray,
    rows: slice,
    cols: slice,
    mask: np.ndarray,
    colors: np.ndarray,
    class_id: int,
    instance_map: np.ndarray | None = None,
    instance_id: int = 0,
) -> None:
    """
    Paints ``colors`` ((h, w, 3) or (3,)) and ``class_id`` where ``mask`` (h, w) is set, and, if
    an ``instance_map`` is given, ``instance_id`` there: the shape now owns those pixels (0: no
    instance).
    """
    image_window, label_window = image[rows, cols], label[rows, cols]
    image_window[mask] = colors[mask] if colors.ndim == 3 else colors
    label_window[mask] = class_id
    if instance_map is not None:
        instance_map[rows, cols][mask] = instance_id


def _paint_background(rng: np.random.Generator, image: np.ndarray) -> None:
    """Fills the whole image with two colours mixed by low-frequency smooth noise."""
    height, width = image.shape[:2]
    cell = rng.uniform(48.0, 128.0)  # spatial scale of the noise, in pixels
    grid = rng.random((int(height / cell) + 2, int(width / cell) + 2), dtype=np.float32)
    smooth = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    low, high = smooth.min(), smooth.max()
    weight = (smooth - low) / max(high - low, 1e-6)
    image[:] = _blend(*_sample_color_pair(rng, BACKGROUND), weight)


def _paint_blob(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    scale: float,
    instance_map: np.ndarray | None = None,
    instance_id: int = 0,
) -> None:
    """A rotated superellipse with a wobbly outline, filled with soft-edged stripes."""
    height, width = label.shape
    radius_x, radius_y = np.maximum(rng.uniform(45.0, 130.0, size=2) * scale, 6.0)
    exponent = rng.uniform(1.6, 4.0)  # < 2: diamond-like, 2: ellipse, > 2: rounded rectangle
    wobble_amplitudes = rng.uniform(0.0, 0.12, size=3)
    wobble_phases = rng.uniform(0.0, 2 * np.pi, size=3)
    reach = max(radius_x, radius_y) * (1.0 + wobble_amplitudes.sum())
    rows, cols, x, y = _window(rng.uniform(0, width), rng.uniform(0, height), reach, height, width)
    u, v = _rotate(x, y, rng.uniform(0.0, np.pi))
    u, v = u / np.float32(radius_x), v / np.float32(radius_y)
    radius = (np.abs(u) ** exponent + np.abs(v) ** exponent) ** (1.0 / exponent)
    angle = np.arctan2(v, u)
    outline = 1.0
    for harmonic, (amplitude, phase) in enumerate(
        zip(wobble_amplitudes, wobble_phases, strict=True), start=2
    ):
        outline = outline + amplitude * np.cos(harmonic * angle + phase)
    mask = radius < outline

    # Stripes: period 9-15 px at a random orientation, a sine clipped into a near-square wave.
    across, _ = _rotate(x, y, rng.uniform(0.0, np.pi))
    phase = np.float32(2 * np.pi / rng.uniform(9.0, 15.0)) * across + rng.uniform(0, 2 * np.pi)
    weight = np.clip(0.5 + 0.8 * np.sin(phase), 0.0, 1.0)
    colors = _blend(*_sample_color_pair(rng, BLOB), weight)
    _paint(image, label, rows, cols, mask, colors, BLOB, instance_map, instance_id)


def _paint_ring(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    scale: float,
    instance_map: np.ndarray | None = None,
    instance_id: int = 0,
) -> None:
    """An elliptical annulus (sometimes an open arc) filled with a small rotated checkerboard."""
    height, width = label.shape
    axes = np.maximum(rng.uniform(30.0, 100.0, size=2) * scale, 6.0)
    band_width = int(np.clip(rng.uniform(6.0, 20.0), 2.0, 0.6 * axes.min()))
    center_x, center_y = rng.uniform(0, width), rng.uniform(0, height)
    start = rng.uniform(0.0, 360.0)
    sweep = 360.0 if rng.random() < 0.7 else rng.uniform(120.0, 300.0)
    reach = axes.max() + band_width
    rows, cols, x, y = _window(center_x, center_y, reach, height, width)
    # cv2 draws whole pixels: draw into the window with the centre rounded to the pixel grid.
    mask = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.uint8)
    local_center = (round(center_x) - cols.start, round(center_y) - rows.start)
    local_axes = (round(axes[0] - band_width / 2), round(axes[1] - band_width / 2))
    cv2.ellipse(
        mask,
        local_center,
        local_axes,
        rng.uniform(0.0, 180.0),
        start,
        start + sweep,
        1,
        thickness=band_width,
        lineType=cv2.LINE_8,
    )
    u, v = _rotate(x, y, rng.uniform(0.0, np.pi / 2))
    cell = np.float32(rng.uniform(3.0, 5.0))
    weight = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    colors = _blend(*_sample_color_pair(rng, RING), weight)
    _paint(image, label, rows, cols, mask.astype(bool), colors, RING, instance_map, instance_id)


def _wire_points(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Points (n, 2) float64 (x, y) along a random cubic Bezier curve or sine wave."""
    length = rng.uniform(0.2, 0.6) * min(width, 2 * height)
    start = rng.uniform((0.0, 0.0), (width, height))
    direction = rng.uniform(0.0, 2 * np.pi)
    along = np.array([np.cos(direction), np.sin(direction)])
    normal = np.array([-along[1], along[0]])
    steps = np.linspace(0.0, 1.0, 256)[:, None]
    if rng.random() < 0.5:
        # Control points spread along the chord, pushed sideways by up to half its length.
        offsets = rng.uniform(-0.5, 0.5, size=(4, 1)) * length
        offsets[[0, 3]] = 0.0
        controls = start + np.linspace(0.0, length, 4)[:, None] * along + offsets * normal
        weights = np.hstack(
            [(1 - steps) ** 3, 3 * (1 - steps) ** 2 * steps, 3 * (1 - steps) * steps**2, steps**3]
        )
        return weights @ controls
    periods = rng.uniform(0.5, 3.0)
    amplitude = rng.uniform(0.03, 0.15) * length
    sideways = amplitude * np.sin(2 * np.pi * periods * steps + rng.uniform(0.0, 2 * np.pi))
    return start + steps * length * along + sideways * normal


def _disc_kernel(diameter: int) -> np.ndarray:
    """A (diameter, diameter) uint8 kernel: the pixels whose centres lie inside the disc."""
    offsets = np.arange(diameter) - (diameter - 1) / 2
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 < (diameter / 2) ** 2).astype(np.uint8)


def _paint_wire(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    instance_map: np.ndarray | None = None,
    instance_id: int = 0,
) -> None:
    """A thin (1-4 px) curve in a plain colour; aliased, so its label is exactly what is drawn."""
    height, width = label.shape
    thickness = int(rng.integers(1, 5))
    points = _wire_points(rng, height, width)
    low = np.maximum(np.floor(points.min(axis=0)) - thickness, 0).astype(int)
    high = np.minimum(np.ceil(points.max(axis=0)) + thickness + 1, (width, height)).astype(int)
    if np.any(high <= low):  # the curve lies entirely outside the image
        return
    rows, cols = slice(low[1], high[1]), slice(low[0], high[0])
    mask = np.zeros((high[1] - low[1], high[0] - low[0]), dtype=np.uint8)
    local_points = np.round(points - low).astype(np.int32)
    # cv2's `thickness` > 1 draws lines 3 or 5 px wide; widening a 1 px line with a disc of the
    # wanted diameter gives every width from 1 to 4 px.
    cv2.polylines(mask, [local_points], False, 1, thickness=1, lineType=cv2.LINE_8)
    mask = cv2.dilate(mask, _disc_kernel(thickness))
    color = _sample_color(rng, WIRE)
    _paint(image, label, rows, cols, mask.astype(bool), color, WIRE, instance_map, instance_id)


def _paint_dot(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    instance_map: np.ndarray | None = None,
    instance_id: int = 0,
) -> None:
    """A small disc (radius 3-10 px) in a plain colour."""
    height, width = label.shape
    radius = int(rng.integers(3, 11))
    center_x, center_y = rng.uniform(0, width), rng.uniform(0, height)
    rows, cols, _, _ = _window(center_x, center_y, radius + 1, height, width)
    mask = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.uint8)
    local_center = (round(center_x) - cols.start, round(center_y) - rows.start)
    cv2.circle(mask, local_center, radius, 1, thickness=-1, lineType=cv2.LINE_8)
    color = _sample_color(rng, DOT)
    _paint(image, label, rows, cols, mask.astype(bool), color, DOT, instance_map, instance_id)


def _paint_void(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    scale: float,
    instance_map: np.ndarray | None = None,
    instance_id: int = 0,
) -> None:
    """
    An ignore region: a rectangle or irregular polygon, half-transparent over whatever is below
    and filled with coarse colour noise, so it is visible in the image but not scored. Its pixels
    belong to no instance (``instance_id`` 0 there).
    """
    height, width = label.shape
    radius = max(rng.uniform(12.0, 40.0) * scale, 4.0)
    center_x, center_y = rng.uniform(0, width), rng.uniform(0, height)
    rows, cols, x, y = _window(center_x, center_y, radius, height, width)
    if rng.random() < 0.5:
        half_sides = rng.uniform(0.4, 1.0, size=2) * radius
        mask = (np.abs(x) < half_sides[0]) & (np.abs(y) < half_sides[1])
    else:
        mask = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=np.uint8)
        angles = np.sort(rng.uniform(0.0, 2 * np.pi, size=int(rng.integers(5, 10))))
        radii = rng.uniform(0.3, 1.0, size=angles.size) * radius
        vertices = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
        vertices += (center_x - cols.start, center_y - rows.start)
        cv2.fillPoly(mask, [np.round(vertices).astype(np.int32)], 1, lineType=cv2.LINE_8)
        mask = mask.astype(bool)
    coarse = rng.uniform(0.0, 255.0, size=(4, 4, 3)).astype(np.float32)
    noise = cv2.resize(coarse, mask.shape[::-1], interpolation=cv2.INTER_NEAREST)
    colors = 0.5 * image[rows, cols] + 0.5 * noise
    _paint(image, label, rows, cols, mask, colors, IGNORE_LABEL, instance_map, instance_id)


def generate_textured_shapes_image(
    seed: int, split: str, index: int, height: int = 512, width: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """
    Generates one image of the dataset; a pure function of its arguments.

    Args:
        seed: dataset seed.
        split: split name (e.g. "train", "val"); different splits give different images.
        index: image index within the split.
        height, width: image size in pixels.

    Returns:
        (image, label): image of shape (height, width, 3), uint8, RGB; label of shape
        (height, width), uint8, with class indices into :data:`CLASSES` or :data:`IGNORE_LABEL`.
    """
    image, label, _ = _generate(seed, split, index, height, width, with_instances=False)
    return image, label


def generate_textured_shapes_instances(
    seed: int, split: str, index: int, height: int = 512, width: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    :func:`generate_textured_shapes_image` (the same image and label, pixel for pixel) and which
    shape owns each pixel.

    Returns:
        (image, label, instance_map): ``instance_map`` of shape (height, width), int32: 0 where
        no shape is visible (background and void patches), else the id of the shape painted
        last there (ids 1, 2, ... in painting order; later shapes occlude earlier ones, so a
        shape's pixels are its visible part, maybe in several pieces, and some ids may have no
        pixels). A shape's pixels all have its class in ``label``.
    """
    image, label, instance_map = _generate(seed, split, index, height, width, with_instances=True)
    assert instance_map is not None
    return image, label, instance_map


def _generate(
    seed: int, split: str, index: int, height: int, width: int, *, with_instances: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The generator of both functions above; ``instance_map`` is None without instances."""
    rng = np.random.default_rng([seed, _split_id(split), index])
    scale = min(height / _REFERENCE_HEIGHT, width / _REFERENCE_WIDTH)
    area_scale = height * width / (_REFERENCE_HEIGHT * _REFERENCE_WIDTH)

    def count(low: int, high: int, size_scale: float) -> int:
        # Counts are given for 512 x 1024; scaled to keep each class's coverage about the same
        # (shapes of area ~ size_scale cover area_scale / size_scale times as many pixels).
        return max(1, round(rng.integers(low, high + 1) * area_scale / size_scale))

    image = np.empty((height, width, 3), dtype=np.float32)
    label = np.full((height, width), BACKGROUND, dtype=np.uint8)
    # Recording instances draws no random numbers, so image and label do not depend on it.
    instance_map = np.zeros((height, width), dtype=np.int32) if with_instances else None
    _paint_background(rng, image)
    # Large shapes first, then thin and small ones, so those are rarely hidden entirely.
    large = [BLOB] * count(5, 8, scale**2) + [RING] * count(6, 10, scale**2)
    small = [WIRE] * count(6, 10, scale) + [DOT] * count(40, 80, 1.0)
    shapes = [*rng.permutation(large), *rng.permutation(small)]
    for instance_id, class_id in enumerate(shapes, start=1):
        if class_id == BLOB:
            _paint_blob(rng, image, label, scale, instance_map, instance_id)
        elif class_id == RING:
            _paint_ring(rng, image, label, scale, instance_map, instance_id)
        elif class_id == WIRE:
            _paint_wire(rng, image, label, instance_map, instance_id)
        else:
            _paint_dot(rng, image, label, instance_map, instance_id)
    for _ in range(int(rng.integers(0, 3))):
        _paint_void(rng, image, label, scale, instance_map)

    # Photometric nuisance for the whole image: colour cast, contrast, brightness, pixel noise.
    image *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    mean = image.mean()
    image = (image - mean) * np.float32(rng.uniform(0.7, 1.3)) + mean + rng.uniform(-30.0, 30.0)
    noise_sigma = np.float32(rng.uniform(10.0, 20.0))
    image += rng.standard_normal((height, width, 3), dtype=np.float32) * noise_sigma
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label, instance_map


def _split_parameters(split: str, num_images: int, seed: int, height: int, width: int) -> dict:
    """Every parameter the files of a split depend on."""
    return {
        "version": DATASET_VERSION,
        "split": split,
        "num_images": num_images,
        "seed": seed,
        "height": height,
        "width": width,
    }


def textured_shapes_split_dir(
    root: str, split: str, num_images: int, *, seed: int = 0, height: int = 512, width: int = 1024
) -> str:
    """
    The folder of a split generated with these parameters: ``<root>/<split>-<key>``, ``<key>``
    a hash of all of them and of :data:`DATASET_VERSION`. Nothing is read or written.
    """
    return keyed_split_dir(root, split, _split_parameters(split, num_images, seed, height, width))


def generate_textured_shapes_split(
    root: str,
    split: str,
    num_images: int,
    *,
    seed: int = 0,
    height: int = 512,
    width: int = 1024,
) -> str:
    """
    Writes ``num_images`` images and labels of ``split`` into :func:`textured_shapes_split_dir`
    unless that folder already exists: then it was generated with the same parameters, and is
    returned as is.

    Safe against crashes and concurrent callers: the split is written into a temporary sibling
    directory and renamed into place, so an existing split directory is always complete. If
    another process finishes first, this call's copy is discarded.

    Returns:
        The split directory, with ``images/``, ``labels/`` and ``parameters.json``.
    """

    def write(folder: str) -> None:
        image_dir = os.path.join(folder, "images")
        label_dir = os.path.join(folder, "labels")
        os.makedirs(image_dir)
        os.makedirs(label_dir)
        for index in range(num_images):
            image, label = generate_textured_shapes_image(seed, split, index, height, width)
            stem = split_file_stem(split, index)
            write_rgb_png(os.path.join(image_dir, stem + ".png"), image)
            label_path = os.path.join(label_dir, stem + ".png")
            if not cv2.imwrite(label_path, label):
                raise OSError(f"Could not write {label_path}")

    return write_split_once(
        root,
        textured_shapes_split_dir(root, split, num_images, seed=seed, height=height, width=width),
        split,
        _split_parameters(split, num_images, seed, height, width),
        write,
        f"{num_images} {height}x{width} images of the textured-shapes '{split}' split",
    )


def load_textured_shapes(split_dir: str) -> list[dict]:
    """
    Lists a generated split (a folder returned by :func:`generate_textured_shapes_split`) as
    detectron2 dataset dicts, sorted by file name: :func:`load_folder_dataset` of its
    ``images/`` and ``labels/``.

    Returns:
        One dict per image with ``file_name`` (RGB PNG), ``sem_seg_file_name`` (label PNG),
        ``height``, ``width`` and ``image_id`` (the file stem, e.g. ``"train_0007"``).

    Raises:
        FileNotFoundError: if the split has no images, or an image no label.
    """
    return load_folder_dataset(
        os.path.join(split_dir, "images"), os.path.join(split_dir, "labels"), image_ext=".png"
    )


def _generate_and_load(
    root: str, split: str, num_images: int, seed: int, height: int, width: int
) -> list[dict]:
    """The function registered in DatasetCatalog: generates the split on first use, loads it."""
    return load_textured_shapes(
        generate_textured_shapes_split(
            root, split, num_images, seed=seed, height=height, width=width
        )
    )


def register_textured_shapes(
    root: str | None = None,
    *,
    num_train: int = 48,
    num_val: int = 12,
    seed: int = 0,
    height: int = 512,
    width: int = 1024,
    prefix: str = "textured_shapes_sem_seg",
) -> list[str]:
    """
    Registers ``f"{prefix}_train"`` and ``f"{prefix}_val"`` in detectron2's DatasetCatalog and
    MetadataCatalog. Cheap: nothing is generated until ``DatasetCatalog.get`` is called.

    Idempotent: names already registered with the same root and parameters are left alone.

    Args:
        root: dataset directory; defaults to :func:`default_dataset_root`.
        num_train, num_val: number of images per split.
        seed: dataset seed.
        height, width: image size in pixels.
        prefix: name prefix of the registered datasets.

    Returns:
        The registered dataset names, train first.

    Raises:
        ValueError: if a name is already registered with a different root or parameters.
    """
    root = resolve_dataset_root(root)

    def split_dir(split: str, num_images: int) -> str:
        return textured_shapes_split_dir(
            root, split, num_images, seed=seed, height=height, width=width
        )

    def metadata(split_dir: str) -> dict:
        return {
            "stuff_classes": list(CLASSES),
            "stuff_colors": [list(color) for color in COLORS],
            "ignore_label": IGNORE_LABEL,
            "evaluator_type": "sem_seg",
            "dataset_root": root,
            "image_root": os.path.join(split_dir, "images"),
            "sem_seg_root": os.path.join(split_dir, "labels"),
        }

    return register_generated_splits(
        prefix,
        {"train": num_train, "val": num_val},
        split_dir,
        lambda split, num_images, name: _generate_and_load(
            root, split, num_images, seed, height, width
        ),
        metadata,
    )
