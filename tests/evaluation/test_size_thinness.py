"""Object size and width, stage breakdowns, and the semantic size-and-thinness evaluator, on
synthetic label maps with known answers."""

import json

import numpy as np
import pytest
import torch
from detectron2.evaluation import DatasetEvaluators
from PIL import Image

from pointrend_d2.evaluation import (
    SIZE_BINNING,
    WIDTH_BINNING,
    Binning,
    SemSegIoUEvaluator,
    SemSegSizeThinnessEvaluator,
    StageBreakdown,
    object_width,
)
from pointrend_d2.evaluation.object_measures import object_area
from pointrend_d2.evaluation.size_thinness import semantic_breakdown, semantic_object_counts
from pointrend_d2.evaluation.stage_breakdown import correct_pattern

IGNORE = 255
CLASSES = ["background", "thing", "pole", "wire"]
# Bin indices: size small, medium, large; width <= 2, 2-4, 4-8, > 8 px.
SMALL, MEDIUM = 0, 1
UP_TO_2, UP_TO_4, ABOVE_8 = 0, 1, 3


def euclidean_disc(height: int, width: int, center: tuple[int, int], radius: int) -> np.ndarray:
    """The pixels whose centres lie within ``radius`` of ``center`` (row, column)."""
    rows, cols = np.mgrid[:height, :width]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


# ------------------------------------------------------------------------------------------
# Measures and bins
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strip_width", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("vertical", [False, True])
@pytest.mark.parametrize("at_border", [False, True])
def test_width_of_an_axis_aligned_strip_is_its_pixel_count_across(strip_width, vertical, at_border):
    # The image border counts as outside: a strip along it is as wide as one inside.
    mask = np.zeros((20, 30), dtype=bool)
    start = 0 if at_border else 7
    mask[start : start + strip_width, 3:27] = True
    if vertical:
        mask = mask.T
    # Distances on the half-pixel grid of an axis-aligned strip are whole half-pixels: exact.
    assert object_width(mask) == strip_width


def test_width_of_a_rectangle_is_its_short_side():
    mask = np.zeros((30, 30), dtype=np.uint8)
    mask[5:12, 4:25] = 1
    assert object_width(mask) == 7


@pytest.mark.parametrize("radius", [2, 3, 5, 8, 10, 13])
def test_width_of_a_disc_is_within_its_diameter_bounds(radius):
    # The disc's diameter is D = 2r + 1 pixels. Upper bound: it lies in D rows between two rows
    # wholly outside it, and an object within n such rows is at most n wide (as a strip).
    # Lower bound: outside pixel centres are at least sqrt(r^2 + 1) > r from the centre, so from
    # a half-pixel point of the centre pixel (0.25 * sqrt(2) from the centre) every outside
    # half-pixel point is more than r - 2 * 0.25 * sqrt(2) > r - 0.71 away: the width exceeds
    # D - 2.42.
    mask = euclidean_disc(40, 40, (20, 19), radius)
    diameter = 2 * radius + 1
    assert diameter - 2.42 < object_width(mask) <= diameter


def test_width_of_an_empty_mask_is_zero_and_masks_must_be_2d():
    assert object_width(np.zeros((5, 5), dtype=bool)) == 0
    with pytest.raises(ValueError, match=r"mask must be \(H, W\), got shape \(1, 5, 5\)"):
        object_width(np.ones((1, 5, 5), dtype=bool))


def test_a_diagonal_one_pixel_line_is_one_pixel_wide():
    assert object_width(np.eye(8, dtype=bool)) == 1


@pytest.mark.parametrize(
    ("area", "expected"), [(1, 0), (1023, 0), (1024, 1), (9215, 1), (9216, 2), (10**7, 2)]
)
def test_size_bins_are_cocos(area, expected):
    assert SIZE_BINNING.index(area) == expected
    assert SIZE_BINNING.labels[expected] == ("small", "medium", "large")[expected]


@pytest.mark.parametrize(
    ("width", "expected"),
    [(1, 0), (2, 0), (np.sqrt(5), 1), (4, 1), (4.1, 2), (8, 2), (np.sqrt(65), 3), (100, 3)],
)
def test_width_bins_include_their_upper_limit(width, expected):
    assert WIDTH_BINNING.index(width) == expected


def test_binning_measures_masks():
    mask = np.zeros((40, 40), dtype=bool)
    mask[2:4, :] = True  # 80 pixels, 2 wide
    assert object_area(mask) == 80
    assert SIZE_BINNING.bin_of(mask) == SMALL
    assert WIDTH_BINNING.bin_of(mask) == UP_TO_2


def test_binning_needs_one_limit_fewer_than_bins_in_order():
    with pytest.raises(ValueError, match=r"Binning 'x': need 2 increasing limits"):
        Binning("x", ("a", "b", "c"), (3,), True, object_area)
    with pytest.raises(ValueError, match=r"need 1 increasing limits .* got \(5, 2\)"):
        Binning("x", ("a", "b"), (5, 2), True, object_area)


# ------------------------------------------------------------------------------------------
# Stage breakdowns
# ------------------------------------------------------------------------------------------


def test_correct_pattern_sets_one_bit_per_stage():
    pattern = correct_pattern([np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])])
    assert pattern.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="need 1 to 16 stages, got 0"):
        correct_pattern([])


def test_stage_breakdown_recall_and_changes():
    # Bin "x": 1 unit wrong in both, 2 right in a only, 3 in b only, 4 in both; "y" is empty.
    breakdown = StageBreakdown(("a", "b"), ("x", "y"), np.array([[1, 2, 3, 4], [0, 0, 0, 0]]))
    assert breakdown.total().tolist() == [10, 0]
    assert breakdown.recall("a")[0] == pytest.approx(0.6)
    assert breakdown.recall("b")[0] == pytest.approx(0.7)
    assert breakdown.lost("a", "b")[0] == pytest.approx(0.2)
    assert breakdown.gained("a", "b")[0] == pytest.approx(0.3)
    assert breakdown.missed_by_both("a", "b")[0] == pytest.approx(0.1)
    assert np.isnan(breakdown.recall("a")[1]) and np.isnan(breakdown.lost("a", "b")[1])
    results = breakdown.results("pixel")
    assert results["pixels/x"] == 10
    assert results["a/pixel_recall/x"] == pytest.approx(60)
    assert results["b/pixel_recall/x"] == pytest.approx(70)
    assert results["a->b/lost_pixels/x"] == pytest.approx(20)
    assert results["a->b/gained_pixels/x"] == pytest.approx(30)
    assert results["a->b/missed_pixels/x"] == pytest.approx(10)
    assert np.isnan(results["b/pixel_recall/y"])
    with pytest.raises(ValueError, match=r"counts must have shape \(2, 4\), got \(2, 3\)"):
        StageBreakdown(("a", "b"), ("x", "y"), np.zeros((2, 3), dtype=np.int64))


# ------------------------------------------------------------------------------------------
# Semantic counts
# ------------------------------------------------------------------------------------------


@pytest.fixture
def label_scene():
    """
    A 64 x 64 ground truth with objects of known size and width, and two stages:

    * "thing": a 2 px line (100 px) and a disc of radius 10 (317 px, ~19-21 px wide);
    * "pole": a 3 px wide full-height strip (192 px) that cuts off a 3 px wide strip of
      background at the right border (192 px); the rest of the background is one component;
    * "wire": a 6 px diagonal line, one 8-connected object 1 px wide;
    * a 4 x 4 ignore patch.

    coarse: background everywhere but on the disc: it misses the line, the pole and the wire.
    refined: the ground truth, except 5 rows of the disc (lost) and the pole's lower half
    (predicted "thing").
    """
    gt = np.zeros((64, 64), dtype=np.int64)
    line = np.zeros_like(gt, dtype=bool)
    line[10:12, 4:54] = True
    disc = euclidean_disc(64, 64, (40, 30), 10)
    gt[line | disc] = 1
    gt[:, 58:61] = 2
    for i in range(6):
        gt[50 + i, 2 + i] = 3
    gt[:4, :4] = IGNORE
    coarse = np.where(disc, 1, 0)
    refined = np.where(gt == IGNORE, 0, gt)
    damaged = disc.copy()
    damaged[:40] = damaged[45:] = False
    refined[damaged] = 0
    refined[32:, 58:61] = 1
    return gt, coarse, refined, {"line": line, "disc": disc, "damaged": damaged}


def test_semantic_counts_bin_pixels_and_objects_by_stage_pattern(label_scene):
    gt, coarse, refined, masks = label_scene
    counts = semantic_object_counts(gt, [coarse, refined], len(CLASSES), IGNORE)
    assert masks["line"].sum() == 100 and masks["disc"].sum() == 317
    damaged = int(masks["damaged"].sum())
    left_background = int((gt == 0).sum()) - 192  # medium, wide
    # Pattern: bit 0 coarse right, bit 1 refined right.
    expected_pixels = {
        (1, SMALL, UP_TO_2, 0b10): 100,  # line: only refined
        (1, SMALL, ABOVE_8, 0b11): 317 - damaged,  # disc
        (1, SMALL, ABOVE_8, 0b01): damaged,  # lost by refinement
        (2, SMALL, UP_TO_4, 0b10): 96,  # pole's upper half
        (2, SMALL, UP_TO_4, 0b00): 96,  # pole's lower half: missed by both
        (3, SMALL, UP_TO_2, 0b10): 6,  # diagonal wire
        (0, MEDIUM, ABOVE_8, 0b11): left_background,
        (0, SMALL, UP_TO_4, 0b11): 192,  # background strip right of the pole
    }
    # Objects are right with at least half their pixels: the pole exactly half, in refined.
    expected_objects = {
        (1, SMALL, UP_TO_2, 0b10): 1,
        (1, SMALL, ABOVE_8, 0b11): 1,
        (2, SMALL, UP_TO_4, 0b10): 1,
        (3, SMALL, UP_TO_2, 0b10): 1,
        (0, MEDIUM, ABOVE_8, 0b11): 1,
        (0, SMALL, UP_TO_4, 0b11): 1,
    }
    for unit, expected_entries in (("pixel", expected_pixels), ("object", expected_objects)):
        expected = np.zeros((4, 3, 4, 4), dtype=np.int64)
        for index, value in expected_entries.items():
            expected[index] = value
        np.testing.assert_array_equal(counts[unit], expected, err_msg=unit)


def test_an_object_with_less_than_half_its_pixels_right_is_not_found(label_scene):
    gt, coarse, refined, _ = label_scene
    refined[31, 58:61] = 1  # the pole: 93 of 192 pixels right
    counts = semantic_object_counts(gt, [coarse, refined], len(CLASSES), IGNORE)
    assert counts["object"][2, SMALL, UP_TO_4].tolist() == [1, 0, 0, 0]


def test_semantic_breakdown_marginalizes_classes_and_the_other_binning(label_scene):
    gt, coarse, refined, masks = label_scene
    counts = semantic_object_counts(gt, [coarse, refined], len(CLASSES), IGNORE)
    width = semantic_breakdown(counts["pixel"], ("coarse", "refined"), WIDTH_BINNING)
    assert width.bin_labels == WIDTH_BINNING.labels
    # <= 2 px: the line and the wire, both right only after refinement.
    assert width.counts[UP_TO_2].tolist() == [0, 0, 106, 0]
    assert width.recall("coarse")[UP_TO_2] == 0 and width.recall("refined")[UP_TO_2] == 1
    thing = semantic_breakdown(counts["pixel"], ("coarse", "refined"), SIZE_BINNING, 1)
    damaged = int(masks["damaged"].sum())
    assert thing.counts[SMALL].tolist() == [0, damaged, 100, 317 - damaged]
    assert thing.total().tolist() == [417, 0, 0]
    other = Binning("elongation", ("round", "long"), (3,), True, object_area)
    with pytest.raises(ValueError, match=r"the counts are by the bins of \['size', 'width'\]"):
        semantic_breakdown(counts["pixel"], ("coarse", "refined"), other)


def test_semantic_counts_reject_bad_labels_and_shapes():
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[0, 0] = 7
    with pytest.raises(ValueError, match=r"must be in \[0, 4\) or 255, found \[7\]"):
        semantic_object_counts(gt, [np.zeros_like(gt)], 4, IGNORE)
    with pytest.raises(ValueError, match=r"prediction 0 has shape \(4, 5\), the ground truth"):
        semantic_object_counts(np.zeros((4, 4)), [np.zeros((4, 5))], 4, IGNORE)


# ------------------------------------------------------------------------------------------
# The evaluator
# ------------------------------------------------------------------------------------------


@pytest.fixture
def scene_dataset(tmp_path, register_dataset, label_scene):
    gt = label_scene[0]
    gt_path = tmp_path / "gt.png"
    Image.fromarray(gt.astype(np.uint8)).save(gt_path)
    records = [{"file_name": "image.png", "sem_seg_file_name": str(gt_path), "height": 64}]
    return register_dataset(
        records,
        "size_thinness",
        stuff_classes=CLASSES,
        ignore_label=IGNORE,
        evaluator_type="sem_seg",
    )


def one_hot_scores(labels: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels), len(CLASSES)).permute(2, 0, 1)


def test_evaluator_reports_recall_by_bin_for_each_stage(scene_dataset, label_scene, tmp_path):
    _, coarse, refined, _ = label_scene
    evaluator = SemSegSizeThinnessEvaluator(
        scene_dataset, prediction_keys=("coarse_sem_seg", "sem_seg"), output_dir=str(tmp_path)
    )
    evaluator.reset()
    outputs = {"coarse_sem_seg": one_hot_scores(coarse), "sem_seg": one_hot_scores(refined)}
    evaluator.process([{"file_name": "image.png"}], [outputs])
    results = evaluator.evaluate()["size_thinness"]
    assert results["pixels/width<=2px"] == 106
    assert results["objects/width<=2px"] == 2
    assert results["coarse_sem_seg/pixel_recall/width<=2px"] == 0
    assert results["sem_seg/pixel_recall/width<=2px"] == 100
    assert results["coarse_sem_seg->sem_seg/gained_pixels/width<=2px"] == 100
    assert results["sem_seg/object_recall/width2-4px"] == 100  # the pole (half) and a bg strip
    assert results["coarse_sem_seg/object_recall/width2-4px"] == 50
    assert np.isnan(results["sem_seg/pixel_recall/width4-8px"])  # no such object
    assert np.isnan(results["sem_seg/pixel_recall/large"])
    assert evaluator.summed_counts["pixel"].sum() == 64 * 64 - 16  # all but the ignore patch
    written = json.loads((tmp_path / "size_thinness_evaluation.json").read_text())
    assert written["per_class"]["wire"]["sem_seg/pixel_recall/width<=2px"] == 100
    assert written["per_class"]["pole"]["coarse_sem_seg->sem_seg/missed_pixels/small"] == 50
    assert written["all"]["pixels/small"] == results["pixels/small"]


def test_evaluator_names_missing_outputs_and_the_bad_ground_truth_file(tmp_path, register_dataset):
    gt_path = tmp_path / "bad_gt.png"
    Image.fromarray(np.full((4, 4), 9, dtype=np.uint8)).save(gt_path)
    name = register_dataset(
        [{"file_name": "image.png", "sem_seg_file_name": str(gt_path)}],
        stuff_classes=CLASSES,
        ignore_label=IGNORE,
    )
    evaluator = SemSegSizeThinnessEvaluator(name, prediction_keys=("coarse_sem_seg", "sem_seg"))
    evaluator.reset()
    scores = one_hot_scores(np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(KeyError, match=r"has no \['coarse_sem_seg'\] \(it has \['sem_seg'\]\)"):
        evaluator.process([{"file_name": "image.png"}], [{"sem_seg": scores}])
    with pytest.raises(ValueError, match=r"bad_gt\.png: ground truth labels .* found \[9\]"):
        evaluator.process(
            [{"file_name": "image.png"}], [{"sem_seg": scores, "coarse_sem_seg": scores}]
        )
    with pytest.raises(ValueError, match="prediction_keys must be 1 to 16 distinct keys"):
        SemSegSizeThinnessEvaluator(name, prediction_keys=("sem_seg", "sem_seg"))


def test_evaluator_runs_beside_the_miou_evaluator(scene_dataset, label_scene):
    _, _, refined, _ = label_scene
    evaluators = DatasetEvaluators(
        [SemSegIoUEvaluator(scene_dataset), SemSegSizeThinnessEvaluator(scene_dataset)]
    )
    evaluators.reset()
    evaluators.process([{"file_name": "image.png"}], [{"sem_seg": one_hot_scores(refined)}])
    results = evaluators.evaluate()
    assert set(results) == {"sem_seg", "size_thinness"}
    assert results["size_thinness"]["sem_seg/pixel_recall/width<=2px"] == 100


def test_evaluator_without_images_warns_and_returns_nothing(scene_dataset):
    evaluator = SemSegSizeThinnessEvaluator(scene_dataset)
    evaluator.reset()
    assert evaluator.evaluate() == {}
