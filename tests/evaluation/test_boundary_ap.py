"""Boundary AP: hand-worked cases, a brute-force reference, and COCOBoundaryEvaluator end to end."""

import contextlib
import io
import json
import math
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances
from numpy.lib.stride_tricks import sliding_window_view
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pointrend_d2.evaluation import COCOBoundaryEvaluator
from pointrend_d2.evaluation.boundary_ap import (
    BoundaryCOCOeval,
    boundary_ap_iou,
    boundary_dilation,
    boundary_iou,
    mask_boundary_band,
    mask_iou,
    mask_to_rle,
    rle_boundary_band,
)

# ---------------------------------------------------------------------------------------------
# Brute-force references


def brute_band(mask: np.ndarray, dilation_ratio: float) -> np.ndarray:
    """Pixels of the mask with a pixel outside it (outside the image included) within Chebyshev
    distance d: the definition, by an explicit (2d+1)^2 window at every pixel."""
    height, width = mask.shape
    d = max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))
    padded = np.pad(mask != 0, d, constant_values=False)
    interior = sliding_window_view(padded, (2 * d + 1, 2 * d + 1)).all(axis=(2, 3))
    return (mask != 0) & ~interior


def official_band(mask: np.ndarray, dilation_ratio: float) -> np.ndarray:
    """boundary-iou-api's ``mask_to_boundary``, step by step on the whole image."""
    h, w = mask.shape
    dilation = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=dilation)[1 : h + 1, 1 : w + 1]
    return (mask.astype(np.uint8) - eroded).astype(bool)


def brute_boundary_iou(gt: np.ndarray, dt: np.ndarray, dilation_ratio: float) -> float:
    g, p = brute_band(gt, dilation_ratio), brute_band(dt, dilation_ratio)
    union = np.count_nonzero(g | p)
    return np.count_nonzero(g & p) / union if union else 0.0


def random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A few rectangles, sometimes with salt noise or a hole: ragged, border-touching shapes."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for _ in range(rng.integers(1, 4)):
        y, x = rng.integers(0, height), rng.integers(0, width)
        h, w = rng.integers(1, height), rng.integers(1, width)
        mask[y : y + h, x : x + w] = 1
    if rng.random() < 0.3:
        mask |= (rng.random((height, width)) < 0.2).astype(np.uint8)
    if rng.random() < 0.3:
        y, x = rng.integers(0, height), rng.integers(0, width)
        mask[y : y + 4, x : x + 4] = 0
    return mask


def square(height, width, y0, x0, size) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0 : y0 + size, x0 : x0 + size] = 1
    return mask


# ---------------------------------------------------------------------------------------------
# Pure functions


def test_dilation_is_the_official_rounding():
    assert boundary_dilation(100, 100, 0.02) == 3  # 2.83
    assert boundary_dilation(300, 300, 0.02) == 8  # 8.49
    assert boundary_dilation(10, 10, 0.02) == 1  # 0.28, at least 1
    assert boundary_dilation(480, 640, 0.02) == 16  # exactly 16


@pytest.mark.parametrize("dilation_ratio", [0.005, 0.02, 0.05, 0.2])
def test_band_equals_official_erosion_and_brute_force(dilation_ratio):
    rng = np.random.default_rng(0)
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(3, 70, 2))
        mask = random_mask(rng, height, width)
        band = mask_boundary_band(mask, dilation_ratio)
        assert band.dtype == bool and band.shape == mask.shape
        np.testing.assert_array_equal(band, official_band(mask, dilation_ratio))
        np.testing.assert_array_equal(band, brute_band(mask, dilation_ratio))
        # bool input, and the RLE path, give the same band
        np.testing.assert_array_equal(mask_boundary_band(mask.astype(bool), dilation_ratio), band)
        band_rle = rle_boundary_band(mask_to_rle(mask), dilation_ratio)
        np.testing.assert_array_equal(mask_util.decode(band_rle).astype(bool), band)


def test_shifted_square_by_hand():
    # 100x100 image: d = round(0.02 * 141.4) = 3. A 40x40 square and the same moved 1 px right.
    gt, dt = square(100, 100, 20, 20, 40), square(100, 100, 20, 21, 40)
    assert mask_boundary_band(gt, 0.02).sum() == 40 * 40 - 34 * 34  # 444
    # G∩P is 40x39; the interiors of G and P cover 34x35 of it: 1560 - 1190 = 370 band pixels in
    # common, union 444 + 444 - 370 = 518.
    assert boundary_iou(gt, dt) == pytest.approx(370 / 518)  # 5/7
    assert mask_iou(gt, dt) == pytest.approx(1560 / 1640)
    assert boundary_ap_iou(gt, dt) == pytest.approx(370 / 518)


@pytest.mark.parametrize("width", [1, 2, 3])
def test_thin_line_band_is_the_whole_line(width):
    # 64x64: d = round(0.02 * 90.5) = 2; a line at most 3 px wide is all boundary, so Boundary IoU
    # equals Mask IoU (boundary-sensitive metrics do not over-penalise thin objects).
    gt = np.zeros((64, 64), np.uint8)
    gt[30 : 30 + width, 10:51] = 1
    dt = np.roll(gt, 1, axis=0)
    np.testing.assert_array_equal(mask_boundary_band(gt, 0.02), gt.astype(bool))
    assert boundary_iou(gt, dt) == pytest.approx(mask_iou(gt, dt))
    assert boundary_iou(gt, dt) == pytest.approx((width - 1) / (width + 1))


def test_mask_with_hole():
    # 100x100, d = 3: a 60x60 square with a 10x10 hole has an outer and an inner band.
    gt = square(100, 100, 20, 20, 60)
    gt[45:55, 45:55] = 0
    filled = square(100, 100, 20, 20, 60)
    outer, inner = 60 * 60 - 54 * 54, 16 * 16 - 10 * 10
    assert mask_boundary_band(gt, 0.02).sum() == outer + inner
    # Filling the hole costs little mask IoU but the whole inner band.
    assert mask_iou(gt, filled) == pytest.approx(3500 / 3600)
    assert boundary_iou(gt, filled) == pytest.approx(outer / (outer + inner))


def test_empty_masks():
    empty, gt = np.zeros((50, 50), np.uint8), square(50, 50, 10, 10, 20)
    assert not mask_boundary_band(empty, 0.02).any()
    assert boundary_iou(gt, empty) == 0.0
    assert boundary_iou(empty, empty) == 0.0  # as pycocotools' IoU of two empty RLEs
    assert boundary_iou(gt, gt) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        boundary_iou(gt, gt[:10])


# ---------------------------------------------------------------------------------------------
# BoundaryCOCOeval on in-memory COCO objects


def coco_from(masks, crowd=(), category_ids=None, size=None):
    """A pycocotools COCO of one image holding ``masks`` (ground truths, RLE)."""
    height, width = size or masks[0].shape
    annotations = []
    for index, mask in enumerate(masks):
        rle = mask_to_rle(mask)
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append(
            {
                "id": index + 1,
                "image_id": 1,
                "category_id": category_ids[index] if category_ids else 1,
                "segmentation": rle,
                "area": float(mask.sum()),
                "bbox": mask_util.toBbox(rle).tolist(),
                "iscrowd": int(index in crowd),
            }
        )
    coco = COCO()
    coco.dataset = {
        "info": {},
        "images": [{"id": 1, "height": height, "width": width, "file_name": "x.png"}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def detections(coco, masks, scores, category_ids=None):
    results = []
    for index, (mask, score) in enumerate(zip(masks, scores, strict=True)):
        rle = mask_to_rle(mask)
        rle["counts"] = rle["counts"].decode("ascii")
        category = category_ids[index] if category_ids else 1
        results.append(
            {"image_id": 1, "category_id": category, "segmentation": rle, "score": score}
        )
    with contextlib.redirect_stdout(io.StringIO()):
        return coco.loadRes(results)


def run(evaluator_class, coco_gt, coco_dt, **kwargs):
    ev = evaluator_class(coco_gt, coco_dt, **kwargs)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def segm_and_boundary_ap(gt_masks, dt_masks, scores, dilation_ratio=0.02):
    coco = coco_from(gt_masks)
    segm = run(COCOeval, coco, detections(coco, dt_masks, scores), iouType="segm")
    boundary = run(
        BoundaryCOCOeval, coco, detections(coco, dt_masks, scores), dilation_ratio=dilation_ratio
    )
    return segm.stats, boundary.stats


@pytest.mark.parametrize("dilation_ratio", [0.02, 0.1])
def test_pair_iou_is_min_of_mask_and_brute_force_boundary_iou(dilation_ratio):
    rng = np.random.default_rng(1)
    height, width = 40, 52
    gts = [random_mask(rng, height, width) for _ in range(4)]
    dts = [random_mask(rng, height, width) for _ in range(5)] + [np.zeros_like(gts[0])]
    scores = rng.permutation(len(dts)).astype(float) / len(dts) + 0.05
    coco = coco_from(gts, crowd=(2,))
    ev = run(BoundaryCOCOeval, coco, detections(coco, dts, scores), dilation_ratio=dilation_ratio)
    ious = ev.ious[1, 1]
    order = np.argsort(-scores, kind="mergesort")  # the order COCOeval scores detections in
    assert ious.shape == (len(dts), len(gts))
    for i, k in enumerate(order):
        dt = dts[k]
        for j, gt in enumerate(gts):
            if j == 2:  # crowd: pycocotools' crowd mask IoU, |G∩P| / |P|, as the official code
                expected = np.count_nonzero(gt & dt) / max(np.count_nonzero(dt), 1)
            else:
                biou = brute_boundary_iou(gt, dt, dilation_ratio)
                # the band-RLE IoU of pycocotools is exactly Boundary IoU
                band_iou = mask_util.iou(
                    [rle_boundary_band(mask_to_rle(dt), dilation_ratio)],
                    [rle_boundary_band(mask_to_rle(gt), dilation_ratio)],
                    [0],
                )[0, 0]
                assert band_iou == pytest.approx(biou, abs=1e-12)
                assert boundary_iou(gt, dt, dilation_ratio) == pytest.approx(biou, abs=1e-12)
                expected = min(mask_iou(gt, dt), biou)
                assert boundary_ap_iou(gt, dt, dilation_ratio) == pytest.approx(expected)
            assert ious[i, j] == pytest.approx(expected, abs=1e-12), (i, j)


def test_perfect_prediction_is_100():
    gts = [square(120, 120, 10, 10, 40), square(120, 120, 60, 50, 50)]
    gts[1][70:80, 70:80] = 0  # with a hole
    segm, boundary = segm_and_boundary_ap(gts, gts, [0.9, 0.8])
    assert segm[0] == pytest.approx(1.0) and boundary[0] == pytest.approx(1.0)


def test_empty_prediction_scores_zero():
    gt = [square(80, 80, 20, 20, 30)]
    segm, boundary = segm_and_boundary_ap(gt, [np.zeros((80, 80), np.uint8)], [0.9])
    assert segm[0] == 0.0 and boundary[0] == 0.0


def test_one_pixel_shift_of_a_large_object_costs_boundary_ap_only():
    # 300x300, d = 8; a 200x200 (large) square moved 1 px: mask IoU 199/201 = 0.990 passes all
    # ten thresholds; Boundary IoU 5760 / 6528 = 0.882 passes 0.50..0.85 only (8 of 10).
    gt, dt = square(300, 300, 50, 50, 200), square(300, 300, 50, 51, 200)
    assert boundary_iou(gt, dt) == pytest.approx(5760 / 6528)
    segm, boundary = segm_and_boundary_ap([gt], [dt], [0.9])
    assert segm[0] == pytest.approx(1.0) and segm[5] == pytest.approx(1.0)  # AP, APl
    assert boundary[0] == pytest.approx(0.8) and boundary[5] == pytest.approx(0.8)
    assert boundary[1] == pytest.approx(1.0)  # AP50


def test_interior_error_of_a_large_object_still_counts():
    # A prediction that is only the ground truth's band (a ring d = 8 px wide, its own band) has
    # Boundary IoU 1 but Mask IoU 8064 / 67600: Boundary IoU alone would score it perfect, the
    # minimum of the two (the official Boundary AP) scores it as mask AP does.
    gt = square(300, 300, 20, 20, 260)
    dt = mask_boundary_band(gt, 0.02).astype(np.uint8)
    assert boundary_iou(gt, dt) == pytest.approx(1.0)
    assert mask_iou(gt, dt) == pytest.approx((260**2 - 244**2) / 260**2)
    segm, boundary = segm_and_boundary_ap([gt], [dt], [0.9])
    assert segm[0] == 0.0 and boundary[0] == 0.0


# ---------------------------------------------------------------------------------------------
# COCOBoundaryEvaluator end to end

H, W = 96, 128  # d = round(0.02 * 160) = 3


def polygon(x0, y0, x1, y1):
    """A pentagon (a square with a cut corner) as a COCO polygon."""
    return [[x0, y0, x1, y0, x1, y1 - 10, x1 - 10, y1, x0, y1]]


@pytest.fixture
def tiny_coco(tmp_path, temporary_datasets):
    """Two images, categories 1 "cat" and 3 "dog" (non-contiguous ids), polygon, compressed and
    uncompressed RLE, and crowd annotations. Returns the dataset name and the non-crowd ground
    truths as (image_id, dataset category id, mask)."""
    gts, images, annotations = [], [], []

    def add(image_id, category_id, mask, segmentation, iscrowd=0):
        rle = mask_to_rle(mask)
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": segmentation,
                "area": float(mask.sum()),
                "bbox": mask_util.toBbox(rle).tolist(),
                "iscrowd": iscrowd,
            }
        )
        if not iscrowd:
            gts.append((image_id, category_id, mask))

    for image_id in (1, 2):
        cv2.imwrite(str(tmp_path / f"{image_id}.png"), np.full((H, W, 3), 60 * image_id, np.uint8))
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": H, "width": W})
    for image_id, category_id, box in [(1, 1, (10, 10, 70, 70)), (2, 3, (20, 15, 75, 85))]:
        poly = polygon(*box)
        add(
            image_id,
            category_id,
            mask_util.decode(mask_util.merge(mask_util.frPyObjects(poly, H, W))),
            poly,
        )
    mask = square(H, W, 30, 80, 40)
    add(1, 3, mask, {"size": [H, W], "counts": mask_to_rle(mask)["counts"].decode("ascii")})
    mask = square(H, W, 5, 90, 20)
    add(2, 1, mask, {"size": [H, W], "counts": uncompressed_counts(mask)})
    crowd = square(H, W, 60, 90, 30)  # COCO's crowd regions are uncompressed RLEs
    add(2, 1, crowd, {"size": [H, W], "counts": uncompressed_counts(crowd)}, iscrowd=1)
    json_file = tmp_path / "instances.json"
    json_file.write_text(
        json.dumps(
            {
                "info": {"description": "boundary AP test"},
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
            }
        )
    )
    name = f"boundary_ap_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    DatasetCatalog.get(name)  # as building the test loader does: sets the class-id mapping
    return name, gts


def uncompressed_counts(mask: np.ndarray) -> list:
    """COCO's uncompressed RLE counts (column-major runs, starting with zeros)."""
    flat = mask.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return ([0] + counts) if flat[0] else counts


CONTIGUOUS = {1: 0, 3: 1}


def predictions(gts, shift=0):
    """(inputs, outputs) for ``process``: every ground truth, moved ``shift`` px right."""
    inputs, outputs = [], []
    for image_id in (1, 2):
        masks = [np.roll(m, shift, axis=1) for i, _, m in gts if i == image_id]
        classes = [CONTIGUOUS[c] for i, c, _ in gts if i == image_id]
        instances = Instances((H, W))
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.scores = torch.linspace(0.9, 0.5, len(masks))
        instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
        instances.pred_masks = torch.from_numpy(np.stack(masks).astype(bool)).reshape(-1, H, W)
        inputs.append({"image_id": image_id, "height": H, "width": W})
        outputs.append({"instances": instances})
    return inputs, outputs


def evaluate(evaluator, inputs_outputs):
    evaluator.reset()
    evaluator.process(*inputs_outputs)
    return evaluator.evaluate()


def test_evaluator_perfect_predictions(tiny_coco, caplog):
    name, gts = tiny_coco
    evaluator = COCOBoundaryEvaluator(name, distributed=False)
    with caplog.at_level("INFO"):
        results = evaluate(evaluator, predictions(gts))
    assert set(results) == {"bbox", "segm", "boundary"}
    for task in ("bbox", "segm", "boundary"):
        assert results[task]["AP"] == pytest.approx(100.0), task
        assert results[task]["AP-cat"] == pytest.approx(100.0), task
        assert results[task]["AP-dog"] == pytest.approx(100.0), task
    assert set(results["boundary"]) == set(results["segm"])
    assert "Evaluation results for boundary" in caplog.text
    assert "Per-category boundary AP" in caplog.text
    # ground-truth bands are cached: the 4 non-crowd ground truths, once for both evaluations
    assert len(evaluator._gt_band_cache) == 4
    np.testing.assert_equal(evaluate(evaluator, predictions(gts)), results)  # NaN APl: no large


def test_evaluator_shifted_predictions(tiny_coco):
    name, gts = tiny_coco
    results = evaluate(COCOBoundaryEvaluator(name, distributed=False), predictions(gts, shift=2))
    segm, boundary = results["segm"], results["boundary"]
    assert 50 < segm["AP"] < 100
    assert boundary["AP"] < segm["AP"] - 20
    assert boundary["AP75"] < segm["AP75"]
    evaluator = COCOBoundaryEvaluator(name, distributed=False, dilation_ratio=0.05)
    wider = evaluate(evaluator, predictions(gts, shift=2))["boundary"]
    assert wider["AP"] >= boundary["AP"]  # wider bands forgive a fixed shift more


def test_evaluator_without_segm_has_no_boundary(tiny_coco):
    name, gts = tiny_coco
    results = evaluate(
        COCOBoundaryEvaluator(name, distributed=False, tasks=("bbox",)), predictions(gts)
    )
    assert set(results) == {"bbox"}
    # "boundary" in tasks means the segm evaluation it needs
    results = evaluate(
        COCOBoundaryEvaluator(name, distributed=False, tasks=("boundary",)), predictions(gts)
    )
    assert set(results) == {"segm", "boundary"}


def test_evaluator_empty_predictions(tiny_coco):
    name, gts = tiny_coco
    evaluator = COCOBoundaryEvaluator(name, distributed=False, tasks=("bbox", "segm"))
    evaluator.reset()
    assert evaluator.evaluate() == {}  # nothing processed: detectron2 warns and returns {}
    inputs, outputs = predictions(gts)
    outputs = [{"instances": o["instances"][:0]} for o in outputs]  # no detected instance
    results = evaluate(evaluator, (inputs, outputs))
    assert set(results) == {"bbox", "segm", "boundary"}
    assert all(math.isnan(v) for v in results["boundary"].values())


def test_evaluator_max_dets_per_image(tiny_coco):
    # A limit other than 100 takes detectron2's COCOevalMaxDets summary (AP at maxDets[2]).
    name, gts = tiny_coco
    inputs_outputs = predictions(gts, shift=2)
    default = evaluate(COCOBoundaryEvaluator(name, distributed=False), inputs_outputs)
    evaluator = COCOBoundaryEvaluator(name, distributed=False, max_dets_per_image=20)
    np.testing.assert_equal(evaluate(evaluator, inputs_outputs), default)
