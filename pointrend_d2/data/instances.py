"""
Instance-segmentation datasets in COCO format: the embedded "textured shapes" instances, and
any COCO json registered with checks whose errors name the file, the image or annotation and
the likely cause.

Textured-shapes instances
-------------------------
The images of :mod:`pointrend_d2.data.textured_shapes` (the same generator, pixel for pixel),
with one instance per painted shape of the thing classes ``blob``, ``ring``, ``wire``, ``dot``
(json category ids 1-4, the semantic label values; detectron2 contiguous ids 0-3). Later shapes
occlude earlier ones: an instance's mask is its visible pixels, maybe in several pieces (still
one instance, one RLE); void patches remove their pixels from every instance. Instances of
fewer than :data:`MIN_INSTANCE_AREA` visible pixels are dropped. Rings keep their holes (use
``INPUT.MASK_FORMAT bitmask``), wires are 1-4 px wide, dots are small and many, and shapes
touch and overlap.

On disk, one folder per split and set of generation parameters, cached and written atomically
like the semantic splits::

    <root>/instances_<split>-<key>/images/<split>_0000.png   RGB, uint8
    <root>/instances_<split>-<key>/instances.json            COCO json, masks as compressed RLE
    <root>/instances_<split>-<key>/parameters.json

``<key>`` hashes :data:`INSTANCES_VERSION`, the image generator's
:data:`~pointrend_d2.data.textured_shapes.DATASET_VERSION`, split, number of images, seed,
height and width.

:func:`register_textured_shapes_instances` registers ``textured_shapes_instances_train`` (64
images) and ``textured_shapes_instances_val`` (16 images) of 256 x 384 px (seed 0) when
``pointrend_d2`` is imported; they are generated on first use, in about 2.5 s and 0.6 s on one
CPU core. Their instances (measured)::

    split   images   blob   ring   wire   dot   total   per image (min-max)   dots per image
    train       64    564    657    258   726    2205   34.5 (28-42)          8-15
    val         16    142    161     70   188     561   35.1 (26-40)          8-14

Median areas (train): blob 2500 px, ring 861, wire 245, dot 149. In pieces (occluded across):
215 rings, 203 blobs, 53 wires, 12 dots of train; with a hole: 219 rings (the others are open
arcs, or cut open by a later shape or the image border), 132 blobs (a later shape inside).

COCO json files
---------------
:func:`register_coco_instances` has detectron2's signature and registers detectron2's
``load_coco_json`` records, after :func:`validate_coco_json` has checked the file: it must exist
and be JSON with ``images``, ``annotations`` and ``categories``; every image file must exist
under ``image_root`` (and the first few must have the json's size, read from their headers);
every annotation must name an existing image and category, polygons must be flat lists of at
least 3 points inside the image (with a margin), RLE sizes must be the image's. Annotations of
zero area (no polygon or empty ones, an empty RLE, ``area`` 0, a bbox of zero width or height)
are skipped with one warning that counts them. Dataset spec files (``DATASETS.FOLDER_SPECS``,
:mod:`pointrend_d2.data.folder`) register COCO datasets through it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json
from PIL import Image
from pycocotools import mask as mask_util

from . import textured_shapes
from .textured_shapes import (
    CLASSES,
    COLORS,
    _file_stem,
    _keyed_dir,
    _write_once,
    _write_rgb_png,
    default_dataset_root,
    generate_textured_shapes_instances,
    register_generated_splits,
)

__all__ = [
    "INSTANCES_VERSION",
    "MIN_INSTANCE_AREA",
    "THING_CLASSES",
    "THING_COLORS",
    "generate_textured_shapes_instances_split",
    "load_checked_coco_json",
    "register_coco_instances",
    "register_textured_shapes_instances",
    "textured_shapes_instance_annotations",
    "textured_shapes_instances_json",
    "textured_shapes_instances_split_dir",
    "validate_coco_json",
]

logger = logging.getLogger(__name__)

# Bump whenever the annotations written for the same images change; part of each folder's key.
INSTANCES_VERSION = "textured_shapes_instances_v1"
# Every class but background is a thing; its json category id is its semantic label value.
THING_CLASSES: tuple[str, ...] = CLASSES[1:]
THING_COLORS: tuple[tuple[int, int, int], ...] = COLORS[1:]
# Instances with fewer visible pixels than this are dropped.
MIN_INSTANCE_AREA = 4

# Polygon coordinates may lie this fraction of the image size (plus one pixel) outside it.
_OUTSIDE_MARGIN = 0.1
# How many images (the first, by id) have their size read from the file header by default.
_DEFAULT_SIZE_CHECKS = 16
# How many missing images or skipped annotations an error or warning names.
_NAMED = 3


# ------------------------------------------------------------------------------------------
# Textured-shapes instances
# ------------------------------------------------------------------------------------------


def textured_shapes_instance_annotations(
    label: np.ndarray, instance_map: np.ndarray, *, min_area: int = MIN_INSTANCE_AREA
) -> list[dict]:
    """
    COCO annotations of one image from :func:`generate_textured_shapes_instances`'s label and
    instance map, in painting order: ``category_id`` (the semantic label value, 1-4),
    ``segmentation`` (compressed RLE, ``counts`` a str), ``area`` (pixels), ``bbox`` ([x, y, w,
    h] of the mask) and ``iscrowd`` 0; no ``id`` nor ``image_id``. Instances of fewer than
    ``min_area`` pixels are left out.
    """
    annotations = []
    instance_ids, areas = np.unique(instance_map, return_counts=True)
    for instance_id, area in zip(instance_ids.tolist(), areas.tolist(), strict=True):
        if instance_id == 0 or area < min_area:
            continue
        mask = instance_map == instance_id
        class_ids = np.unique(label[mask])
        if class_ids.size != 1 or not 1 <= class_ids[0] < len(CLASSES):
            raise AssertionError(f"Instance {instance_id} has the labels {class_ids.tolist()}")
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append(
            {
                "category_id": int(class_ids[0]),
                "segmentation": {
                    "size": [int(v) for v in rle["size"]],
                    "counts": rle["counts"].decode("ascii"),
                },
                "area": int(area),
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    return annotations


def _instances_parameters(split: str, num_images: int, seed: int, height: int, width: int) -> dict:
    """Every parameter the files of an instance split depend on."""
    return {
        "version": INSTANCES_VERSION,
        "image_version": textured_shapes.DATASET_VERSION,
        "split": split,
        "num_images": num_images,
        "seed": seed,
        "height": height,
        "width": width,
    }


def textured_shapes_instances_split_dir(
    root: str, split: str, num_images: int, *, seed: int = 0, height: int = 256, width: int = 384
) -> str:
    """
    The folder of an instance split generated with these parameters:
    ``<root>/instances_<split>-<key>``, ``<key>`` a hash of all of them, of
    :data:`INSTANCES_VERSION` and of the image generator's version. Nothing is read or written.
    """
    parameters = _instances_parameters(split, num_images, seed, height, width)
    return _keyed_dir(root, f"instances_{split}", parameters)


def textured_shapes_instances_json(split_dir: str) -> str:
    """The COCO json of an instance split folder: ``<split_dir>/instances.json``."""
    return os.path.join(split_dir, "instances.json")


def generate_textured_shapes_instances_split(
    root: str,
    split: str,
    num_images: int,
    *,
    seed: int = 0,
    height: int = 256,
    width: int = 384,
) -> str:
    """
    Writes ``num_images`` images of ``split`` and their COCO json into
    :func:`textured_shapes_instances_split_dir` unless that folder exists: then it was generated
    with the same parameters and is returned as is. Written into a temporary sibling folder and
    renamed into place, so an existing folder is always complete (see
    :func:`~pointrend_d2.data.textured_shapes.generate_textured_shapes_split`).

    Returns:
        The split folder, with ``images/``, ``instances.json`` and ``parameters.json``.
    """
    split_dir = textured_shapes_instances_split_dir(
        root, split, num_images, seed=seed, height=height, width=width
    )
    parameters = _instances_parameters(split, num_images, seed, height, width)

    def write(folder: str) -> None:
        image_dir = os.path.join(folder, "images")
        os.makedirs(image_dir)
        images, annotations = [], []
        for index in range(num_images):
            image, label, instance_map = generate_textured_shapes_instances(
                seed, split, index, height, width
            )
            file_name = _file_stem(split, index) + ".png"
            _write_rgb_png(os.path.join(image_dir, file_name), image)
            image_id = index + 1
            images.append(
                {"id": image_id, "file_name": file_name, "height": height, "width": width}
            )
            for annotation in textured_shapes_instance_annotations(label, instance_map):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
        coco = {
            "info": {
                "description": f"Textured shapes instances, split {split!r}",
                "version": INSTANCES_VERSION,
                "parameters": parameters,
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [
                {"id": CLASSES.index(name), "name": name, "supercategory": "shape"}
                for name in THING_CLASSES
            ],
        }
        with open(textured_shapes_instances_json(folder), "w") as f:
            json.dump(coco, f)

    return _write_once(
        root,
        split_dir,
        split,
        parameters,
        write,
        f"{num_images} {height}x{width} images of the textured-shapes instances '{split}' split",
    )


def _generate_and_load_instances(
    root: str, split: str, num_images: int, seed: int, height: int, width: int, name: str
) -> list[dict]:
    """The function registered in DatasetCatalog: generates the split on first use, loads it."""
    split_dir = generate_textured_shapes_instances_split(
        root, split, num_images, seed=seed, height=height, width=width
    )
    return load_checked_coco_json(
        textured_shapes_instances_json(split_dir), os.path.join(split_dir, "images"), name
    )


def register_textured_shapes_instances(
    root: str | None = None,
    *,
    num_train: int = 64,
    num_val: int = 16,
    seed: int = 0,
    height: int = 256,
    width: int = 384,
    prefix: str = "textured_shapes_instances",
) -> list[str]:
    """
    Registers ``f"{prefix}_train"`` and ``f"{prefix}_val"`` in detectron2's DatasetCatalog and
    MetadataCatalog (``thing_classes``, ``thing_colors``, ``evaluator_type="coco"``, ``json_file``,
    ``image_root``, ``thing_dataset_id_to_contiguous_id``, ``dataset_root``). Cheap: a split is
    generated when ``DatasetCatalog.get`` first asks for it, so ``json_file`` names the file it
    will be written to, and exists once the dataset has been loaded.

    Idempotent: names already registered with the same root and parameters are left alone.

    Args:
        root: dataset directory; defaults to
            :func:`~pointrend_d2.data.textured_shapes.default_dataset_root`.
        num_train, num_val: number of images per split.
        seed: dataset seed.
        height, width: image size in pixels.
        prefix: name prefix of the registered datasets.

    Returns:
        The registered dataset names, train first.

    Raises:
        ValueError: if a name is already registered with a different root or parameters.
    """
    root = os.path.abspath(os.path.expanduser(root if root is not None else default_dataset_root()))

    def split_dir(split: str, num_images: int) -> str:
        return textured_shapes_instances_split_dir(
            root, split, num_images, seed=seed, height=height, width=width
        )

    def metadata(split_dir: str) -> dict:
        return {
            "thing_classes": list(THING_CLASSES),
            "thing_colors": [list(color) for color in THING_COLORS],
            "thing_dataset_id_to_contiguous_id": {
                CLASSES.index(c): i for i, c in enumerate(THING_CLASSES)
            },
            "evaluator_type": "coco",
            "dataset_root": root,
            "json_file": textured_shapes_instances_json(split_dir),
            "image_root": os.path.join(split_dir, "images"),
        }

    return register_generated_splits(
        prefix,
        {"train": num_train, "val": num_val},
        split_dir,
        lambda split, num_images, name: _generate_and_load_instances(
            root, split, num_images, seed, height, width, name
        ),
        metadata,
    )


# ------------------------------------------------------------------------------------------
# Checked COCO json
# ------------------------------------------------------------------------------------------


def _read_coco_json(json_file: str) -> dict:
    """The parsed file; FileNotFoundError or ValueError naming it and what is wrong."""
    if not os.path.isfile(json_file):
        if os.path.isdir(json_file):
            raise FileNotFoundError(
                f"COCO json {json_file} is a folder: give the annotation file in it, "
                f"e.g. {os.path.join(json_file, 'instances_train2017.json')}"
            )
        parent = os.path.dirname(os.path.abspath(json_file))
        if os.path.isdir(parent):
            found = sorted(name for name in os.listdir(parent) if name.endswith(".json"))
            where = (
                f"{parent} holds {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}"
                if found
                else f"{parent} holds no .json file"
            )
        else:
            where = f"its folder {parent} does not exist either"
        relative = (
            f" (a relative path, read from the working directory {os.getcwd()})"
            if not os.path.isabs(json_file)
            else ""
        )
        raise FileNotFoundError(f"COCO json {json_file} does not exist{relative}: {where}")
    with open(json_file, "rb") as f:
        data = f.read()
    if not data.strip():
        raise ValueError(f"COCO json {json_file} is empty (an interrupted download or write?)")
    try:
        coco = json.loads(data)
    except UnicodeDecodeError as e:
        raise ValueError(f"COCO json {json_file} is not UTF-8 text ({e}): not a json file?") from e
    except json.JSONDecodeError as e:
        ends_early = e.pos >= len(data.rstrip()) - 1 or "Unterminated" in e.msg
        advice = (
            "the file ends early: truncated by an interrupted download or write?"
            if ends_early
            else "fix the file or write it again"
        )
        raise ValueError(
            f"COCO json {json_file} is not valid JSON: {e.msg} (line {e.lineno}, column "
            f"{e.colno}); {advice}"
        ) from e
    if isinstance(coco, list):
        raise ValueError(
            f"COCO json {json_file} is a list of {len(coco)} entries, not an object with "
            "'images', 'annotations' and 'categories': a results (detections) file, not "
            "ground truth?"
        )
    missing = [
        key
        for key in ("images", "annotations", "categories")
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list)
    ]
    if missing:
        keys = sorted(coco) if isinstance(coco, dict) else type(coco).__name__
        raise ValueError(
            f"COCO json {json_file} is not a COCO instances file: it has no list {missing} "
            f"(its top level: {keys}); COCO instances files have 'images', 'annotations' and "
            "'categories' lists"
        )
    return coco


def _require_keys(json_file: str, what: str, entry, keys: Sequence[str]) -> None:
    if not isinstance(entry, dict):
        raise ValueError(
            f"COCO json {json_file}: {what} is a {type(entry).__name__}, not an object"
        )
    missing = [key for key in keys if key not in entry]
    if missing:
        raise ValueError(f"COCO json {json_file}: {what} has no {missing} (needs {list(keys)})")


def _image_root_hint(image_root: str, file_name: str) -> str:
    """Advice when no image is found under ``image_root``: where ``file_name`` is, if nearby."""
    basename = os.path.basename(file_name)
    if basename != file_name and os.path.isfile(os.path.join(image_root, basename)):
        return (
            f"{os.path.join(image_root, basename)} exists: drop the folders from the json's "
            "file_name, or point image_root at the folder they are relative to"
        )
    with os.scandir(image_root) as entries:
        subfolders = sorted(entry.path for entry in entries if entry.is_dir())
    for subfolder in subfolders:
        if os.path.isfile(os.path.join(subfolder, file_name)):
            return f"{os.path.join(subfolder, file_name)} exists: should image_root be {subfolder}?"
    return "is image_root the folder that holds the files named by the json's file_name?"


def _check_images(
    json_file: str, image_root: str, images: list, num_size_checks: int | None
) -> dict[int, dict]:
    """Images by id; errors for bad entries, missing files and (sampled) size mismatches."""
    images_by_id: dict = {}
    for position, image in enumerate(images):
        _require_keys(
            json_file, f"image #{position}", image, ("id", "file_name", "height", "width")
        )
        if image["id"] in images_by_id:
            raise ValueError(
                f"COCO json {json_file}: two images have the id {image['id']} "
                f"({images_by_id[image['id']]['file_name']} and {image['file_name']}); image ids "
                "must be unique"
            )
        images_by_id[image["id"]] = image

    missing = [
        image
        for image in images
        if not os.path.isfile(os.path.join(image_root, image["file_name"]))
    ]
    if missing:
        first = os.path.join(image_root, missing[0]["file_name"])
        if not os.path.isdir(image_root):
            raise FileNotFoundError(
                f"COCO json {json_file}: image_root {image_root} does not exist (the json lists "
                f"{len(images)} images, the first expected at {first})"
            )
        named = ", ".join(os.path.join(image_root, i["file_name"]) for i in missing[:_NAMED])
        more = f" and {len(missing) - _NAMED} more" if len(missing) > _NAMED else ""
        if len(missing) == len(images):
            raise FileNotFoundError(
                f"COCO json {json_file}: none of its {len(images)} images exist under "
                f"image_root {image_root}: {named}{more}; "
                f"{_image_root_hint(image_root, missing[0]['file_name'])}"
            )
        raise FileNotFoundError(
            f"COCO json {json_file}: {len(missing)} of its {len(images)} images do not exist "
            f"under image_root {image_root}: {named}{more}; restore them (an incomplete download "
            "or copy?) or remove them and their annotations from the json"
        )

    checked = sorted(images_by_id.values(), key=lambda i: i["id"])
    for image in checked if num_size_checks is None else checked[:num_size_checks]:
        path = os.path.join(image_root, image["file_name"])
        try:
            with Image.open(path) as opened:
                width, height = opened.size
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(
                f"COCO json {json_file}: image {image['id']} ({path}) cannot be read as an "
                f"image: {e}"
            ) from e
        expected = (image["height"], image["width"])
        if (height, width) != expected:
            hint = (
                "height and width swapped in the json, or the image stored rotated (EXIF "
                "orientation)?"
                if (width, height) == expected
                else "were the images resized after the json was written?"
            )
            raise ValueError(
                f"COCO json {json_file}: image {image['id']} ({path}) is {height}x{width} "
                f"(HxW) but the json says {expected[0]}x{expected[1]}; {hint}"
            )
    return images_by_id


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _polygon_area(polygon: list) -> float:
    x, y = np.asarray(polygon[0::2], dtype=np.float64), np.asarray(polygon[1::2], dtype=np.float64)
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _inside(xs: list, ys: list, height: int, width: int) -> bool:
    """Whether the points lie in the image, give or take :data:`_OUTSIDE_MARGIN`."""
    margin_x, margin_y = _OUTSIDE_MARGIN * width + 1, _OUTSIDE_MARGIN * height + 1
    return (-margin_x <= min(xs) and max(xs) <= width + margin_x) and (
        -margin_y <= min(ys) and max(ys) <= height + margin_y
    )


def _id_key(value) -> tuple:
    """Sort key of an id: numbers first, by value, then anything else by its text."""
    return (0, value, "") if _is_number(value) else (1, 0, str(value))


def _sorted_ids(ids) -> list:
    return sorted(ids, key=_id_key)


def _check_polygons(where: str, polygons: list, height: int, width: int) -> float:
    """Checks a polygon segmentation; returns its (shoelace) area, 0 for no or empty polygons."""
    if polygons and all(_is_number(v) for v in polygons):
        raise ValueError(
            f"{where}: 'segmentation' is a flat list of {len(polygons)} numbers; it must be a "
            "list of polygons, each a flat list [x1, y1, x2, y2, ...]: wrap it in another list"
        )
    area = 0.0
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
            raise ValueError(
                f"{where}: polygon {k} is not a flat list of finite numbers [x1, y1, x2, y2, ...]"
            )
        if not polygon:
            continue  # empty: no area
        if len(polygon) % 2:
            raise ValueError(
                f"{where}: polygon {k} has an odd number of coordinates ({len(polygon)}); a "
                "polygon is [x1, y1, x2, y2, ...], an x and a y per point (a value lost?)"
            )
        if len(polygon) < 6:
            raise ValueError(
                f"{where}: polygon {k} has {len(polygon) // 2} point(s); a polygon needs at "
                "least 3 (6 numbers): drop it, or encode tiny objects as RLE"
            )
        xs, ys = polygon[0::2], polygon[1::2]
        if not _inside(xs, ys, height, width):
            hint = (
                "x and y swapped? COCO polygons are [x1, y1, ...], x the column"
                if _inside(ys, xs, height, width)
                else "does the annotation belong to another image, or are the image's height "
                "and width in the json wrong?"
            )
            raise ValueError(
                f"{where}: polygon {k} reaches x {min(xs):g}..{max(xs):g}, y "
                f"{min(ys):g}..{max(ys):g}, far outside the {height}x{width} (HxW) image; {hint}"
            )
        area += _polygon_area(polygon)
    return area


def _check_rle(where: str, rle: dict, height: int, width: int) -> int:
    """Checks an RLE segmentation (compressed or not); returns its area in pixels."""
    if "size" not in rle or "counts" not in rle:
        raise ValueError(
            f"{where}: an RLE 'segmentation' needs 'size' and 'counts', got {sorted(rle)}"
        )
    size = rle["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise ValueError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
    if size != [height, width]:
        hint = (
            "'size' is [height, width]: swapped?"
            if size == [width, height]
            else "was the mask encoded for a resized image, or does it belong to another image?"
        )
        raise ValueError(
            f"{where}: RLE size {size} (HxW) differs from the image's {height}x{width}; {hint}"
        )
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
            raise ValueError(
                f"{where}: uncompressed RLE counts must be non-negative integers that add up to "
                f"height x width = {height * width} pixels"
            )
        return int(mask_util.area(mask_util.frPyObjects(rle, height, width)))
    if not isinstance(counts, str | bytes):
        raise ValueError(
            f"{where}: RLE counts must be a string or a list, got {type(counts).__name__}"
        )
    return int(mask_util.area({"size": size, "counts": counts}))


def _check_annotations(json_file: str, coco: dict, images_by_id: dict[int, dict]) -> list[int]:
    """Checks every annotation; returns the ids of those of zero area, in file order."""
    category_ids = set()
    for position, category in enumerate(coco["categories"]):
        _require_keys(json_file, f"category #{position}", category, ("id", "name"))
        if category["id"] in category_ids:
            raise ValueError(
                f"COCO json {json_file}: two categories have the id {category['id']}; category "
                "ids must be unique"
            )
        category_ids.add(category["id"])

    annotation_ids: set = set()
    zero_area = []
    for position, annotation in enumerate(coco["annotations"]):
        _require_keys(
            json_file, f"annotation #{position}", annotation, ("id", "image_id", "category_id")
        )
        annotation_id, image_id = annotation["id"], annotation["image_id"]
        where = f"COCO json {json_file}: annotation {annotation_id} (image {image_id}"
        if annotation_id in annotation_ids:
            raise ValueError(f"{where}): another annotation has the same id; ids must be unique")
        annotation_ids.add(annotation_id)
        image = images_by_id.get(image_id)
        if image is None:
            raise ValueError(
                f"{where}): no image has this id in 'images' (the json lists {len(images_by_id)} "
                "images); the annotation is orphaned or the image entry missing"
            )
        where += f", {image['file_name']})"

        category_id = annotation["category_id"]
        if category_id not in category_ids:
            known = _sorted_ids(category_ids)
            hint = (
                "0-based ids where 'categories' counts from 1? (an off-by-one in the conversion)"
                if category_id == 0 and min(known, default=0) == 1
                else "add the category to 'categories' or correct the annotation"
            )
            raise ValueError(
                f"{where}: category_id {category_id!r} is not in 'categories' (ids "
                f"{known[:20]}{' ...' if len(known) > 20 else ''}); {hint}"
            )

        if annotation.get("ignore", 0):
            raise ValueError(
                f"{where}: 'ignore' is set, which detectron2 does not support; mark regions to "
                "ignore as crowd ('iscrowd': 1) instead"
            )
        zero = False
        bbox = annotation.get("bbox")
        if bbox is None:
            raise ValueError(
                f"{where}: no 'bbox'; every COCO annotation needs [x, y, width, height] (from a "
                "mask: pycocotools.mask.toBbox)"
            )
        else:
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
                raise ValueError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
            if bbox[2] < 0 or bbox[3] < 0:
                raise ValueError(
                    f"{where}: 'bbox' {bbox} has a negative width or height; COCO boxes are "
                    "[x, y, width, height], not [x0, y0, x1, y1]"
                )
            zero |= bbox[2] == 0 or bbox[3] == 0
        area = annotation.get("area")
        if area is not None:
            if not _is_number(area) or area < 0:
                raise ValueError(f"{where}: 'area' must be a non-negative number, got {area!r}")
            zero |= area == 0

        segmentation = annotation.get("segmentation")
        height, width = image["height"], image["width"]
        if isinstance(segmentation, list):
            zero |= _check_polygons(where, segmentation, height, width) == 0
        elif isinstance(segmentation, dict):
            zero |= _check_rle(where, segmentation, height, width) == 0
        elif segmentation is not None:
            raise ValueError(
                f"{where}: 'segmentation' must be a list of polygons or an RLE dict, got a "
                f"{type(segmentation).__name__}"
            )
        if zero:
            zero_area.append(annotation_id)
    return zero_area


def validate_coco_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    num_size_checks: int | None = _DEFAULT_SIZE_CHECKS,
) -> list:
    """
    Checks a COCO instances json and its images (see the module docstring) without decoding
    any image: only the headers of the first ``num_size_checks`` images (by id; None: all) are
    read, to compare their size with the json's.

    Returns:
        The ids of the annotations of zero area, which :func:`load_checked_coco_json` skips.

    Raises:
        FileNotFoundError: the json, ``image_root`` or an image file does not exist.
        ValueError: the json is not valid JSON or not a COCO instances file, or an image,
            category or annotation in it is malformed (the message names the file, the image
            and annotation ids and, where it can, the likely cause).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    return _validate(json_file, image_root, num_size_checks)[1]


def _validate(
    json_file: str, image_root: str, num_size_checks: int | None
) -> tuple[list[str], list]:
    """:func:`validate_coco_json`; also returns the category names in id order."""
    coco = _read_coco_json(json_file)
    images_by_id = _check_images(json_file, image_root, coco["images"], num_size_checks)
    zero_area = _check_annotations(json_file, coco, images_by_id)
    categories = sorted(coco["categories"], key=lambda c: _id_key(c["id"]))
    return [c["name"] for c in categories], zero_area


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _without_log_messages(logger_name: str, prefix: str) -> Iterator[None]:
    drop = _DropMessages(prefix)
    target = logging.getLogger(logger_name)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


def load_checked_coco_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    dataset_name: str | None = None,
    *,
    num_size_checks: int | None = _DEFAULT_SIZE_CHECKS,
) -> list[dict]:
    """
    detectron2's ``load_coco_json(json_file, image_root, dataset_name)`` after
    :func:`validate_coco_json`, without the annotations of zero area (one warning counts them).
    With ``dataset_name``, ``thing_classes`` already in its metadata must be the json's
    category names (in id order), and ``load_coco_json`` sets its ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id``.

    Raises:
        See :func:`validate_coco_json`; ValueError also if the dataset's ``thing_classes``
        disagree with the json.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    names, zero_area = _validate(json_file, image_root, num_size_checks)
    skipped = set(zero_area)
    if dataset_name is not None:
        given = MetadataCatalog.get(dataset_name).get("thing_classes")
        if given is not None and list(given) != names:
            raise ValueError(
                f"Dataset {dataset_name!r}: its thing_classes {list(given)} differ from the "
                f"categories of COCO json {json_file} (by id: {names}); drop thing_classes "
                "from its metadata or make them match"
            )
    if skipped:
        logger.warning(
            "COCO json %s: skipped %d annotation(s) of zero area (no or empty segmentation, "
            "area 0 or a bbox of zero width or height), ids %s%s",
            json_file,
            len(skipped),
            _sorted_ids(skipped)[:_NAMED],
            " ..." if len(skipped) > _NAMED else "",
        )
    # Annotations whose polygons are all empty are also dropped by load_coco_json, with a
    # warning of its own: they are among those counted above (all other invalid polygons are
    # errors by now).
    with _without_log_messages("detectron2.data.datasets.coco", "Filtered out"):
        records = load_coco_json(json_file, image_root, dataset_name, extra_annotation_keys=["id"])
    for record in records:
        kept = []
        for annotation in record["annotations"]:
            if annotation.pop("id") not in skipped:
                kept.append(annotation)
        record["annotations"] = kept
    return records


def register_coco_instances(
    name: str, metadata: dict, json_file: str | os.PathLike, image_root: str | os.PathLike
) -> str:
    """
    detectron2's ``register_coco_instances``, with the records of
    :func:`load_checked_coco_json` (checked when the dataset is first loaded; errors name the
    file and the cause). Metadata as detectron2's: ``json_file``, ``image_root``,
    ``evaluator_type="coco"`` and ``metadata``. Registering the same name with the same files
    again does nothing.

    Returns:
        ``name``.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: ``name`` is registered with other files.
    """
    if not isinstance(name, str):
        raise TypeError(f"register_coco_instances: name must be a str, got {name!r}")
    for what, value in (("json_file", json_file), ("image_root", image_root)):
        if not isinstance(value, str | os.PathLike):
            raise TypeError(f"Dataset {name!r}: {what} must be a path, got {value!r}")
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if name in DatasetCatalog.list():
        registered = MetadataCatalog.get(name)
        if (registered.get("json_file"), registered.get("image_root")) != (json_file, image_root):
            raise ValueError(
                f"Dataset {name!r} is already registered with json_file "
                f"{registered.get('json_file')!r} and image_root "
                f"{registered.get('image_root')!r}, not {json_file!r} and {image_root!r}"
            )
        return name
    DatasetCatalog.register(
        name, functools.partial(load_checked_coco_json, json_file, image_root, name)
    )
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
    )
    return name
