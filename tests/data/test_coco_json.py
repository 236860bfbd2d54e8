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
from pointrend_d2.data.instance_mapper import InstanceDatasetMapper
from tests.helpers import write_exif_image

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


def write_coco(
    tmp_path, coco: dict | None = None, num_images: int = 2, size=(IMAGE_HEIGHT, IMAGE_WIDTH)
) -> tuple[str, str]:
    """
    Writes ``coco`` (default: :func:`valid_coco`) and its images of ``size`` (HxW), black;
    (json_file, image_root).
    """
    coco = valid_coco(num_images) if coco is None else coco
    image_root = tmp_path / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    for image in coco["images"]:
        Image.new("RGB", size[::-1]).save(image_root / image["file_name"])
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


# The issue's image: 128 wide, 96 high, one object drawn at x 20..60, y 20..50.
ISSUE_SIZE = (96, 128)
ISSUE_POLYGON = [[20.0, 20.0, 60.0, 20.0, 60.0, 50.0, 20.0, 50.0]]


def issue_coco(bbox, segmentation=ISSUE_POLYGON) -> dict:
    """One 96x128 (HxW) image, one annotation (id 7) with ``bbox`` and ``segmentation``."""
    annotation = {"id": 7, "image_id": 3, "category_id": 1, "iscrowd": 0, "bbox": bbox}
    if segmentation is not None:
        annotation["segmentation"] = segmentation
    return {
        "images": [{"id": 3, "file_name": "boxes.png", "height": 96, "width": 128}],
        "annotations": [annotation],
        "categories": [{"id": 1, "name": "thing"}],
    }


# bbox -> what the error says after "annotation 7 (image 3, boxes.png): 'bbox' <bbox> (x .., y ..)".
BOXES_ELSEWHERE = {
    "far_outside_dropped": (
        [500, 400, 20, 20],
        r"\(x 500\.\.520, y 400\.\.420\) lies far outside the 96x128 \(HxW\) image, while its "
        r"segmentation lies at x 20\.\.60, y 20\.\.50: detectron2 would clip the box to the image, "
        r"leaving nothing of it, and drop the annotation from training\. Recompute the bbox",
    ),
    "far_outside_clipped_away": (
        [110, 80, 60, 60],
        r"\(x 110\.\.170, y 80\.\.140\) lies far outside the 96x128 \(HxW\) image, while its "
        r"segmentation lies at x 20\.\.60, y 20\.\.50: detectron2 would clip the box to the image "
        r"and train the mask only inside it, cutting the mask away",
    ),
    "inside_elsewhere": (
        [90, 60, 20, 20],
        r"\(x 90\.\.110, y 60\.\.80\) does not cover its segmentation, which lies at x 20\.\.60, "
        r"y 20\.\.50 in the 96x128 \(HxW\) image: detectron2 would clip the box to the image "
        r"and train the mask only inside it",
    ),
    "too_small": ([20, 20, 30, 30], r"\(x 20\.\.50, y 20\.\.50\) does not cover its segmentation"),
    "far_too_large": (
        [0, 0, 400, 300],
        r"\(x 0\.\.400, y 0\.\.300\) lies far outside .*: detectron2 would clip it to the image, "
        r"a box far larger than the object",
    ),
}


@pytest.mark.parametrize("case", BOXES_ELSEWHERE, ids=list(BOXES_ELSEWHERE))
def test_box_away_from_its_segmentation_is_named(tmp_path, case):
    bbox, pattern = BOXES_ELSEWHERE[case]
    json_file, image_root = write_coco(tmp_path, issue_coco(bbox), size=ISSUE_SIZE)
    where = f"COCO json {json_file}: annotation 7 (image 3, boxes.png): 'bbox' {bbox} "
    with pytest.raises(ValueError, match=re.escape(where) + pattern):
        validate_coco_json(json_file, image_root)


def test_boxes_that_cover_their_segmentation_pass(tmp_path):
    mask = np.zeros(ISSUE_SIZE, np.uint8)
    mask[20:50, 20:60] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle = {"size": list(ISSUE_SIZE), "counts": rle["counts"].decode("ascii")}
    for bbox, segmentation in [
        ([20, 20, 40, 30], ISSUE_POLYGON),
        ([21.5, 21.5, 37, 27], ISSUE_POLYGON),  # within BOX_TOLERANCE of the polygon
        ([-5, -5, 70, 60], ISSUE_POLYGON),  # partly outside the image, within the margin
        ([20, 20, 40, 30], rle),
    ]:
        json_file, image_root = write_coco(
            tmp_path, issue_coco(bbox, segmentation), size=ISSUE_SIZE
        )
        assert validate_coco_json(json_file, image_root) == []


def test_box_without_segmentation_far_outside_is_named(tmp_path):
    coco = issue_coco([500, 400, 20, 20], segmentation=None)
    json_file, image_root = write_coco(tmp_path, coco, size=ISSUE_SIZE)
    pattern = r"lies far outside the 96x128 \(HxW\) image; does the annotation belong to another"
    with pytest.raises(ValueError, match=pattern):
        validate_coco_json(json_file, image_root)
    coco = issue_coco([80, 100, 20, 20], segmentation=None)  # fits only with x and y swapped
    json_file, image_root = write_coco(tmp_path, coco, size=ISSUE_SIZE)
    with pytest.raises(ValueError, match=r"far outside .*x and y swapped"):
        validate_coco_json(json_file, image_root)


def write_phone_photo_coco(tmp_path, json_size) -> tuple[str, str]:
    """valid_coco(1) whose image is a phone photo stored 20x16 (HxW) with EXIF orientation 6
    (displayed 16x20, the annotations' size), the json giving ``json_size``."""
    coco = valid_coco(1)
    coco["images"][0].update(height=json_size[0], width=json_size[1])
    json_file, image_root = write_coco(tmp_path, coco)
    write_exif_image(os.path.join(image_root, "img_1.png"), 6, (IMAGE_WIDTH, IMAGE_HEIGHT))
    return json_file, image_root


def test_phone_photo_annotated_as_displayed_loads_and_maps(tmp_path):
    json_file, image_root = write_phone_photo_coco(tmp_path, (IMAGE_HEIGHT, IMAGE_WIDTH))
    (record,) = load_checked_coco_json(json_file, image_root)
    mapper = InstanceDatasetMapper(
        True,
        augmentations=[],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",
    )
    out = mapper(record)
    assert out["image"].shape == (3, IMAGE_HEIGHT, IMAGE_WIDTH)
    assert len(out["instances"]) == 2


def test_phone_photo_annotated_as_stored_is_named_with_the_exif_advice(tmp_path):
    json_file, image_root = write_phone_photo_coco(tmp_path, (IMAGE_WIDTH, IMAGE_HEIGHT))
    message = (
        r"image 1 \(.*img_1\.png\) is 16x20 \(HxW\) as displayed \(stored 20x16 with EXIF "
        r"orientation 6: shown rotated 90° clockwise\) but the json says 20x16; that is its size "
        r"as stored, .* If the annotations were drawn on the image as stored \(a tool that ignores "
        r"EXIF\), save the image without its EXIF orientation tag; if they were drawn as "
        r"displayed, correct the size in the json"
    )
    with pytest.raises(ValueError, match=message):
        validate_coco_json(json_file, image_root)


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
