"""
Tests of the instance-segmentation data: the textured-shapes instances (same generator as the
semantic dataset, COCO json, cache, registration) and checked COCO json registration.
"""

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import re
import uuid

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json
from detectron2.structures import BoxMode
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from pointrend_d2.data import instances, textured_shapes
from pointrend_d2.data.folder import register_folder_datasets_from_spec
from pointrend_d2.data.instances import (
    INSTANCES_VERSION,
    MIN_INSTANCE_AREA,
    THING_CLASSES,
    generate_textured_shapes_instances_split,
    load_checked_coco_json,
    register_coco_instances,
    register_textured_shapes_instances,
    textured_shapes_instance_annotations,
    textured_shapes_instances_json,
    textured_shapes_instances_split_dir,
    validate_coco_json,
)
from pointrend_d2.data.textured_shapes import (
    CLASSES,
    COLORS,
    IGNORE_LABEL,
    generate_textured_shapes_image,
    generate_textured_shapes_instances,
    textured_shapes_split_dir,
)

HEIGHT, WIDTH = 64, 96
RING = CLASSES.index("ring")


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def test_semantic_outputs_unchanged():
    # Hashes of generate_textured_shapes_image(7, "train", 5, 64, 96) before instances existed.
    image, label = generate_textured_shapes_image(7, "train", 5, HEIGHT, WIDTH)
    assert sha256(label) == "a145f18301249e2d6de5170a2a0bfd7b5ca5b6ba0bddd87f6bca649a12350165"
    assert sha256(image) == "b2ce7921c0f9194b8a66c7d442de6452486b7ee0ce3e6bc8568732db248e2cba"
    same_image, same_label, instance_map = generate_textured_shapes_instances(
        7, "train", 5, HEIGHT, WIDTH
    )
    assert np.array_equal(same_image, image) and np.array_equal(same_label, label)
    assert instance_map.shape == label.shape and instance_map.dtype == np.int32
    # The semantic folder key is still that of the semantic parameters alone.
    assert textured_shapes.DATASET_VERSION == "textured_shapes_v1"
    assert os.path.basename(textured_shapes_split_dir("/r", "val", 3, height=64, width=128)) == (
        "val-" + hashlib.sha256(
            json.dumps(
                {"version": "textured_shapes_v1", "split": "val", "num_images": 3, "seed": 0,
                 "height": 64, "width": 128},
                sort_keys=True,
            ).encode()
        ).hexdigest()[:16]
    )  # fmt: skip


@pytest.mark.parametrize("index", range(4))
def test_instance_masks_agree_with_the_semantic_label(index):
    _, label, instance_map = generate_textured_shapes_instances(0, "val", index, HEIGHT, WIDTH)
    # Pixels of no instance: background and void; every thing pixel has an instance.
    assert np.array_equal(instance_map == 0, (label == 0) | (label == IGNORE_LABEL))
    annotations = textured_shapes_instance_annotations(label, instance_map)
    assert len(annotations) >= 5
    union = {c: np.zeros(label.shape, bool) for c in range(1, len(CLASSES))}
    for annotation in annotations:
        mask = mask_util.decode(annotation["segmentation"]).astype(bool)
        assert annotation["segmentation"]["size"] == [HEIGHT, WIDTH]
        assert isinstance(annotation["segmentation"]["counts"], str)
        assert np.all(label[mask] == annotation["category_id"])  # its class in the label map
        assert annotation["area"] == mask.sum() >= MIN_INSTANCE_AREA
        ys, xs = np.nonzero(mask)
        assert annotation["bbox"] == [
            xs.min(),
            ys.min(),
            xs.max() - xs.min() + 1,
            ys.max() - ys.min() + 1,
        ]
        assert annotation["iscrowd"] == 0
        assert not np.any(union[annotation["category_id"]] & mask)  # instances do not overlap
        union[annotation["category_id"]] |= mask
    for class_id, class_union in union.items():
        left_out = (label == class_id) & ~class_union
        # Only the pixels of instances too small to keep.
        for instance_id in np.unique(instance_map[left_out]):
            assert np.sum(instance_map == instance_id) < MIN_INSTANCE_AREA
        assert np.array_equal(class_union, (label == class_id) & ~left_out)


def test_rings_have_holes_and_occluded_instances_stay_one():
    holes = pieces = 0
    for index in range(4):
        _, label, instance_map = generate_textured_shapes_instances(0, "train", index, 128, 192)
        for annotation in textured_shapes_instance_annotations(label, instance_map):
            mask = mask_util.decode(annotation["segmentation"])
            count, _ = cv2.connectedComponents(mask, connectivity=8)
            pieces += count - 1 > 1
            if annotation["category_id"] == RING:
                # A hole: a part of the complement that does not reach the image border.
                count, parts = cv2.connectedComponents(1 - mask, connectivity=4)
                border = np.concatenate([parts[0], parts[-1], parts[:, 0], parts[:, -1]])
                holes += bool(set(range(1, count)) - set(border.tolist()))
    assert holes >= 3
    assert pieces >= 3


def test_split_json_loads_with_pycocotools_and_detectron2(tmp_path):
    root = str(tmp_path)
    split_dir = generate_textured_shapes_instances_split(
        root, "val", 3, seed=5, height=HEIGHT, width=WIDTH
    )
    assert split_dir == textured_shapes_instances_split_dir(
        root, "val", 3, seed=5, height=HEIGHT, width=WIDTH
    )
    assert os.listdir(root) == [os.path.basename(split_dir)]  # no temporary folder left
    assert sorted(os.listdir(split_dir)) == ["images", "instances.json", "parameters.json"]
    with open(os.path.join(split_dir, "parameters.json")) as f:
        assert json.load(f) == {
            "version": INSTANCES_VERSION,
            "image_version": textured_shapes.DATASET_VERSION,
            "split": "val",
            "num_images": 3,
            "seed": 5,
            "height": HEIGHT,
            "width": WIDTH,
        }
    json_file = textured_shapes_instances_json(split_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_file)
        # loadRes copies the ground truth's 'info' (pycocotools 2.0.10).
        results = [{**a, "score": 1.0} for a in coco.dataset["annotations"]]
        assert len(coco.loadRes(results).getAnnIds()) == len(results)
    assert coco.dataset["info"]["version"] == INSTANCES_VERSION
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(THING_CLASSES)
    assert coco.getCatIds() == [1, 2, 3, 4]
    assert sorted(coco.getImgIds()) == [1, 2, 3]

    image_root = os.path.join(split_dir, "images")
    records = load_coco_json(json_file, image_root)
    assert len(records) == 3
    for index, record in enumerate(records):
        assert record["file_name"] == os.path.join(image_root, f"val_{index:04d}.png")
        assert (record["height"], record["width"]) == (HEIGHT, WIDTH)
        image, label, instance_map = generate_textured_shapes_instances(
            5, "val", index, HEIGHT, WIDTH
        )
        with Image.open(record["file_name"]) as stored:
            assert np.array_equal(np.asarray(stored), image)
        expected = textured_shapes_instance_annotations(label, instance_map)
        assert len(record["annotations"]) == len(expected)
        for annotation, wanted in zip(record["annotations"], expected, strict=True):
            assert annotation["segmentation"] == wanted["segmentation"]
            assert annotation["bbox_mode"] == BoxMode.XYWH_ABS
    assert load_checked_coco_json(json_file, image_root) == records


def fail_if_generating(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(instances, "generate_textured_shapes_instances", fail)


def test_each_parameter_keys_its_own_folder_and_the_cache_is_reused(tmp_path, monkeypatch):
    root = str(tmp_path)
    parameters = {"split": "val", "num_images": 2, "seed": 0, "height": 32, "width": 48}
    changes = [{"split": "train"}, {"num_images": 3}, {"seed": 1}, {"height": 40}, {"width": 56}]
    folders = {
        generate_textured_shapes_instances_split(root, **{**parameters, **change})
        for change in [{}, *changes]
    }
    assert len(folders) == 1 + len(changes)
    assert sorted(os.listdir(root)) == sorted(os.path.basename(f) for f in folders)
    # Not the semantic split's folder; a new version of either generator is a new folder.
    assert textured_shapes_split_dir(root, **parameters) not in folders
    monkeypatch.setattr(instances, "INSTANCES_VERSION", "textured_shapes_instances_test")
    assert textured_shapes_instances_split_dir(root, **parameters) not in folders
    monkeypatch.undo()
    monkeypatch.setattr(textured_shapes, "DATASET_VERSION", "textured_shapes_test")
    assert textured_shapes_instances_split_dir(root, **parameters) not in folders
    monkeypatch.undo()

    fail_if_generating(monkeypatch)
    for change in [*changes, {}]:
        assert generate_textured_shapes_instances_split(root, **{**parameters, **change}) in folders
    assert len(os.listdir(root)) == len(folders)


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(instances, "generate_textured_shapes_instances", fail)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_textured_shapes_instances_split(str(tmp_path), "train", 2, height=32, width=48)
    assert os.listdir(tmp_path) == []


def test_registration_is_lazy_idempotent_and_sets_metadata(tmp_path, temporary_datasets):
    root, prefix = str(tmp_path), f"test_instances_{uuid.uuid4().hex[:8]}"
    small = {"num_train": 3, "num_val": 2, "height": HEIGHT, "width": WIDTH}
    names = register_textured_shapes_instances(root, **small, prefix=prefix)
    assert names == [f"{prefix}_train", f"{prefix}_val"]
    assert os.listdir(root) == []  # registering generates nothing
    split_dirs = [
        textured_shapes_instances_split_dir(root, split, count, height=HEIGHT, width=WIDTH)
        for split, count in (("train", 3), ("val", 2))
    ]
    for name, split_dir in zip(names, split_dirs, strict=True):
        metadata = MetadataCatalog.get(name)
        assert metadata.thing_classes == ["blob", "ring", "wire", "dot"]
        assert metadata.thing_colors == [list(color) for color in COLORS[1:]]
        assert metadata.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3}
        assert metadata.evaluator_type == "coco"
        assert metadata.json_file == os.path.join(split_dir, "instances.json")
        assert metadata.image_root == os.path.join(split_dir, "images")
        assert metadata.dataset_root == root

    assert register_textured_shapes_instances(root, **small, prefix=prefix) == names
    with pytest.raises(ValueError, match="already registered"):
        register_textured_shapes_instances(str(tmp_path / "other"), **small, prefix=prefix)
    with pytest.raises(ValueError, match="already registered"):
        register_textured_shapes_instances(root, **{**small, "seed": 1}, prefix=prefix)

    train = DatasetCatalog.get(names[0])
    assert os.listdir(root) == [os.path.basename(split_dirs[0])]  # only the requested split
    assert os.path.isfile(MetadataCatalog.get(names[0]).json_file)
    assert len(train) == 3 and all(record["annotations"] for record in train)
    category_ids = {a["category_id"] for record in train for a in record["annotations"]}
    assert category_ids == {0, 1, 2, 3}
    annotation = train[0]["annotations"][0]
    assert set(annotation["segmentation"]) == {"size", "counts"}  # RLE, for MASK_FORMAT bitmask
    assert len(DatasetCatalog.get(names[1])) == 2


def test_import_registers_the_default_splits():
    for split in ("train", "val"):
        metadata = MetadataCatalog.get(f"textured_shapes_instances_{split}")
        assert f"textured_shapes_instances_{split}" in DatasetCatalog.list()
        assert metadata.evaluator_type == "coco"
        assert metadata.thing_classes == list(THING_CLASSES)
        assert os.path.basename(metadata.json_file) == "instances.json"


# ------------------------------------------------------------------------------------------
# Checked COCO json
# ------------------------------------------------------------------------------------------

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
