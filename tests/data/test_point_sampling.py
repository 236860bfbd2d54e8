"""
Points sampled from full annotations: in each object's box, labelled from its mask; N pixels per
class from label maps; seeded, reproducible, fewer points a subset of more; the json and label
folders written from them, and the embedded point-labelled training splits.
"""

import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_util

from pointrend_d2.data.coco_json import validate_coco_json
from pointrend_d2.data.point_sampling import (
    annotation_mask,
    coco_with_points,
    point_generator,
    sample_box_points,
    sparse_label_map,
    write_point_annotations,
    write_sparse_label_folder,
)

HEIGHT, WIDTH = 24, 32


def object_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[4:12, 6:20] = True
    return mask


def test_box_points_are_in_the_box_and_labelled_by_the_pixel_that_holds_them():
    mask = object_mask()
    bbox = [2.0, 2.0, 24.0, 14.0]  # larger than the mask: points fall inside and outside it
    coords, labels = sample_box_points(mask, bbox, 200, point_generator(0, 7))
    points = np.array(coords)
    assert points.shape == (200, 2)
    assert (points >= [2, 2]).all() and (points <= [26, 16]).all()
    assert np.array_equal(points, np.round(points, 2))  # written to a hundredth of a pixel
    expected = mask[np.floor(points[:, 1]).astype(int), np.floor(points[:, 0]).astype(int)]
    assert labels == expected.astype(int).tolist() and 0 < sum(labels) < 200


def test_points_on_the_image_edge_are_outside():
    mask = np.ones((4, 4), bool)
    coords, labels = sample_box_points(mask, [3.999, 0, 0.001, 4], 20, point_generator(0, 1))
    assert all(label == (x < 4) for (x, _), label in zip(coords, labels, strict=True))


def test_points_are_reproducible_and_fewer_are_a_subset_of_more():
    mask, bbox = object_mask(), [6.0, 4.0, 14.0, 8.0]
    ten = sample_box_points(mask, bbox, 10, point_generator(3, 12))
    assert ten == sample_box_points(mask, bbox, 10, point_generator(3, 12))
    five = sample_box_points(mask, bbox, 5, point_generator(3, 12))
    assert five == (ten[0][:5], ten[1][:5])
    assert ten != sample_box_points(mask, bbox, 10, point_generator(4, 12))  # another seed
    assert ten != sample_box_points(mask, bbox, 10, point_generator(3, 13))  # another object


def full_coco() -> dict:
    """One 24x32 image: a polygon object, an RLE object, a crowd region, a zero-area object."""
    rle = mask_util.encode(np.asfortranarray(object_mask().astype(np.uint8)))
    rle = {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": HEIGHT, "width": WIDTH}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 64.0,
             "bbox": [20.0, 14.0, 8.0, 8.0],
             "segmentation": [[20.0, 14.0, 28.0, 14.0, 28.0, 22.0, 20.0, 22.0]]},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 112,
             "bbox": [2.0, 2.0, 24.0, 14.0], "segmentation": rle},
            {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 4,
             "bbox": [0.0, 0.0, 2.0, 2.0], "segmentation": [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0]]},
            {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 0,
             "bbox": [1.0, 20.0, 0.0, 2.0], "segmentation": []},
        ],
    }  # fmt: skip


def test_coco_with_points_replaces_masks_and_keeps_crowd_regions():
    coco = full_coco()
    pointed = coco_with_points(coco, 6, 0, skip_ids=[4])
    square, blob, crowd = pointed["annotations"]
    assert "segmentation" not in square and square["bbox"] == [20.0, 14.0, 8.0, 8.0]
    assert len(square["point_coords"]) == 6 and all(label == 1 for label in square["point_labels"])
    mask = annotation_mask(coco["annotations"][1]["segmentation"], HEIGHT, WIDTH)
    assert np.array_equal(mask, object_mask())
    points = np.floor(np.array(blob["point_coords"])).astype(int)
    assert blob["point_labels"] == mask[points[:, 1], points[:, 0]].astype(int).tolist()
    assert crowd == coco["annotations"][2]  # as it was
    assert coco == full_coco()  # the input is left alone
    del coco["annotations"][0]["segmentation"]
    with pytest.raises(ValueError, match=r"Annotation 1 \(image 1\) has no segmentation to label"):
        coco_with_points(coco, 6, 0)


def test_written_point_annotations_pass_the_checker_and_nothing_is_overwritten(tmp_path):
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "a.png")
    (tmp_path / "full.json").write_text(json.dumps(full_coco()))
    output = tmp_path / "points.json"
    counts = write_point_annotations(str(tmp_path / "full.json"), str(tmp_path), str(output), 6, 0)
    written = json.loads(output.read_text())
    assert written == coco_with_points(full_coco(), 6, 0, skip_ids=[4])
    inside = sum(sum(a.get("point_labels", [])) for a in written["annotations"])
    assert counts == {
        "objects": 2,
        "crowd": 1,
        "skipped": 1,
        "inside": inside,
        "outside": 12 - inside,
    }
    assert validate_coco_json(str(output), str(tmp_path)) == []
    with pytest.raises(FileExistsError, match=r"points\.json exists; give a new output file"):
        write_point_annotations(str(tmp_path / "full.json"), str(tmp_path), str(output), 6, 0)


def full_labels() -> np.ndarray:
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[object_mask()] = 1
    labels[20:, :3] = 2  # 12 pixels
    labels[0, 0] = 255
    return labels


def test_sparse_labels_keep_n_pixels_per_class():
    labels = full_labels()
    sparse = sparse_label_map(labels, 20, point_generator(0, "a"), 255)
    values, counts = np.unique(sparse, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {
        0: 20,
        1: 20,
        2: 12,  # all of a class with fewer
        255: HEIGHT * WIDTH - 52,
    }
    kept = sparse != 255
    assert np.array_equal(sparse[kept], labels[kept])  # each point keeps its class
    assert np.array_equal(sparse, sparse_label_map(labels, 20, point_generator(0, "a"), 255))
    ten = sparse_label_map(labels, 10, point_generator(0, "a"), 255)
    assert np.array_equal(ten[ten != 255], sparse[ten != 255])  # 10 of the 20


def test_sparse_label_folder_mirrors_the_label_folder(tmp_path):
    (tmp_path / "labels" / "sub").mkdir(parents=True)
    Image.fromarray(full_labels()).save(tmp_path / "labels" / "a.png")
    Image.fromarray(full_labels()).save(tmp_path / "labels" / "sub" / "b.png")
    written = write_sparse_label_folder(str(tmp_path / "labels"), str(tmp_path / "out"), 5, 0, 255)
    assert written == 2
    first = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    second = np.asarray(Image.open(tmp_path / "out" / "sub" / "b.png"))
    assert (first != 255).sum() == 15 and (second != 255).sum() == 15
    assert not np.array_equal(first, second)  # each file its own points
    Image.new("RGB", (4, 4)).save(tmp_path / "labels" / "rgb.png")
    with pytest.raises(ValueError, match=r"Label file .*rgb\.png has PIL mode RGB"):
        write_sparse_label_folder(str(tmp_path / "labels"), str(tmp_path / "out2"), 5, 0, 255)


def test_embedded_point_splits():
    """The quickstarts' training splits: the embedded train splits, with points."""
    ten = DatasetCatalog.get("textured_shapes_instances_train_points10")
    five = DatasetCatalog.get("textured_shapes_instances_train_points5")
    full = DatasetCatalog.get("textured_shapes_instances_train")
    assert [r["file_name"] for r in ten] == [r["file_name"] for r in full]
    for record, fewer in zip(ten, five, strict=True):
        for annotation, subset in zip(record["annotations"], fewer["annotations"], strict=True):
            assert len(annotation["point_labels"]) == 10 and "segmentation" not in annotation
            assert subset["point_coords"] == annotation["point_coords"][:5]
    metadata = MetadataCatalog.get("textured_shapes_instances_train_points10")
    assert metadata.evaluator_type == "coco" and metadata.thing_classes[0] == "blob"
    (sparse,) = DatasetCatalog.get("textured_shapes_sem_seg_train_points20")[:1]
    assert sparse["sparse_labels"] is True
    labels = np.asarray(Image.open(sparse["sem_seg_file_name"]))
    values, counts = np.unique(labels, return_counts=True)
    assert values[-1] == 255 and (counts[:-1] <= 20).all() and len(values) > 2
    assert MetadataCatalog.get("textured_shapes_sem_seg_train_points20").sparse_labels is True
