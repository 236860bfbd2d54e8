"""
Points sampled from full annotations, seeded and reproducible: point-supervised training data
made from data that has masks or dense labels, to compare the two on the same images.

* Instances (:func:`coco_with_points`, :func:`write_point_annotations`,
  ``tools/make_point_annotations.py``): P points uniformly
  at random in each object's box, labelled from its mask (1 inside, 0 outside), PointSup's
  simulated annotation; the points replace the segmentation.
* Semantic (:func:`sparse_label_map`, :func:`write_sparse_label_folder`,
  ``tools/make_point_labels.py``): N pixels per class per
  image, uniformly among the pixels of that class, the ignore value elsewhere.

Each object's (each image's) points come from a generator seeded by the seed and the annotation
id (the label file's path), so they depend neither on the order of the objects nor on the
others, and the first P of P' > P points per object are the P points (the N points per class are
among the N'): fewer points are a subset of more.
"""

import copy
import json
import os
import zlib

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from .coco_json import validate_coco_json
from .semantic_mapper import read_label_file

__all__ = [
    "annotation_mask",
    "coco_with_points",
    "point_generator",
    "sample_box_points",
    "sparse_label_map",
    "write_point_annotations",
    "write_sparse_label_folder",
]

# Decimals of the written point coordinates (a hundredth of a pixel); the labels are read at the
# rounded points, so they are exact for the points as written.
_DECIMALS = 2


def point_generator(seed: int, key) -> np.random.Generator:
    """The generator of one object's or image's points: seeded by ``seed`` and ``key``, a
    non-negative integer id as is, anything else by the CRC-32 of its text."""
    if not (isinstance(key, int) and not isinstance(key, bool) and key >= 0):
        key = zlib.crc32(str(key).encode("utf-8"))
    return np.random.default_rng([seed, key])


def annotation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of a COCO segmentation: polygons, or an RLE (compressed or
    not)."""
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_util.decode(rle).astype(bool)


def sample_box_points(
    mask: np.ndarray, bbox: list, num_points: int, generator: np.random.Generator
) -> tuple[list, list]:
    """
    ``num_points`` points uniformly at random in a box, labelled from a mask.

    Args:
        mask: (H, W) bool mask of the object in its image.
        bbox: the box ``[x, y, width, height]`` in the image's pixel coordinates.
        num_points: P.
        generator: the object's generator (:func:`point_generator`).

    Returns:
        point_coords: P ``[x, y]``, rounded to a hundredth of a pixel, in the box.
        point_labels: P labels, 1 where the pixel that contains the point is in the mask
            (0 on the image's right or bottom edge, outside every pixel).
    """
    x0, y0, box_width, box_height = bbox
    uniform = generator.random((num_points, 2))
    x = np.round(x0 + uniform[:, 0] * box_width, _DECIMALS)
    y = np.round(y0 + uniform[:, 1] * box_height, _DECIMALS)
    height, width = mask.shape
    cols, rows = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    labels = np.zeros(num_points, np.int64)
    labels[inside] = mask[rows[inside], cols[inside]]
    return np.stack([x, y], axis=1).tolist(), labels.tolist()


def coco_with_points(coco: dict, num_points: int, seed: int, skip_ids=()) -> dict:
    """
    A COCO instances json (checked, see :func:`pointrend_d2.data.validate_coco_json`) with
    ``num_points`` points per object instead of its segmentation (:func:`sample_box_points`,
    generator :func:`point_generator` of ``seed`` and the annotation id). Crowd regions are kept
    as they are; the annotations ``skip_ids`` (those of zero area, which training skips) are
    left out.

    Raises:
        ValueError: naming an annotation without a segmentation to label its points from.
    """
    images = {image["id"]: image for image in coco["images"]}
    skipped = set(skip_ids)
    annotations = []
    for annotation in coco["annotations"]:
        if annotation["id"] in skipped:
            continue
        if annotation.get("iscrowd", 0):
            annotations.append(copy.deepcopy(annotation))
            continue
        if not annotation.get("segmentation"):
            raise ValueError(
                f"Annotation {annotation['id']} (image {annotation['image_id']}) has no "
                "segmentation to label points from: points are labelled from masks"
            )
        image = images[annotation["image_id"]]
        mask = annotation_mask(annotation["segmentation"], image["height"], image["width"])
        coords, labels = sample_box_points(
            mask, annotation["bbox"], num_points, point_generator(seed, annotation["id"])
        )
        pointed = {k: v for k, v in annotation.items() if k != "segmentation"}
        annotations.append({**pointed, "point_coords": coords, "point_labels": labels})
    return {**coco, "annotations": annotations}


def sparse_label_map(
    labels: np.ndarray, points_per_class: int, generator: np.random.Generator, ignore_value: int
) -> np.ndarray:
    """
    Sparse point labels of a dense label map: ``points_per_class`` pixels of each class present
    (all of a class with fewer), chosen uniformly among its pixels; ``ignore_value`` elsewhere.

    Args:
        labels: (H, W) integer labels.
        points_per_class: N.
        generator: the image's generator (:func:`point_generator`).
        ignore_value: the label of unlabelled (and ignored) pixels.

    Returns:
        (H, W) labels of ``labels``' dtype.
    """
    sparse = np.full_like(labels, ignore_value)
    flat_labels, flat_sparse = labels.reshape(-1), sparse.reshape(-1)
    for value in np.unique(flat_labels):
        if value == ignore_value:
            continue
        pixels = np.flatnonzero(flat_labels == value)
        # The N smallest of random keys: the N' > N smallest include them.
        keys = generator.random(pixels.size)
        if pixels.size > points_per_class:
            pixels = pixels[np.argpartition(keys, points_per_class - 1)[:points_per_class]]
        flat_sparse[pixels] = value
    return sparse


def write_point_annotations(
    json_file: str, image_root: str, output_file: str, num_points: int, seed: int
) -> dict:
    """
    Writes :func:`coco_with_points` of a COCO instances json, checked first as training checks it
    (:func:`~pointrend_d2.data.validate_coco_json`; its annotations of zero area are left out),
    to ``output_file``, which must not exist (it is written to a temporary file in its folder
    and renamed into place).

    Returns:
        Counts: ``objects`` (with points), ``crowd`` (kept without points), ``skipped`` (zero
        area), ``inside`` and ``outside`` (points by label).

    Raises:
        FileExistsError: ``output_file`` exists.
        FileNotFoundError, ValueError: see ``validate_coco_json``.
    """
    if os.path.exists(output_file):
        raise FileExistsError(
            f"{output_file} exists; give a new output file (nothing is overwritten)"
        )
    skipped = validate_coco_json(json_file, image_root, num_size_checks=0)
    with open(json_file, encoding="utf-8") as f:
        coco = coco_with_points(json.load(f), num_points, seed, skip_ids=skipped)
    temporary_file = f"{output_file}.{os.getpid()}.tmp"
    with open(temporary_file, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    os.rename(temporary_file, output_file)
    labels = [label for a in coco["annotations"] for label in a.get("point_labels", [])]
    return {
        "objects": sum("point_coords" in a for a in coco["annotations"]),
        "crowd": sum(bool(a.get("iscrowd", 0)) for a in coco["annotations"]),
        "skipped": len(skipped),
        "inside": sum(labels),
        "outside": len(labels) - sum(labels),
    }


def write_sparse_label_folder(
    label_dir: str,
    output_dir: str,
    points_per_class: int,
    seed: int,
    ignore_value: int,
    label_ext: str = ".png",
) -> int:
    """
    Writes :func:`sparse_label_map` of every label file under ``label_dir`` (recursively) to the
    same relative path under ``output_dir`` (PNG; the generator of each file is
    :func:`point_generator` of ``seed`` and its relative path).

    Returns:
        The number of files written.

    Raises:
        FileNotFoundError: ``label_dir`` holds no label file.
        ValueError: naming a file that is not a single-channel label image.
    """
    relative_paths = sorted(
        os.path.relpath(os.path.join(parent, name), label_dir)
        for parent, _, names in os.walk(label_dir)
        for name in names
        if name.lower().endswith(label_ext.lower())
    )
    if not relative_paths:
        raise FileNotFoundError(f"No {label_ext} label files found in {label_dir}")
    for relative_path in relative_paths:
        labels = read_label_file(os.path.join(label_dir, relative_path))
        sparse = sparse_label_map(
            labels, points_per_class, point_generator(seed, relative_path), ignore_value
        )
        output_file = os.path.join(output_dir, os.path.splitext(relative_path)[0] + ".png")
        os.makedirs(os.path.dirname(output_file), exist_ok=True)
        Image.fromarray(sparse).save(output_file)
    return len(relative_paths)
