"""
Sparse point labels for semantic segmentation: the labelled pixels follow the augmentations as
points (a shrinking resize keeps every one, unlike a nearest-neighbour resize of the map), and
folder datasets registered with ``sparse_labels`` (from Python or a spec file) mark their records.
"""

import json
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from PIL import Image

from pointrend_d2.data import SemanticDatasetMapper, register_folder_dataset
from pointrend_d2.data.folder import register_folder_datasets_from_spec
from pointrend_d2.data.sparse_labels import transform_sparse_labels

IGNORE = 255


def sparse_labels() -> np.ndarray:
    """A 20x30 map with five labelled pixels."""
    labels = np.full((20, 30), IGNORE, np.uint8)
    for value, (row, col) in enumerate([(0, 0), (1, 1), (5, 20), (19, 29), (10, 7)]):
        labels[row, col] = value
    return labels


def labelled(labels: np.ndarray) -> dict:
    """(row, column) -> label of the labelled pixels."""
    rows, cols = np.nonzero(labels != IGNORE)
    return {(int(r), int(c)): int(labels[r, c]) for r, c in zip(rows, cols, strict=True)}


def test_a_shrinking_resize_keeps_every_point():
    labels = sparse_labels()
    resize = T.ResizeTransform(20, 30, 5, 7)  # a quarter of the size
    moved = transform_sparse_labels(labels, T.TransformList([resize]), (5, 7), IGNORE)
    # Pixel centres (c + 0.5, r + 0.5) scaled by 7/30 and 5/20, in the pixel that contains them;
    # (0, 0) and (1, 1) land in one pixel: the later in row-major order is kept.
    assert labelled(moved) == {(0, 0): 1, (1, 4): 2, (4, 6): 3, (2, 1): 4}
    # A nearest-neighbour resize of the map loses most of them.
    assert len(labelled(resize.apply_segmentation(labels))) < 4


def test_points_follow_a_flip_and_an_enlarging_resize_as_single_pixels():
    labels = sparse_labels()
    transforms = T.TransformList([T.ResizeTransform(20, 30, 40, 60), T.HFlipTransform(60)])
    moved = transform_sparse_labels(labels, transforms, (40, 60), IGNORE)
    # Centre (c + 0.5, r + 0.5) -> (60 - 2c - 1, 2r + 1): one pixel each, not a 2x2 block.
    expected = {(2 * r + 1, 60 - 2 * c - 1): v for (r, c), v in labelled(labels).items()}
    assert labelled(moved) == expected


def test_a_crop_drops_the_points_outside_it():
    crop = T.CropTransform(5, 2, 20, 10)  # x 5..25, y 2..12
    moved = transform_sparse_labels(sparse_labels(), T.TransformList([crop]), (10, 20), IGNORE)
    assert labelled(moved) == {(3, 15): 2, (8, 2): 4}


def write_sparse_sample(tmp_path) -> dict:
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(sparse_labels()).save(tmp_path / "a_labels.png")
    return {
        "file_name": str(tmp_path / "a.png"),
        "sem_seg_file_name": str(tmp_path / "a_labels.png"),
        "sparse_labels": True,
    }


def test_mapper_moves_sparse_labels_as_points(tmp_path):
    record = write_sparse_sample(tmp_path)
    mapper = SemanticDatasetMapper(
        True,
        augmentations=[T.Resize((5, 7))],
        image_format="RGB",
        num_classes=5,
        ignore_value=IGNORE,
    )
    out = mapper(record)
    assert "sparse_labels" not in out and out["sem_seg"].dtype == torch.int64
    assert labelled(out["sem_seg"].numpy()) == {(0, 0): 1, (1, 4): 2, (4, 6): 3, (2, 1): 4}
    # The same file as dense labels is resampled as a map.
    dense = mapper({**record, "sparse_labels": False})["sem_seg"].numpy()
    assert len(labelled(dense)) < 4


def write_folders(tmp_path):
    for folder in ("images", "points"):
        (tmp_path / folder).mkdir()
    Image.new("RGB", (30, 20)).save(tmp_path / "images" / "a.png")
    Image.fromarray(sparse_labels()).save(tmp_path / "points" / "a.png")


@pytest.mark.usefixtures("temporary_datasets")
def test_folder_dataset_with_sparse_labels_marks_its_records(tmp_path):
    write_folders(tmp_path)
    name = f"sparse_{uuid.uuid4().hex[:8]}"
    register_folder_dataset(
        name,
        tmp_path / "images",
        tmp_path / "points",
        ["a", "b", "c", "d", "e"],
        sparse_labels=True,
    )
    assert MetadataCatalog.get(name).sparse_labels is True
    (record,) = DatasetCatalog.get(name)
    assert record["sparse_labels"] is True
    # The same folders registered again as full labels are another dataset.
    with pytest.raises(ValueError, match=r"already registered with sparse_labels True"):
        register_folder_dataset(name, tmp_path / "images", tmp_path / "points", ["a"])


@pytest.mark.usefixtures("temporary_datasets")
def test_spec_entry_with_sparse_labels(tmp_path):
    write_folders(tmp_path)
    names = [f"spec_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    spec = tmp_path / "spec.json"
    datasets = {
        names[0]: {"image_dir": "images", "label_dir": "points", "sparse_labels": True},
        names[1]: {"image_dir": "images", "label_dir": "points"},
    }
    spec.write_text(json.dumps({"classes": list("abcde"), "datasets": datasets}))
    assert register_folder_datasets_from_spec(str(spec)) == names[:2]
    assert MetadataCatalog.get(names[0]).get("sparse_labels") is True
    assert MetadataCatalog.get(names[1]).get("sparse_labels") is None
    datasets = {names[2]: {"image_dir": "images", "label_dir": "points", "sparse_labels": "yes"}}
    spec.write_text(json.dumps({"classes": list("abcde"), "datasets": datasets}))
    with pytest.raises(ValueError, match=r"sparse_labels of 'spec_\w+' must be true or false"):
        register_folder_datasets_from_spec(str(spec))
