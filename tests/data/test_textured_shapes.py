"""Tests of the procedurally generated "textured shapes" semantic-segmentation dataset."""

import json
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from pointrend_d2.data import textured_shapes
from pointrend_d2.data.textured_shapes import (
    CLASSES,
    COLORS,
    IGNORE_LABEL,
    default_dataset_root,
    generate_textured_shapes_image,
    generate_textured_shapes_split,
    load_textured_shapes,
    register_textured_shapes,
    textured_shapes_split_dir,
)

HEIGHT, WIDTH = 128, 256
WIRE, DOT = CLASSES.index("wire"), CLASSES.index("dot")


@pytest.fixture(scope="module")
def small_images() -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, label) pairs of eight small training images."""
    return [generate_textured_shapes_image(0, "train", i, HEIGHT, WIDTH) for i in range(8)]


@pytest.fixture
def unique_prefix(temporary_datasets):
    """A dataset-name prefix unused elsewhere; its registrations are removed afterwards."""
    return f"test_textured_shapes_{uuid.uuid4().hex[:8]}"


def test_same_seed_gives_identical_images_and_other_indices_differ():
    image, label = generate_textured_shapes_image(3, "train", 5, HEIGHT, WIDTH)
    image_again, label_again = generate_textured_shapes_image(3, "train", 5, HEIGHT, WIDTH)
    assert np.array_equal(image, image_again) and np.array_equal(label, label_again)
    for other in [(3, "train", 6), (3, "val", 5), (4, "train", 5)]:
        other_image, other_label = generate_textured_shapes_image(*other, HEIGHT, WIDTH)
        assert not np.array_equal(image, other_image)
        assert not np.array_equal(label, other_label)


def test_default_size_shapes_and_dtypes():
    image, label = generate_textured_shapes_image(0, "val", 0)
    assert image.shape == (512, 1024, 3) and image.dtype == np.uint8
    assert label.shape == (512, 1024) and label.dtype == np.uint8


def test_all_classes_appear_and_labels_are_valid(small_images):
    values = set()
    for _, label in small_images:
        values |= set(np.unique(label).tolist())
    assert values == set(range(len(CLASSES))) | {IGNORE_LABEL}
    assert len(COLORS) == len(CLASSES) and len(set(COLORS)) == len(COLORS)


def test_wires_are_thin(small_images):
    distances, coverages = [], []
    for _, label in small_images:
        wire = (label == WIRE).astype(np.uint8)
        # Distance of each wire pixel to the nearest non-wire pixel: at most 2 across a 4 px wide
        # line, and a knight's move (sqrt(5) ~ 2.2) where such a line runs diagonally.
        distances.append(cv2.distanceTransform(wire, cv2.DIST_L2, 5)[wire > 0])
        coverages.append(wire.mean())
    distances = np.concatenate(distances)
    assert distances.size > 0
    assert np.mean(distances <= 2.0) > 0.8
    # Only where wires cross or overlap themselves is a pixel further inside (~0.3% measured).
    assert np.mean(distances <= 2.25) > 0.98
    assert max(coverages) < 0.05


def test_dots_are_small_objects(small_images):
    areas = []
    for _, label in small_images:
        count, _, stats, _ = cv2.connectedComponentsWithStats((label == DOT).astype(np.uint8))
        areas.extend(stats[1:count, cv2.CC_STAT_AREA].tolist())  # row 0 is the non-dot part
    areas = np.array(areas)
    assert np.sum(areas < 400) >= 20
    assert np.mean(areas < 400) > 0.9


def _nearest_color_centroid_scores(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float]:
    """Pixel accuracy and mean per-class recall on `test` of per-class mean RGB fit on `train`."""
    (train_image, train_label), (test_image, test_label) = train, test
    centroids = np.stack(
        [
            (
                train_image[train_label == c].mean(axis=0)
                if np.any(train_label == c)
                else np.full(3, np.inf)
            )
            for c in range(len(CLASSES))
        ]
    )
    distances = ((test_image[:, :, None, :] - centroids) ** 2).sum(axis=-1)
    prediction = distances.argmin(axis=-1)
    scored = test_label != IGNORE_LABEL
    pixel_accuracy = np.mean(prediction[scored] == test_label[scored])
    present = [c for c in range(len(CLASSES)) if np.any(test_label == c)]
    mean_recall = np.mean([np.mean(prediction[test_label == c] == c) for c in present])
    return float(pixel_accuracy), float(mean_recall)


def test_color_alone_does_not_separate_classes(small_images):
    # Fit on one image, score on the next. A single pair is noisy: when the test image's
    # background happens to be far from all train centroids except the background one, pixel
    # accuracy approaches the background fraction (~0.65, up to ~0.85 in rare images), so we
    # average over four pairs. Measured over 20 pairs: pixel accuracy ~0.35 and mean per-class
    # recall ~0.33 on average (chance: 0.2); a colour-separable dataset would score near 1.
    scores = [
        _nearest_color_centroid_scores(small_images[i], small_images[i + 1]) for i in (0, 2, 4, 6)
    ]
    pixel_accuracy, mean_recall = np.mean(scores, axis=0)
    assert pixel_accuracy < 0.6
    assert mean_recall < 0.5


def fail_if_generating(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(textured_shapes, "generate_textured_shapes_image", fail)


def test_generate_and_load_round_trip(tmp_path, monkeypatch):
    root = str(tmp_path)
    split_dir = generate_textured_shapes_split(root, "val", 3, seed=7, height=64, width=128)
    assert split_dir == textured_shapes_split_dir(root, "val", 3, seed=7, height=64, width=128)
    assert os.listdir(root) == [os.path.basename(split_dir)]  # no temporary directory left
    with open(os.path.join(split_dir, "parameters.json")) as f:
        assert json.load(f) == {
            "version": textured_shapes.DATASET_VERSION,
            "split": "val",
            "num_images": 3,
            "seed": 7,
            "height": 64,
            "width": 128,
        }

    dataset_dicts = load_textured_shapes(split_dir)
    assert [d["image_id"] for d in dataset_dicts] == ["val_0000", "val_0001", "val_0002"]
    for index, record in enumerate(dataset_dicts):
        assert record["file_name"] == os.path.join(split_dir, "images", f"val_{index:04d}.png")
        assert record["sem_seg_file_name"] == os.path.join(
            split_dir, "labels", f"val_{index:04d}.png"
        )
        assert (record["height"], record["width"]) == (64, 128)
        image, label = generate_textured_shapes_image(7, "val", index, 64, 128)
        with Image.open(record["file_name"]) as stored_image:
            assert stored_image.mode == "RGB"
            assert np.array_equal(np.asarray(stored_image), image)
        with Image.open(record["sem_seg_file_name"]) as stored_label:
            assert stored_label.mode == "L"
            assert np.array_equal(np.asarray(stored_label), label)

    # An existing split is reused as is: nothing is generated again.
    fail_if_generating(monkeypatch)
    assert generate_textured_shapes_split(root, "val", 3, seed=7, height=64, width=128) == split_dir


def test_each_generation_parameter_keys_its_own_folder(tmp_path, monkeypatch):
    root = str(tmp_path)
    parameters = {"split": "val", "num_images": 2, "seed": 0, "height": 32, "width": 64}
    changes = [{"split": "train"}, {"num_images": 3}, {"seed": 1}, {"height": 48}, {"width": 96}]
    folders = {
        generate_textured_shapes_split(root, **{**parameters, **change})
        for change in [{}, *changes]
    }
    assert len(folders) == 1 + len(changes)
    assert sorted(os.listdir(root)) == sorted(os.path.basename(f) for f in folders)
    # A new generator version is a new folder too.
    monkeypatch.setattr(textured_shapes, "DATASET_VERSION", "textured_shapes_test")
    assert textured_shapes_split_dir(root, **parameters) not in folders
    monkeypatch.undo()

    # The same parameters find their folder again, in any order of the calls.
    fail_if_generating(monkeypatch)
    for change in [*changes, {}]:
        assert generate_textured_shapes_split(root, **{**parameters, **change}) in folders
    assert len(os.listdir(root)) == len(folders)


def test_load_missing_split_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train")):
        load_textured_shapes(str(tmp_path / "train"))


def test_concurrent_generation_leaves_one_complete_split(tmp_path, monkeypatch):
    # Both callers wait for each other before their first image, so both have found the split
    # missing and both write a full copy: exactly one rename must win, the other be discarded.
    both_started = threading.Barrier(2, timeout=30)
    generate_image = textured_shapes.generate_textured_shapes_image

    def generate_after_both_started(seed, split, index, height, width):
        if index == 0:
            both_started.wait()
        return generate_image(seed, split, index, height, width)

    monkeypatch.setattr(
        textured_shapes, "generate_textured_shapes_image", generate_after_both_started
    )
    root = str(tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(generate_textured_shapes_split, root, "train", 3, height=64, width=128)
            for _ in range(2)
        ]
        split_dirs = {future.result() for future in futures}
    assert split_dirs == {textured_shapes_split_dir(root, "train", 3, height=64, width=128)}
    (split_dir,) = split_dirs
    assert os.listdir(root) == [os.path.basename(split_dir)]
    assert len(load_textured_shapes(split_dir)) == 3


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def fail_on_second_image(seed, split, index, height, width):
        if index == 1:
            raise RuntimeError("simulated crash")
        return np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.uint8)

    monkeypatch.setattr(textured_shapes, "generate_textured_shapes_image", fail_on_second_image)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_textured_shapes_split(str(tmp_path), "train", 3, height=64, width=128)
    assert os.listdir(tmp_path) == []


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("POINTREND_D2_DATA", str(tmp_path))
    assert default_dataset_root() == os.path.join(str(tmp_path), "textured_shapes")


def test_registration_is_lazy_and_sets_metadata(tmp_path, unique_prefix):
    root = str(tmp_path)
    small = {"num_train": 3, "num_val": 2, "height": 64, "width": 128}
    names = register_textured_shapes(root, **small, prefix=unique_prefix)
    assert names == [f"{unique_prefix}_train", f"{unique_prefix}_val"]
    assert os.listdir(root) == []  # registering generates nothing
    split_dirs = [
        textured_shapes_split_dir(root, split, num_images, height=64, width=128)
        for split, num_images in (("train", 3), ("val", 2))
    ]
    for name, split_dir in zip(names, split_dirs, strict=True):
        assert name in DatasetCatalog.list()
        metadata = MetadataCatalog.get(name)
        assert metadata.stuff_classes == list(CLASSES)
        assert metadata.stuff_colors == [list(color) for color in COLORS]
        assert metadata.ignore_label == IGNORE_LABEL
        assert metadata.evaluator_type == "sem_seg"
        assert metadata.dataset_root == root
        assert metadata.image_root == os.path.join(split_dir, "images")
        assert metadata.sem_seg_root == os.path.join(split_dir, "labels")

    # Registering again the same is a no-op; another root or other parameters are an error.
    assert register_textured_shapes(root, **small, prefix=unique_prefix) == names
    with pytest.raises(ValueError, match="already registered"):
        register_textured_shapes(str(tmp_path / "other"), **small, prefix=unique_prefix)
    with pytest.raises(ValueError, match="already registered"):
        register_textured_shapes(root, **{**small, "num_val": 3}, prefix=unique_prefix)

    train_dicts = DatasetCatalog.get(names[0])
    assert len(train_dicts) == 3
    # Only the requested split was generated.
    assert os.listdir(root) == [os.path.basename(split_dirs[0])]
    assert (train_dicts[0]["height"], train_dicts[0]["width"]) == (64, 128)
    assert len(DatasetCatalog.get(names[1])) == 2
    assert sorted(os.listdir(root)) == sorted(os.path.basename(d) for d in split_dirs)
