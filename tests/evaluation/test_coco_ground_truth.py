"""
COCO evaluation of ground-truth json files as labelling tools write them: without 'info',
'iscrowd' or 'area', which pycocotools' evaluation reads and the dataset checks let pass.
"""

import json
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances
from PIL import Image

from pointrend_d2.data import register_coco_instances, validate_coco_json
from pointrend_d2.evaluation import COCOBoundaryEvaluator, COCOInstanceEvaluator

H, W = 32, 40
# Two square objects, as polygons: x0, y0, x1, y1 (12x10 and 16x20 px).
BOXES = [(4, 4, 16, 14), (20, 8, 36, 28)]


def labelling_tool_json(tmp_path, keep: tuple = ()) -> tuple[str, str]:
    """A COCO json of one 32x40 image and two square objects, with only the ``keep`` keys of
    'info', 'iscrowd' and 'area'; (json_file, image_root)."""
    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    annotations = []
    for index, (x0, y0, x1, y1) in enumerate(BOXES, start=1):
        annotation = {
            "id": index,
            "image_id": 1,
            "category_id": 1,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
        }
        if "iscrowd" in keep:
            annotation["iscrowd"] = 0
        if "area" in keep:
            annotation["area"] = (x1 - x0) * (y1 - y0)
        annotations.append(annotation)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "square"}],
    }
    if "info" in keep:
        coco["info"] = {}
    json_file = tmp_path / "tool.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(tmp_path)


def perfect_predictions():
    masks = np.zeros((len(BOXES), H, W), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, BOXES, strict=True):
        mask[y0:y1, x0:x1] = True
    instances = Instances((H, W))
    instances.pred_boxes = Boxes(torch.tensor(BOXES, dtype=torch.float32))
    instances.scores = torch.tensor([0.9, 0.8])
    instances.pred_classes = torch.zeros(len(BOXES), dtype=torch.int64)
    instances.pred_masks = torch.from_numpy(masks)
    return [{"image_id": 1, "height": H, "width": W}], [{"instances": instances}]


@pytest.mark.parametrize("evaluator_class", [COCOInstanceEvaluator, COCOBoundaryEvaluator])
def test_json_without_info_iscrowd_or_area_is_evaluated(
    tmp_path, temporary_datasets, evaluator_class
):
    json_file, image_root = labelling_tool_json(tmp_path)
    assert validate_coco_json(json_file, image_root) == []  # the dataset checks pass it
    name = register_coco_instances(f"tool_{uuid.uuid4().hex[:8]}", {}, json_file, image_root)
    DatasetCatalog.get(name)  # as the test loader does: sets the class-id mapping
    evaluator = evaluator_class(name, distributed=False)
    evaluator.reset()
    evaluator.process(*perfect_predictions())
    results = evaluator.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    # The completed ground truth: COCO's area is the polygon's pixels.
    ground_truth = evaluator._coco_api
    assert ground_truth.dataset["info"] == {}
    assert [a["iscrowd"] for a in ground_truth.dataset["annotations"]] == [0, 0]
    assert [a["area"] for a in ground_truth.dataset["annotations"]] == [120.0, 320.0]


def test_keys_present_are_kept(tmp_path, temporary_datasets):
    json_file, image_root = labelling_tool_json(tmp_path, keep=("info", "iscrowd", "area"))
    with open(json_file) as f:
        original = json.load(f)
    name = register_coco_instances(f"tool_{uuid.uuid4().hex[:8]}", {}, json_file, image_root)
    ground_truth = COCOInstanceEvaluator(name, distributed=False)._coco_api
    assert ground_truth.dataset["annotations"] == original["annotations"]
