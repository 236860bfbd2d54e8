"""Boundary IoU: hand-worked cases, a brute-force reference, and detectron2's look-alike."""

import math
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator
from PIL import Image

from pointrend_d2.engine import build_evaluator
from pointrend_d2.evaluation import (
    BoundaryIoUEvaluator,
    SemSegIoUEvaluator,
    boundary_band,
    boundary_distance,
    boundary_iou_counts,
    read_label_map,
)
from tests.helpers import small_fpn_cfg

IGNORE = 255


def detectron2_sem_seg_evaluator(dataset_name: str) -> SemSegEvaluator:
    """detectron2's SemSegEvaluator, reading labels as ours do (its own reader fails under
    numpy 2)."""
    return SemSegEvaluator(dataset_name, sem_seg_loading_fn=read_label_map)


@pytest.fixture
def register_label_maps(tmp_path, register_dataset):
    """``register_label_maps(gt_maps, class_names)`` registers, for this test, a dataset with
    ground truths ``gt_maps`` (written as PNGs); returns its name."""

    def register(gt_maps, class_names):
        gt_dir = Path(tempfile.mkdtemp(prefix="gt_", dir=tmp_path))
        records = []
        for index, gt in enumerate(gt_maps):
            gt_path = gt_dir / f"gt_{index}.png"
            Image.fromarray(gt.astype(np.uint8)).save(gt_path)
            records.append(
                {
                    "file_name": f"image_{index}.png",  # never read by the evaluators
                    "sem_seg_file_name": str(gt_path),
                    "height": gt.shape[0],
                    "width": gt.shape[1],
                }
            )
        return register_dataset(
            records,
            "boundary_iou_test",
            stuff_classes=list(class_names),
            ignore_label=IGNORE,
            evaluator_type="sem_seg",
        )

    return register


def evaluate(evaluator, pred_maps, num_classes):
    """Feeds one-hot scores of ``pred_maps`` to ``evaluator``; returns its results."""
    evaluator.reset()
    for index, pred in enumerate(pred_maps):
        scores = torch.nn.functional.one_hot(torch.from_numpy(pred).long(), num_classes)
        evaluator.process(
            [{"file_name": f"image_{index}.png"}], [{"sem_seg": scores.permute(2, 0, 1).float()}]
        )
    return evaluator.evaluate()


@pytest.fixture
def boundary_iou_results(register_label_maps):
    """``boundary_iou_results(gt_maps, pred_maps, class_names, dilation_ratio=0.02)``: what
    BoundaryIoUEvaluator reports for the predictions ``pred_maps`` of ``gt_maps``."""

    def results(gt_maps, pred_maps, class_names, dilation_ratio=0.02):
        name = register_label_maps(gt_maps, class_names)
        evaluator = BoundaryIoUEvaluator(name, dilation_ratio=dilation_ratio)
        return evaluate(evaluator, pred_maps, len(class_names))["boundary_iou"]

    return results


def brute_force_band(mask: np.ndarray, distance: int) -> np.ndarray:
    """Inner band of a binary mask by explicit loops: a pixel of the mask with a pixel outside
    the mask or outside the image within Chebyshev distance ``distance``."""
    height, width = mask.shape
    band = np.zeros_like(mask, dtype=bool)
    for y in range(height):
        for x in range(width):
            if not mask[y, x]:
                continue
            for dy in range(-distance, distance + 1):
                for dx in range(-distance, distance + 1):
                    v, u = y + dy, x + dx
                    if not (0 <= v < height and 0 <= u < width) or not mask[v, u]:
                        band[y, x] = True
    return band


def brute_force_counts(gt, pred, num_classes, distance):
    """Per-class band intersections and unions from the per-class definition, by loops."""
    valid = gt != IGNORE
    intersections, unions = np.zeros(num_classes, int), np.zeros(num_classes, int)
    for c in range(num_classes):
        gt_band = brute_force_band(gt == c, distance) & valid
        pred_band = brute_force_band(pred == c, distance) & valid
        intersections[c] = (gt_band & pred_band).sum()
        unions[c] = (gt_band | pred_band).sum()
    return intersections, unions


def random_label_map(rng, height, width, num_classes, ignore_fraction=0.0):
    """Blocky random labels (so that regions are larger than a pixel), some pixels ignored."""
    coarse = rng.integers(0, num_classes, size=(height // 2 + 1, width // 3 + 1))
    labels = cv2.resize(coarse.astype(np.uint8), None, fx=3, fy=2, interpolation=cv2.INTER_NEAREST)
    labels = labels[:height, :width].copy()
    labels[rng.random((height, width)) < 0.15] = rng.integers(0, num_classes)  # speckle
    labels[rng.random((height, width)) < ignore_fraction] = IGNORE
    return labels


@pytest.mark.parametrize("seed", range(6))
def test_counts_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_classes = 4
    height, width = int(rng.integers(5, 14)), int(rng.integers(5, 14))
    gt = random_label_map(rng, height, width, num_classes, ignore_fraction=0.1)
    pred = random_label_map(rng, height, width, num_classes)
    for distance in (1, 2, 3):
        counts = boundary_iou_counts(gt, pred, num_classes, IGNORE, distance)
        intersections, unions = brute_force_counts(gt, pred, num_classes, distance)
        np.testing.assert_array_equal(counts["band_intersection"], intersections)
        union = counts["gt_band_area"] + counts["pred_band_area"] - counts["band_intersection"]
        np.testing.assert_array_equal(union, unions)


@pytest.mark.parametrize("seed", range(4))
def test_band_matches_official_per_class_erosion(seed):
    """Same bands as the official recipe: pad with zeros, erode d times with a 3x3 kernel."""
    rng = np.random.default_rng(seed)
    labels = random_label_map(rng, 40, 57, 5)
    for distance in (1, 2, 5):
        union_of_class_bands = np.zeros(labels.shape, dtype=bool)
        for c in range(5):
            mask = (labels == c).astype(np.uint8)
            padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
            eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=distance)[1:-1, 1:-1]
            union_of_class_bands |= (mask - eroded).astype(bool)
        np.testing.assert_array_equal(boundary_band(labels, distance), union_of_class_bands)


def test_boundary_distance():
    assert boundary_distance(1024, 2048, 0.02) == 46  # round(0.02 * 2289.7)
    assert boundary_distance(12, 12, 0.02) == 1  # round(0.34) = 0 -> at least 1
    assert boundary_distance(10, 20, 0.1) == 2  # round(2.24)


def square_label_map(top, left, size=6, shape=(12, 12)):
    labels = np.zeros(shape, dtype=np.uint8)
    labels[top : top + size, left : left + size] = 1
    return labels


def test_square_band_sizes():
    labels = square_label_map(3, 3)
    square_band = boundary_band(labels, 1) & (labels == 1)
    assert square_band.sum() == 36 - 16  # the 6x6 square's outer ring
    assert (boundary_band(labels, 2) & (labels == 1)).sum() == 36 - 4


def test_square_shifted_by_one_pixel(boundary_iou_results):
    # 12x12 image, so d = 1. GT: 6x6 square at rows 3-8, cols 3-8; prediction: cols 4-9.
    gt, pred = square_label_map(3, 3), square_label_map(3, 4)
    results = boundary_iou_results([gt], [pred], ["background", "square"])
    # Square: both rings have 20 pixels and share rows 3 and 8, cols 4-8: 10 -> 10 / 30.
    assert results["BIoU-square"] == pytest.approx(100 * 10 / 30)
    assert results["IoU-square"] == pytest.approx(100 * 30 / 42)
    # Background: its band is the image's border ring (44) plus the 28-pixel ring around the
    # square. Shared: the border ring and rows 2 and 9, cols 3-9 (14): 58 of 72 + 72 - 58.
    assert results["BIoU-background"] == pytest.approx(100 * 58 / 86)
    assert results["mBIoU"] == pytest.approx(100 * (10 / 30 + 58 / 86) / 2)
    assert results["min(IoU,BIoU)-square"] == pytest.approx(100 * 10 / 30)
    assert results["dilation_ratio"] == 0.02


def two_halves(boundary_column, shape=(10, 20)):
    """Class 1 left of ``boundary_column``, class 3 from it on; classes 0 and 2 nowhere."""
    labels = np.full(shape, 3, dtype=np.uint8)
    labels[:, :boundary_column] = 1
    return labels


def test_two_touching_classes_and_detectron2_lookalike(register_label_maps):
    # 10x20 image, d = 1. GT boundary between cols 9 and 10; predicted between 11 and 12.
    gt, pred = two_halves(10), two_halves(12)
    class_names = ["absent", "left", "unused", "right"]
    name = register_label_maps([gt], class_names)
    results = evaluate(
        DatasetEvaluators([detectron2_sem_seg_evaluator(name), BoundaryIoUEvaluator(name)]),
        [pred],
        4,
    )
    ours, detectron2s = results["boundary_iou"], results["sem_seg"]
    # Left: GT band = border ring of cols 0-9 (20 + 8) + col 9 (8) = 36; predicted band =
    # 24 + 16 = 40; shared: rows 0 and 9, cols 0-9 (20) + col 0 (8) = 28 -> 28 / 48.
    assert ours["BIoU-left"] == pytest.approx(100 * 28 / 48)
    # Right: GT band 36, predicted (cols 12-19) 16 + 16 = 32, shared 16 + 8 = 24 -> 24 / 44.
    assert ours["BIoU-right"] == pytest.approx(100 * 24 / 44)
    assert math.isnan(ours["BIoU-absent"]) and math.isnan(ours["BIoU-unused"])
    assert ours["mIoU"] == pytest.approx(detectron2s["mIoU"])
    # detectron2's SemSegEvaluator erodes the label map as one grey image and bins the values
    # "label - min(3x3 neighbours)" as if they were classes: the right class's pixels next to
    # the left class give 3 - 1 = 2, the interior gives 0. So it scores the two absent classes
    # (88.9 and 0) and reports 87.5 and 85.7 for the real ones instead of 58.3 and 54.5.
    assert detectron2s["BoundaryIoU-absent"] == pytest.approx(100 * 8 / 9)
    assert detectron2s["BoundaryIoU-unused"] == 0
    assert detectron2s["BoundaryIoU-left"] == pytest.approx(87.5)
    assert detectron2s["BoundaryIoU-right"] == pytest.approx(100 * 6 / 7)


def test_line_thinner_than_band_width(boundary_iou_results):
    # 20x20 image with dilation ratio 0.07: d = round(1.98) = 2. A horizontal line 2 pixels
    # thick (GT) and 3 thick (prediction) lies entirely in its band, so BIoU = IoU = 40 / 60.
    gt = np.zeros((20, 20), dtype=np.uint8)
    gt[9:11] = 1
    pred = np.zeros_like(gt)
    pred[9:12] = 1
    assert boundary_distance(20, 20, 0.07) == 2
    results = boundary_iou_results([gt], [pred], ["background", "line"], 0.07)
    assert results["BIoU-line"] == pytest.approx(100 * 2 / 3)
    assert results["IoU-line"] == pytest.approx(100 * 2 / 3)


def test_empty_and_only_predicted_classes(boundary_iou_results):
    gt, pred = square_label_map(3, 3), square_label_map(3, 3)
    pred[0, :4] = 3  # class 3 only predicted, class 2 nowhere
    results = boundary_iou_results([gt], [pred], ["background", "square", "c2", "c3"])
    for key in ("BIoU-c2", "BIoU-c3", "IoU-c2", "IoU-c3", "min(IoU,BIoU)-c3"):
        assert math.isnan(results[key]), key
    assert results["BIoU-square"] == 100
    # The false positives of class 3 still cost the background: its GT band (border ring 44 +
    # ring around the square 28) loses those 4 pixels, and its predicted band gains the 4 pixels
    # below them: 68 / (72 + 72 - 68).
    assert results["BIoU-background"] == pytest.approx(100 * 68 / 76)
    assert results["mBIoU"] == pytest.approx((100 + 100 * 68 / 76) / 2)


def test_ignore_region(boundary_iou_results):
    # 10x20, d = 1. GT: class 1 on cols 0-9, ignore on cols 10-19; prediction: class 1 everywhere.
    gt = np.full((10, 20), IGNORE, dtype=np.uint8)
    gt[:, :10] = 1
    pred = np.ones_like(gt)
    results = boundary_iou_results([gt], [pred], ["background", "thing"])
    # Ignore pixels are in no band, but the GT contour against the ignore region (col 9) is a
    # contour of G_1: GT band = 20 + 16 = 36, predicted band (border ring, valid part) = 28.
    assert results["BIoU-thing"] == pytest.approx(100 * 28 / 36)
    assert results["IoU-thing"] == 100
    assert math.isnan(results["BIoU-background"])


def test_agrees_with_sem_seg_evaluator_miou_and_accumulates_over_images(register_label_maps):
    rng = np.random.default_rng(0)
    gts = [random_label_map(rng, 30, 40, 4, ignore_fraction=0.05) for _ in range(3)]
    preds = [random_label_map(rng, 30, 40, 4) for _ in range(3)]
    name = register_label_maps(gts, ["a", "b", "c", "d"])
    results = evaluate(
        DatasetEvaluators([detectron2_sem_seg_evaluator(name), BoundaryIoUEvaluator(name)]),
        preds,
        4,
    )
    ours = results["boundary_iou"]
    assert ours["mIoU"] == pytest.approx(results["sem_seg"]["mIoU"], rel=1e-12)
    distance = boundary_distance(30, 40, 0.02)
    counts = [
        boundary_iou_counts(g, p, 4, IGNORE, distance) for g, p in zip(gts, preds, strict=True)
    ]
    intersection = sum(c["band_intersection"] for c in counts)
    union = sum(c["gt_band_area"] + c["pred_band_area"] for c in counts) - intersection
    np.testing.assert_allclose([ours[f"BIoU-{c}"] for c in "abcd"], 100 * intersection / union)


def test_rejects_labels_outside_classes(boundary_iou_results):
    gt = np.full((8, 8), 7, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"_0\.png.*\[7\]"):
        boundary_iou_results([gt], [np.zeros_like(gt)], ["a", "b"])


def test_engine_adds_boundary_iou_evaluator_when_enabled(tmp_path, register_label_maps):
    name = register_label_maps([square_label_map(3, 3)], ["background", "square"])
    cfg = small_fpn_cfg(num_classes=2, OUTPUT_DIR=str(tmp_path))
    assert cfg.TEST.BOUNDARY_IOU.ENABLED and cfg.TEST.BOUNDARY_IOU.DILATION_RATIO == 0.02
    cfg.TEST.BOUNDARY_IOU.DILATION_RATIO = 0.1
    evaluators = build_evaluator(cfg, name)._evaluators
    assert [type(e) for e in evaluators] == [SemSegIoUEvaluator, BoundaryIoUEvaluator]
    results = evaluate(DatasetEvaluators(evaluators), [square_label_map(3, 3)], 2)
    assert results["boundary_iou"]["dilation_ratio"] == 0.1
    assert (tmp_path / "inference" / name / "boundary_iou_evaluation.json").is_file()
    # detectron2's multi-class "BoundaryIoU" keys are not reported beside the real metric.
    assert "IoU-square" in results["sem_seg"]
    assert not [key for key in results["sem_seg"] if "B-Iou" in key or "Boundary" in key]
    cfg.TEST.BOUNDARY_IOU.ENABLED = False
    assert type(build_evaluator(cfg, name)) is SemSegIoUEvaluator
