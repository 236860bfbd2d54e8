"""
Point annotations of instances (PointSup's COCO json form): the checker's errors and documented
behaviours, loading into records, and the instance mapper moving the points with the image
(resize, flip, crop) into the instances' gt_point_coords and gt_point_labels.
"""

import copy
import json
import logging

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from pointrend_d2.data import InstanceDatasetMapper
from pointrend_d2.data.coco_json import load_checked_coco_json, validate_coco_json

HEIGHT, WIDTH = 20, 30


def points_coco() -> dict:
    """A json of one 20x30 image: two objects with points, one crowd region without."""
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": HEIGHT, "width": WIDTH}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [2, 3, 10, 8],
             "point_coords": [[3.5, 4.0], [11.0, 10.5], [12.0, 11.0]], "point_labels": [1, 0, 1]},
            {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "bbox": [15, 5, 10, 10],
             "point_coords": [[20.0, 10.0], [16.0, 6.0]], "point_labels": [1, 1]},
            {"id": 3, "image_id": 1, "category_id": 2, "iscrowd": 1, "bbox": [0, 15, 5, 5],
             "segmentation": [[0, 15, 5, 15, 5, 20, 0, 20]]},
        ],
    }  # fmt: skip


def write(tmp_path, coco: dict) -> tuple[str, str]:
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "a.png")
    json_file = tmp_path / "points.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(tmp_path)


def test_point_annotations_load_into_records(tmp_path, caplog):
    json_file, image_root = write(tmp_path, points_coco())
    with caplog.at_level(logging.WARNING):
        (record,) = load_checked_coco_json(json_file, image_root)
    assert not caplog.records
    first, second, crowd = record["annotations"]
    assert first["point_coords"] == [[3.5, 4.0], [11.0, 10.5], [12.0, 11.0]]
    assert first["point_labels"] == [1, 0, 1] and second["point_labels"] == [1, 1]
    assert "point_coords" not in crowd and crowd["iscrowd"] == 1


def edit(index: int, **values):
    def mutate(coco):
        coco["annotations"][index].update(values)

    return mutate


def drop(index: int, key: str):
    def mutate(coco):
        del coco["annotations"][index][key]

    return mutate


def mask_instead_of_points(index: int):
    def mutate(coco):
        annotation = coco["annotations"][index]
        del annotation["point_coords"], annotation["point_labels"]
        annotation["segmentation"] = [[15, 5, 25, 5, 25, 15]]

    return mutate


WHERE = r"COCO json .*points\.json: annotation 1 \(image 1, a\.png\)"
BAD_POINTS = {
    "outside-the-image": (
        edit(0, point_coords=[[3.5, 4.0], [31.0, 10.5], [12.0, 11.0]]),
        WHERE + r": point 1 \(31, 10.5\) lies outside the 20x30 \(HxW\) image; does the",
    ),
    "x-and-y-swapped": (
        edit(0, point_coords=[[4.0, 3.5], [10.5, 25.0], [11.0, 12.0]]),
        r"point 1 \(10.5, 25\) lies outside the 20x30 \(HxW\) image; x and y swapped\?",
    ),
    "outside-the-box": (
        edit(0, point_coords=[[3.5, 4.0], [11.0, 10.5], [20.0, 11.0]]),
        WHERE
        + r": point 2 \(20, 11\) lies outside its 'bbox' \[2, 3, 10, 8\] \(x 2..12, y 3..11\)",
    ),
    "label-not-0-or-1": (
        edit(0, point_labels=[1, 2, 0]),
        WHERE + r": point_labels \[2\] are not 0 or 1; .*\(class ids\? The class is the ann",
    ),
    "label-not-a-number": (edit(0, point_labels=[1, "yes", 0]), r"point_labels \['yes'\] are not"),
    "labels-of-another-count": (
        edit(0, point_labels=[1, 0]),
        WHERE + r": 3 point_coords but point_labels 2; give one label per point",
    ),
    "flat-coordinates": (
        edit(0, point_coords=[3.5, 4.0, 11.0, 10.5, 12.0, 11.0]),
        r"'point_coords' must be a list of \[x, y\] pairs of finite numbers: a flat list; group",
    ),
    "coords-without-labels": (drop(0, "point_labels"), WHERE + r": has 'point_coords' but no 'po"),
    "points-on-a-crowd-region": (
        edit(2, point_coords=[[1.0, 16.0]], point_labels=[1]),
        r"annotation 3 .*: a crowd region \('iscrowd': 1\) with \['point_coords', 'point_labels'\]",
    ),
    "an-object-without-points": (
        drop(1, "point_coords"),
        r"annotation 2 .*: has 'point_labels' but no 'point_coords'",
    ),
    "a-mask-among-points": (
        mask_instead_of_points(1),
        r"annotation 2 .*: has no 'point_coords' while 1 annotation\(s\) of the json have points",
    ),
    "every-point-labelled-1": (
        edit(0, point_labels=[1, 1, 1]),
        r"COCO json .*points\.json: all 5 points are labelled 1 \(inside their object\); .*"
        r"'is labelled' rather than inside/outside\?",
    ),
}


@pytest.mark.parametrize("case", list(BAD_POINTS), ids=list(BAD_POINTS))
def test_bad_point_annotation_is_named(tmp_path, case):
    mutate, message = BAD_POINTS[case]
    coco = points_coco()
    mutate(coco)
    with pytest.raises(ValueError, match=message):
        validate_coco_json(*write(tmp_path, coco))


def test_object_without_points_trains_its_box_with_one_warning(tmp_path, caplog):
    coco = points_coco()
    coco["annotations"][1].update(point_coords=[], point_labels=[])
    with caplog.at_level(logging.WARNING):
        (record,) = load_checked_coco_json(*write(tmp_path, coco))
    assert "1 object(s) have no points (empty point_coords), ids [2]" in caplog.text
    mapped = mapper()(record)["instances"]
    assert mapped.gt_point_labels[1].tolist() == [-1, -1, -1]  # padding only


def test_one_objects_points_all_alike_are_fine(tmp_path):
    """A small object, or points that all missed a thin one: no error for one object."""
    coco = points_coco()
    coco["annotations"][0]["point_labels"] = [0, 0, 0]
    assert validate_coco_json(*write(tmp_path, coco)) == []


def record_with_points(tmp_path) -> dict:
    json_file, image_root = write(tmp_path, points_coco())
    (record,) = load_checked_coco_json(json_file, image_root)
    return record


def mapper(augmentations=()) -> InstanceDatasetMapper:
    return InstanceDatasetMapper(
        True, augmentations=list(augmentations), image_format="BGR", use_instance_mask=True
    )


def test_points_become_padded_instance_fields(tmp_path):
    instances = mapper()(record_with_points(tmp_path))["instances"]
    assert len(instances) == 2  # the crowd region is not trained on
    assert instances.gt_point_coords.dtype == torch.float32
    expected = [[[3.5, 4.0], [11.0, 10.5], [12.0, 11.0]], [[20.0, 10.0], [16.0, 6.0], [0.0, 0.0]]]
    assert instances.gt_point_coords.tolist() == expected
    assert instances.gt_point_labels.tolist() == [[1, 0, 1], [1, 1, -1]]
    assert not instances.has("gt_masks")


def test_points_follow_a_resize_and_a_flip(tmp_path):
    record = record_with_points(tmp_path)
    augmentations = [T.Resize((40, 60)), T.RandomFlip(prob=1.0)]
    instances = mapper(augmentations)(record)["instances"]
    # Twice the size, then x -> 60 - x: the same points of the objects, in pixel coordinates.
    points = torch.tensor(points_coco()["annotations"][0]["point_coords"]) * 2
    points[:, 0] = 60 - points[:, 0]
    torch.testing.assert_close(instances.gt_point_coords[0], points)
    box = instances.gt_boxes.tensor[0]
    inside = (points >= box[:2]) & (points <= box[2:])
    assert inside.all()  # still in their flipped box


def test_points_cropped_away_are_ignored_and_emptied_objects_dropped_with_theirs(tmp_path):
    record = record_with_points(tmp_path)
    # Keep x 0..14: the first object whole but its point at x 11..12 near the edge, the second
    # object (x 15..25) cropped away with its points.
    crop = T.CropTransform(0, 0, 14, 20)
    instances = mapper([crop])(record)["instances"]
    assert len(instances) == 1
    assert instances.gt_point_labels.tolist() == [[1, 0, 1]]
    crop = T.CropTransform(4, 0, 26, 20)  # x 4..30: the first object's point at x 3.5 is cut
    instances = mapper([crop])(record)["instances"]
    assert instances.gt_point_labels.tolist() == [[-1, 0, 1], [1, 1, -1]]
    assert instances.gt_point_coords[1, 0].tolist() == [16.0, 10.0]


def test_records_without_points_map_as_before(tmp_path):
    record = copy.deepcopy(record_with_points(tmp_path))
    for annotation in record["annotations"]:
        annotation.pop("point_coords", None), annotation.pop("point_labels", None)
        annotation["bbox_mode"] = BoxMode.XYWH_ABS
    instances = mapper()(record)["instances"]
    assert not instances.has("gt_point_coords") and len(instances) == 2
    assert np.allclose(instances.gt_boxes.tensor[0].tolist(), [2, 3, 12, 11])
