"""Mask AP and recall by object size and width (BinnedCOCOeval, COCOSizeThinnessEvaluator) on
a synthetic COCO dataset with known answers, against pycocotools' own COCOeval."""

import contextlib
import copy
import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pointrend_d2.evaluation import (
    SIZE_BINNING,
    WIDTH_BINNING,
    BinnedCOCOeval,
    COCOSizeThinnessEvaluator,
)
from pointrend_d2.evaluation.boundary_ap import mask_to_rle
from pointrend_d2.evaluation.instance_size_thinness import load_coco_results

HEIGHT, WIDTH = 64, 96


def scene_masks() -> dict[str, np.ndarray]:
    """Ground truths "line" (2 x 40 px: small, 2 px wide), "disc" (radius 10: small, wide) and
    "square" (34 x 34: medium, wide); "false_line" (2 x 40 px) overlaps none of them."""
    masks = {
        name: np.zeros((HEIGHT, WIDTH), dtype=bool) for name in ("line", "square", "false_line")
    }
    masks["line"][5:7, 5:45] = True
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    masks["disc"] = (rows - 40) ** 2 + (cols - 20) ** 2 <= 100
    masks["square"][20:54, 50:84] = True
    masks["false_line"][58:60, 50:90] = True
    return masks


def gt_dataset() -> dict:
    masks = scene_masks()
    annotations = []
    for ann_id, name in enumerate(("line", "disc", "square"), start=1):
        rle = mask_to_rle(masks[name])
        annotations.append(
            {
                "id": ann_id,
                "image_id": 1,
                "category_id": 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                # The mask's pixel count, so that COCO's area ranges see what the bins see.
                "area": int(masks[name].sum()),
                "bbox": mask_util.toBbox(rle).tolist(),
                "iscrowd": 0,
            }
        )
    return {
        "info": {},
        "images": [{"id": 1, "height": HEIGHT, "width": WIDTH, "file_name": "image.png"}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": annotations,
    }


# The false line scores highest, then the disc and the square (both exact).
DETECTIONS = (("false_line", 0.95), ("disc", 0.9), ("square", 0.8))


def detection_results() -> list[dict]:
    masks = scene_masks()
    return [
        {"image_id": 1, "category_id": 1, "segmentation": mask_to_rle(masks[name]), "score": score}
        for name, score in DETECTIONS
    ]


def quiet(function, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


@pytest.fixture
def coco_gt() -> COCO:
    coco = COCO()
    coco.dataset = gt_dataset()
    quiet(coco.createIndex)
    return coco


def evaluated(evaluation):
    quiet(evaluation.evaluate)
    quiet(evaluation.accumulate)
    return evaluation


def test_width_bins_ignore_ground_truths_and_unmatched_detections_outside_them(coco_gt):
    evaluation = evaluated(
        BinnedCOCOeval(coco_gt, load_coco_results(coco_gt, detection_results()), WIDTH_BINNING)
    )
    assert evaluation.params.areaRngLbl == ["all", *WIDTH_BINNING.labels]
    ap = evaluation.average_precision()
    # <= 2 px: the line, missed, and the false line, unmatched: AP 0. > 8 px: the disc and the
    # square, both exact, and the false line ignored as an unmatched detection outside the bin.
    assert ap[1] == 0 and ap[4] == 1
    assert np.isnan(ap[2]) and np.isnan(ap[3])
    assert evaluation.average_precision(iou_index=0)[4] == 1
    assert evaluation.matched_ground_truths() == [
        {1: False, 2: True, 3: True},
        {1: False},
        {},
        {},
        {2: True, 3: True},
    ]
    # "all" is COCO's mask AP.
    plain = evaluated(COCOeval(coco_gt, load_coco_results(coco_gt, detection_results()), "segm"))
    assert ap[0] == pytest.approx(np.mean(plain.eval["precision"][:, :, :, 0, -1]), abs=1e-12)


def test_size_bins_equal_cocos_area_ranges_on_mask_areas(coco_gt):
    binned = evaluated(
        BinnedCOCOeval(coco_gt, load_coco_results(coco_gt, detection_results()), SIZE_BINNING)
    )
    plain = COCOeval(coco_gt, load_coco_results(coco_gt, detection_results()), "segm")
    # COCO's area ranges are inclusive: these are the size bins on whole pixel counts.
    plain.params.areaRng = [[0, 1e10], [0, 1023], [1024, 9215], [9216, 1e10]]
    plain.params.areaRngLbl = ["all", "small", "medium", "large"]
    evaluated(plain)
    np.testing.assert_array_equal(binned.eval["precision"], plain.eval["precision"])
    np.testing.assert_array_equal(binned.eval["recall"], plain.eval["recall"])


def test_ground_truth_bins_are_measured_once_per_cache(coco_gt):
    cache = {}
    for _ in range(2):
        dt = load_coco_results(coco_gt, detection_results())
        evaluated(BinnedCOCOeval(coco_gt, dt, WIDTH_BINNING, gt_bin_cache=cache))
    assert cache == {1: 0, 2: 3, 3: 3}


def test_no_detections_give_zero_ap_where_there_are_ground_truths(coco_gt):
    evaluation = evaluated(BinnedCOCOeval(coco_gt, load_coco_results(coco_gt, []), SIZE_BINNING))
    ap = evaluation.average_precision()
    assert ap[:3].tolist() == [0, 0, 0] and np.isnan(ap[3])
    assert evaluation.matched_ground_truths()[0] == {1: False, 2: False, 3: False}


# ------------------------------------------------------------------------------------------
# The evaluator
# ------------------------------------------------------------------------------------------


@pytest.fixture
def coco_dataset(tmp_path, register_dataset):
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps(gt_dataset()))
    return register_dataset(
        [{"image_id": 1, "file_name": "image.png", "height": HEIGHT, "width": WIDTH}],
        "size_thinness_coco",
        json_file=str(json_file),
        thing_classes=["thing"],
        thing_dataset_id_to_contiguous_id={1: 0},
        evaluator_type="coco",
    )


def model_output(stage_masks: dict[str, list[str]]) -> dict:
    """The detections of DETECTIONS with each mask field's masks, by scene mask name ("" for an
    empty mask)."""
    masks = scene_masks()
    boxes = [mask_util.toBbox(mask_to_rle(masks[name])) for name, _ in DETECTIONS]
    instances = Instances((HEIGHT, WIDTH))
    instances.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes]))
    instances.scores = torch.tensor([score for _, score in DETECTIONS])
    instances.pred_classes = torch.zeros(len(DETECTIONS), dtype=torch.int64)
    for field, names in stage_masks.items():
        empty = np.zeros((HEIGHT, WIDTH), dtype=bool)
        instances.set(field, torch.as_tensor(np.stack([masks.get(n, empty) for n in names])))
    return {"instances": instances}


def test_evaluator_reports_ap_and_recall_by_bin_for_each_stage(coco_dataset):
    evaluator = COCOSizeThinnessEvaluator(coco_dataset, mask_fields=("coarse_masks", "pred_masks"))
    evaluator.reset()
    output = model_output(
        {"coarse_masks": ["false_line", "", "square"], "pred_masks": [n for n, _ in DETECTIONS]}
    )
    evaluator.process([{"image_id": 1}], [output])
    results = evaluator.evaluate()
    thin = results["size_thinness"]
    # The refined stage is the model's masks: its "all" AP is detectron2's segm AP.
    assert thin["pred_masks/AP/all"] == pytest.approx(results["segm"]["AP"], abs=1e-9)
    assert thin["pred_masks/AP/width>8px"] == 100
    assert thin["pred_masks/AP/width<=2px"] == 0
    assert thin["objects/width>8px"] == 2 and thin["objects/width<=2px"] == 1
    assert thin["objects/all"] == 3 and thin["objects/small"] == 2
    assert thin["pred_masks/object_recall/width>8px"] == 100
    # The coarse stage misses the disc, which the refined one finds.
    assert thin["coarse_masks/object_recall/width>8px"] == 50
    assert thin["coarse_masks->pred_masks/gained_objects/width>8px"] == 50
    assert thin["coarse_masks->pred_masks/lost_objects/width>8px"] == 0
    assert thin["coarse_masks->pred_masks/missed_objects/width<=2px"] == 100
    assert thin["coarse_masks/AP50/small"] == 0  # the line missed, the disc lost
    width = evaluator.breakdowns["width"]
    assert width.stages == ("coarse_masks", "pred_masks")
    assert width.counts.tolist() == [[1, 0, 1, 1], [1, 0, 0, 0], [0] * 4, [0] * 4, [0, 0, 1, 1]]


def test_evaluator_names_missing_mask_fields(coco_dataset):
    evaluator = COCOSizeThinnessEvaluator(coco_dataset, mask_fields=("coarse_masks", "pred_masks"))
    evaluator.reset()
    output = model_output({"pred_masks": [n for n, _ in DETECTIONS]})
    with pytest.raises(KeyError, match=r"have no \['coarse_masks'\] \(they have \['pred_boxes'"):
        evaluator.process([{"image_id": 1}], [output])
    with pytest.raises(ValueError, match="mask_fields must be 1 to 16 distinct fields"):
        COCOSizeThinnessEvaluator(coco_dataset, mask_fields=())


def test_evaluator_without_detections_reports_zero_recall(coco_dataset):
    evaluator = COCOSizeThinnessEvaluator(coco_dataset)
    evaluator.reset()
    output = model_output({"pred_masks": [n for n, _ in DETECTIONS]})
    output["instances"] = output["instances"][torch.zeros(3, dtype=torch.bool)]
    evaluator.process([{"image_id": 1}], [copy.deepcopy(output)])
    thin = evaluator.evaluate()["size_thinness"]
    assert thin["pred_masks/AP/all"] == 0 and thin["pred_masks/object_recall/all"] == 0
    assert np.isnan(thin["pred_masks/AP/large"])
