"""
Tests of the textured-shapes instances: same generator as the semantic dataset, COCO json,
cache, registration.
"""

import contextlib
import hashlib
import io
import json
import os
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

from pointrend_d2.data import textured_shapes, textured_shapes_instances
from pointrend_d2.data.coco_json import load_checked_coco_json
from pointrend_d2.data.textured_shapes import (
    CLASSES,
    COLORS,
    IGNORE_LABEL,
    generate_textured_shapes_image,
    generate_textured_shapes_instances,
    textured_shapes_split_dir,
)
from pointrend_d2.data.textured_shapes_instances import (
    INSTANCES_VERSION,
    MIN_INSTANCE_AREA,
    THING_CLASSES,
    generate_textured_shapes_instances_split,
    register_textured_shapes_instances,
    textured_shapes_instance_annotations,
    textured_shapes_instances_json,
    textured_shapes_instances_split_dir,
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

    monkeypatch.setattr(textured_shapes_instances, "generate_textured_shapes_instances", fail)


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
    monkeypatch.setattr(
        textured_shapes_instances, "INSTANCES_VERSION", "textured_shapes_instances_test"
    )
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

    monkeypatch.setattr(textured_shapes_instances, "generate_textured_shapes_instances", fail)
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
