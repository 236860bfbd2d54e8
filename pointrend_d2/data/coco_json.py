"""
Users' COCO-format instance json files, checked when first loaded, with errors that name the
file, the image or annotation and the likely cause; and their registration
(:func:`register_coco_instances`, detectron2's signature).

:func:`validate_coco_json` checks that the file exists and is JSON with ``images``,
``annotations`` and ``categories``; that every image file exists under ``image_root`` (and that
the first few have the json's size as displayed, read from their headers: see
:mod:`pointrend_d2.data.image_io` for EXIF orientation); that every annotation names an existing
image and category; that polygons are flat lists of at least 3 points inside the image (with a
margin) and RLE sizes the image's; and that every box lies in its image (with the same margin)
and covers its segmentation, give or take :data:`BOX_TOLERANCE` pixels: detectron2 clips boxes
to the image and trains a mask inside its box, so a box elsewhere drops or cuts its instance
without a word. Point annotations (``point_coords``, ``point_labels``: PointSup's form, see
:mod:`pointrend_d2.data.point_annotations`) must lie in their image and box, with labels 0 or 1.
Annotations of zero area (no polygon or empty ones, an empty RLE, ``area`` 0, a
bbox of zero width or height) are skipped with one warning that counts them. Dataset spec files
(``DATASETS.FOLDER_SPECS``, :mod:`pointrend_d2.data.folder`) register COCO datasets through
:func:`register_coco_instances`.
"""

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json
from pycocotools import mask as mask_util

from .image_io import read_image_geometry, size_mismatch_hint
from .point_annotations import POINT_KEYS, PointAnnotationCheck, is_finite_number
from .registration import register_dataset

__all__ = [
    "BOX_TOLERANCE",
    "load_checked_coco_json",
    "register_coco_instances",
    "validate_coco_json",
]

logger = logging.getLogger(__name__)

# Polygon and box coordinates may lie this fraction of the image size (plus one pixel) outside it.
_OUTSIDE_MARGIN = 0.1
# How far (pixels) a segmentation may reach beyond its box: rounding, as boxes computed from
# polygons rasterised by pycocotools differ from the polygon's extent by less than a pixel.
BOX_TOLERANCE = 2.0
# How many images (the first, by id) have their size read from the file header by default.
_DEFAULT_SIZE_CHECKS = 16
# How many missing images or skipped annotations an error or warning names.
_NAMED = 3


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
        expected = (image["height"], image["width"])
        try:
            geometry = read_image_geometry(path)
            if geometry.size != expected:
                geometry = read_image_geometry(path, exact=True)
        except ValueError as e:
            raise ValueError(f"COCO json {json_file}: image {image['id']}: {e}") from e
        if geometry.size != expected:
            raise ValueError(
                f"COCO json {json_file}: image {image['id']} ({path}) is {geometry.describe()} "
                f"but the json says {expected[0]}x{expected[1]}; "
                f"{size_mismatch_hint(expected, geometry, 'the json')}"
            )
    return images_by_id


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
    return (0, value, "") if is_finite_number(value) else (1, 0, str(value))


def _sorted_ids(ids) -> list:
    return sorted(ids, key=_id_key)


def _check_polygons(where: str, polygons: list, height: int, width: int) -> tuple[float, tuple]:
    """
    Checks a polygon segmentation; returns its (shoelace) area, 0 for no or empty polygons, and
    its extent (x0, y0, x1, y1), None for those.
    """
    if polygons and all(is_finite_number(v) for v in polygons):
        raise ValueError(
            f"{where}: 'segmentation' is a flat list of {len(polygons)} numbers; it must be a "
            "list of polygons, each a flat list [x1, y1, x2, y2, ...]: wrap it in another list"
        )
    area, xs_all, ys_all = 0.0, [], []
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not all(is_finite_number(v) for v in polygon):
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
        xs_all += xs
        ys_all += ys
    extent = (min(xs_all), min(ys_all), max(xs_all), max(ys_all)) if xs_all else None
    return area, extent


def _check_rle(where: str, rle: dict, height: int, width: int) -> tuple[int, tuple]:
    """
    Checks an RLE segmentation (compressed or not); returns its area in pixels and its extent
    (x0, y0, x1, y1), None for an empty mask.
    """
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
        compressed = mask_util.frPyObjects(rle, height, width)
    elif isinstance(counts, str | bytes):
        compressed = {"size": size, "counts": counts}
    else:
        raise ValueError(
            f"{where}: RLE counts must be a string or a list, got {type(counts).__name__}"
        )
    area = int(mask_util.area(compressed))
    x, y, box_width, box_height = mask_util.toBbox(compressed).tolist()
    return area, (x, y, x + box_width, y + box_height) if area else None


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
    points = PointAnnotationCheck(json_file, BOX_TOLERANCE)
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

        if not _check_annotation_geometry(where, annotation, image["height"], image["width"]):
            zero_area.append(annotation_id)
        points.check(where, annotation, image["height"], image["width"])
    points.finish()
    return zero_area


def _check_annotation_geometry(where: str, annotation: dict, height: int, width: int) -> bool:
    """Checks an annotation's box and segmentation; whether it has an area (False: skipped)."""
    if annotation.get("ignore", 0):
        raise ValueError(
            f"{where}: 'ignore' is set, which detectron2 does not support; mark regions to "
            "ignore as crowd ('iscrowd': 1) instead"
        )
    bbox = annotation.get("bbox")
    if bbox is None:
        raise ValueError(
            f"{where}: no 'bbox'; every COCO annotation needs [x, y, width, height] (from a "
            "mask: pycocotools.mask.toBbox)"
        )
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(is_finite_number, bbox))):
        raise ValueError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(
            f"{where}: 'bbox' {bbox} has a negative width or height; COCO boxes are "
            "[x, y, width, height], not [x0, y0, x1, y1]"
        )
    area = annotation.get("area")
    if area is not None and (not is_finite_number(area) or area < 0):
        raise ValueError(f"{where}: 'area' must be a non-negative number, got {area!r}")

    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        segmentation_area, extent = _check_polygons(where, segmentation, height, width)
    elif isinstance(segmentation, dict):
        segmentation_area, extent = _check_rle(where, segmentation, height, width)
    elif segmentation is None:
        segmentation_area, extent = None, None
    else:
        raise ValueError(
            f"{where}: 'segmentation' must be a list of polygons or an RLE dict, got a "
            f"{type(segmentation).__name__}"
        )
    if bbox[2] == 0 or bbox[3] == 0 or area == 0 or segmentation_area == 0:
        return False
    _check_box_placement(where, bbox, extent, height, width)
    return True


def _check_box_placement(where: str, bbox: list, extent, height: int, width: int) -> None:
    """
    Checks that a box lies in its image (with the margin polygons have) and covers its
    segmentation's ``extent`` (x0, y0, x1, y1; None: no segmentation) within the image.
    """
    x0, y0, x1, y1 = bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]
    inside = _inside([x0, x1], [y0, y1], height, width)
    box = f"{where}: 'bbox' {bbox} (x {x0:g}..{x1:g}, y {y0:g}..{y1:g})"
    image = f"the {height}x{width} (HxW) image"
    if extent is None:
        if not inside:
            hint = (
                "x and y swapped? COCO boxes are [x, y, width, height], x the column"
                if _inside([y0, y1], [x0, x1], height, width)
                else "does the annotation belong to another image, or are the image's height "
                "and width in the json wrong?"
            )
            raise ValueError(f"{box} lies far outside {image}; {hint}")
        return
    ex0, ey0 = max(extent[0], 0), max(extent[1], 0)
    ex1, ey1 = min(extent[2], width), min(extent[3], height)
    covers = (x0 <= ex0 + BOX_TOLERANCE and y0 <= ey0 + BOX_TOLERANCE) and (
        x1 >= ex1 - BOX_TOLERANCE and y1 >= ey1 - BOX_TOLERANCE
    )
    if covers and inside:
        return
    # What detectron2 makes of the box: clipped to the image, an instance dropped if empty.
    if covers:
        consequence = "detectron2 would clip it to the image, a box far larger than the object"
    elif min(x1, width) <= max(x0, 0) or min(y1, height) <= max(y0, 0):
        consequence = (
            "detectron2 would clip the box to the image, leaving nothing of it, and drop the "
            "annotation from training"
        )
    else:
        consequence = (
            "detectron2 would clip the box to the image and train the mask only inside it, "
            "cutting the mask away"
        )
    segmentation = f"x {ex0:g}..{ex1:g}, y {ey0:g}..{ey1:g}"
    problem = (
        f"lies far outside {image}, while its segmentation lies at {segmentation}"
        if not inside
        else f"does not cover its segmentation, which lies at {segmentation} in {image}"
    )
    raise ValueError(
        f"{box} {problem}: {consequence}. Recompute the bbox from the segmentation "
        "(pycocotools.mask.toBbox of its RLE)"
    )


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
        records = load_coco_json(
            json_file, image_root, dataset_name, extra_annotation_keys=["id", *POINT_KEYS]
        )
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
    return register_dataset(
        name,
        functools.partial(load_checked_coco_json, json_file, image_root, name),
        {"json_file": json_file, "image_root": image_root, "evaluator_type": "coco", **metadata},
        identity=("json_file", "image_root"),
    )
