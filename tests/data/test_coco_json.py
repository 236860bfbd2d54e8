"""
Tests of checked COCO json files: loading (detectron2's records), the errors that name the
file, image and annotation, zero-area annotations, boxes outside their image or segmentation,
images oriented by EXIF, registration and spec files.
"""

import copy
import json
import logging
import os
import re
import uuid

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json
from PIL import Image
from pycocotools import mask as mask_util

from pointrend_d2.data.coco_json import (
    load_checked_coco_json,
    register_coco_instances,
    validate_coco_json,
)
from pointrend_d2.data.folder import register_folder_datasets_from_spec

IMAGE_HEIGHT, IMAGE_WIDTH = 16, 20


def valid_coco(num_images: int = 2) -> dict:
    """A COCO instances json of ``num_images`` 16x20 images, a polygon and an RLE on each."""
    rle_mask = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
    rle_mask[2:6, 3:9] = 1
    rle = mask_util.encode(np.asfortranarray(rle_mask))
    rle = {"size": [IMAGE_HEIGHT, IMAGE_WIDTH], "counts": rle["counts"].decode("ascii")}
    annotations = []
    for image_id in range(1, num_images + 1):
        annotations += [
            {"id": 2 * image_id - 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
             "segmentation": [[1.0, 1.0, 10.0, 1.0, 10.0, 8.0, 1.0, 8.0]], "area": 63.0,
             "bbox": [1.0, 1.0, 9.0, 7.0]},
            {"id": 2 * image_id, "image_id": image_id, "category_id": 2, "iscrowd": 0,
             "segmentation": rle, "area": 24, "bbox": [3.0, 2.0, 6.0, 4.0]},
        ]  # fmt: skip
    return {
        "info": {},
        "images": [
            {"id": i, "file_name": f"img_{i}.png", "height": IMAGE_HEIGHT, "width": IMAGE_WIDTH}
            for i in range(1, num_images + 1)
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def write_coco(tmp_path, coco: dict | None = None, num_images: int = 2) -> tuple[str, str]:
    """Writes ``coco`` (default: :func:`valid_coco`) and its images; (json_file, image_root)."""
    coco = valid_coco(num_images) if coco is None else coco
    image_root = tmp_path / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    for image in coco["images"]:
        Image.new("RGB", (IMAGE_WIDTH, IMAGE_HEIGHT)).save(image_root / image["file_name"])
    json_file = tmp_path / "annotations.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(image_root)


def test_checked_loader_returns_detectron2_records(tmp_path, temporary_datasets):
    json_file, image_root = write_coco(tmp_path)
    assert validate_coco_json(json_file, image_root) == []
    assert load_checked_coco_json(json_file, image_root) == load_coco_json(json_file, image_root)

    name = f"test_coco_{uuid.uuid4().hex[:8]}"
    assert register_coco_instances(name, {"thing_colors": [[1, 2, 3], [4, 5, 6]]}, json_file,
                                   image_root) == name  # fmt: skip
    metadata = MetadataCatalog.get(name)
    assert (metadata.json_file, metadata.image_root) == (json_file, image_root)
    assert metadata.evaluator_type == "coco" and metadata.thing_colors[1] == [4, 5, 6]
    records = DatasetCatalog.get(name)
    assert metadata.thing_classes == ["cat", "dog"]
    assert metadata.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}
    assert [a["category_id"] for a in records[0]["annotations"]] == [0, 1]
    assert "id" not in records[0]["annotations"][0]
    # Idempotent with the same files; other files under the same name are an error.
    assert register_coco_instances(name, {}, json_file, image_root) == name
    with pytest.raises(ValueError, match="already registered"):
        register_coco_instances(name, {}, json_file, str(tmp_path))


def set_polygon(points):
    def mutate(coco):
        coco["annotations"][0]["segmentation"] = points

    return mutate


def set_annotation(**values):
    def mutate(coco):
        coco["annotations"][0].update(values)

    return mutate


def set_rle_size(size):
    def mutate(coco):
        coco["annotations"][1]["segmentation"]["size"] = size

    return mutate


def set_image_size(height, width):
    def mutate(coco):
        coco["images"][0].update(height=height, width=width)

    return mutate


# (mutation of valid_coco(), expected exception, pattern the message must match).
BAD_ANNOTATIONS = {
    "category_not_in_categories": (
        set_annotation(category_id=7),
        ValueError,
        r"annotation 1 \(image 1, img_1\.png\): category_id 7 is not in 'categories' "
        r"\(ids \[1, 2\]\)",
    ),
    "category_zero_based": (set_annotation(category_id=0), ValueError, r"0-based ids"),
    "odd_coordinates": (
        set_polygon([[1.0, 1.0, 10.0, 1.0, 10.0, 8.0, 1.0]]),
        ValueError,
        r"annotation 1 .*polygon 0 has an odd number of coordinates \(7\)",
    ),
    "two_points": (
        set_polygon([[1.0, 1.0, 10.0, 1.0]]),
        ValueError,
        r"polygon 0 has 2 point\(s\); a polygon needs at least 3",
    ),
    "flat_polygon": (
        set_polygon([1.0, 1.0, 10.0, 1.0, 10.0, 8.0]),
        ValueError,
        r"flat list of 6 numbers.*wrap it in another list",
    ),
    "far_outside": (
        set_polygon([[1.0, 1.0, 60.0, 1.0, 60.0, 8.0]]),
        ValueError,
        r"polygon 0 reaches x 1\.\.60, y 1\.\.8, far outside the 16x20 \(HxW\) image; does",
    ),
    "x_y_swapped": (set_polygon([[1.0, 1.0, 1.0, 19.5, 8.0, 19.5]]), ValueError, r"swapped"),
    "rle_size": (
        set_rle_size([32, 40]),
        ValueError,
        r"annotation 2 .*RLE size \[32, 40\] \(HxW\) differs from the image's 16x20",
    ),
    "rle_size_swapped": (set_rle_size([20, 16]), ValueError, r"\[height, width\]: swapped"),
    "unknown_image": (set_annotation(image_id=9), ValueError, r"no image has this id"),
    "box_corners": (set_annotation(bbox=[5, 5, -2, 3]), ValueError, r"not \[x0, y0, x1, y1\]"),
    "image_size": (
        set_image_size(20, 16),
        ValueError,
        r"image 1 \(.*img_1\.png\) is 16x20 \(HxW\) but the json says 20x16; height and width "
        r"swapped",
    ),
}


@pytest.mark.parametrize("case", BAD_ANNOTATIONS, ids=list(BAD_ANNOTATIONS))
def test_bad_annotation_is_named_with_the_file(tmp_path, case):
    mutate, error, pattern = BAD_ANNOTATIONS[case]
    coco = valid_coco()
    mutate(coco)
    json_file, image_root = write_coco(tmp_path, coco)
    with pytest.raises(error, match=pattern) as raised:
        load_checked_coco_json(json_file, image_root)
    assert f"COCO json {json_file}: " in str(raised.value)


def test_missing_or_invalid_json_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "instances.json"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} does not exist: its folder")):
        validate_coco_json(missing, tmp_path)
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"b\.json does not exist: .* holds a\.json"):
        validate_coco_json(tmp_path / "b.json", tmp_path)

    json_file, image_root = write_coco(tmp_path)
    with open(json_file) as f:
        text = f.read()
    with open(json_file, "w") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(json_file)} is not valid JSON: .*truncated"):
        validate_coco_json(json_file, image_root)
    with open(json_file, "w") as f:
        f.write(text.replace('"info": {},', '"info": {},,'))
    with pytest.raises(
        ValueError, match=rf"{re.escape(json_file)} is not valid JSON: .* \(line 1, column"
    ):
        validate_coco_json(json_file, image_root)
    with open(json_file, "w") as f:
        json.dump([{"image_id": 1, "category_id": 1, "score": 0.5}], f)
    with pytest.raises(ValueError, match=r"is a list of 1 entries.*results"):
        validate_coco_json(json_file, image_root)
    with open(json_file, "w") as f:
        json.dump({"images": [], "annotations": []}, f)
    with pytest.raises(ValueError, match=rf"{re.escape(json_file)} is not a COCO instances file"):
        validate_coco_json(json_file, image_root)


def test_missing_images_are_named_with_their_count(tmp_path):
    json_file, image_root = write_coco(tmp_path, num_images=6)
    os.remove(os.path.join(image_root, "img_2.png"))
    with pytest.raises(FileNotFoundError, match=r"1 of its 6 images do not exist .*img_2\.png"):
        validate_coco_json(json_file, image_root)
    for index in (1, 3, 4, 5):
        os.remove(os.path.join(image_root, f"img_{index}.png"))
    with pytest.raises(FileNotFoundError) as raised:
        validate_coco_json(json_file, image_root)
    message = str(raised.value)
    assert message.startswith(f"COCO json {json_file}: 5 of its 6 images do not exist")
    named = [f"{os.path.join(image_root, f'img_{index}.png')}" for index in (1, 2, 3)]
    assert f"{', '.join(named)} and 2 more; restore them" in message
    with pytest.raises(FileNotFoundError, match=r"none of its 6 images exist .* is image_root"):
        validate_coco_json(json_file, tmp_path)
    # Complete images in a subfolder of the given image_root: named.
    json_file, image_root = write_coco(tmp_path / "complete")
    pattern = rf"none of its 2 images exist .*should image_root be {re.escape(image_root)}\?"
    with pytest.raises(FileNotFoundError, match=pattern):
        validate_coco_json(json_file, tmp_path / "complete")
    with pytest.raises(FileNotFoundError, match=r"image_root .*elsewhere does not exist"):
        validate_coco_json(json_file, tmp_path / "elsewhere")


def test_zero_area_annotations_are_skipped_with_one_warning(tmp_path, caplog):
    coco = valid_coco()
    zero_area = [
        {"segmentation": []},
        {"segmentation": [[]]},  # load_coco_json also drops this one, with a warning of its own
        {"area": 0},
        {"bbox": [1.0, 1.0, 0.0, 3.0]},
        {"segmentation": {"size": [IMAGE_HEIGHT, IMAGE_WIDTH], "counts": [IMAGE_HEIGHT * 20]}},
    ]
    for offset, change in enumerate(zero_area):
        annotation = {**copy.deepcopy(coco["annotations"][0]), "id": 100 + offset, **change}
        coco["annotations"].append(annotation)
    json_file, image_root = write_coco(tmp_path, coco)
    assert validate_coco_json(json_file, image_root) == [100, 101, 102, 103, 104]
    with caplog.at_level(logging.WARNING):
        records = load_checked_coco_json(json_file, image_root)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"COCO json {json_file}: skipped 5 annotation(s) of zero area")
    assert [len(record["annotations"]) for record in records] == [2, 2]


def test_thing_classes_that_disagree_with_the_json_are_named(tmp_path, temporary_datasets):
    json_file, image_root = write_coco(tmp_path)
    name = f"test_coco_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {"thing_classes": ["dog", "cat"]}, json_file, image_root)
    pattern = rf"thing_classes \['dog', 'cat'\] differ .*{re.escape(json_file)}"
    with pytest.raises(ValueError, match=pattern):
        DatasetCatalog.get(name)


def test_spec_file_registers_coco_datasets(tmp_path, temporary_datasets):
    json_file, _ = write_coco(tmp_path)
    name, other = f"test_spec_coco_{uuid.uuid4().hex[:8]}", f"test_spec_{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "spec.json"
    entry = {"json_file": os.path.basename(json_file), "image_root": "images"}
    spec.write_text(
        json.dumps({"datasets": {name: {**entry, "thing_colors": [[1, 2, 3], [4, 5, 6]]}}})
    )
    assert register_folder_datasets_from_spec(str(spec)) == [name]  # no 'classes' needed
    metadata = MetadataCatalog.get(name)
    assert metadata.json_file == json_file and metadata.image_root == str(tmp_path / "images")
    assert metadata.evaluator_type == "coco" and metadata.thing_colors == [[1, 2, 3], [4, 5, 6]]
    assert len(DatasetCatalog.get(name)) == 2
    assert register_folder_datasets_from_spec(str(spec)) == [name]  # again: a no-op

    spec.write_text(json.dumps({"datasets": {other: {**entry, "classes": ["a"]}}}))
    with pytest.raises(ValueError, match=re.escape(f"{spec}: COCO dataset '{other}' has unknown")):
        register_folder_datasets_from_spec(str(spec))
    spec.write_text(json.dumps({"datasets": {other: {"json_file": "missing.json"}}}))
    with pytest.raises(ValueError, match=r"lacks \['image_root'\]"):
        register_folder_datasets_from_spec(str(spec))
    spec.write_text(json.dumps({"datasets": {other: {**entry, "json_file": "missing.json"}}}))
    register_folder_datasets_from_spec(str(spec))  # checked when loaded
    with pytest.raises(FileNotFoundError, match=r"missing\.json does not exist"):
        DatasetCatalog.get(other)
