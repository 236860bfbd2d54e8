"""
The official Cityscapes evaluation (cityscapesscripts, through detectron2's
CityscapesSemSegEvaluator as our engine builds it) on a tiny Cityscapes-layout dataset made on
the fly, against detectron2's SemSegEvaluator on the same predictions.
"""

import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data.datasets.cityscapes import load_cityscapes_semantic
from detectron2.evaluation import SemSegEvaluator
from detectron2.modeling import build_model
from PIL import Image

from pointrend_d2.engine import build_evaluator
from pointrend_d2.evaluation import read_label_map
from tests.helpers import small_fpn_cfg

cityscapes_labels = pytest.importorskip("cityscapesscripts.helpers.labels")

HEIGHT, WIDTH = 64, 128
EVAL_LABELS = sorted(
    (label for label in cityscapes_labels.labels if not label.ignoreInEval),
    key=lambda label: label.trainId,
)
# Ignored in evaluation: unlabeled, ego vehicle, static, ground.
IGNORED_IDS = [0, 1, 4, 6]
FRAMES = [("aachen", "000000_000019"), ("aachen", "000001_000019"), ("bremen", "000000_000019")]


def label_id_map(rng, first_ids=()):
    """(H, W) uint8 Cityscapes label ids: 8x8 blocks of random classes, ignored ids included."""
    choices = [label.id for label in EVAL_LABELS] + IGNORED_IDS
    blocks = rng.choice(choices, size=(HEIGHT // 8, WIDTH // 8))
    blocks.flat[: len(first_ids)] = first_ids
    return np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)


def make_cityscapes_val(root):
    """Writes leftImg8bit/val and gtFine/val (labelIds, labelTrainIds, instanceIds, polygons)."""
    rng = np.random.default_rng(0)
    id_to_train_id = np.full(256, 255, dtype=np.uint8)
    for label in EVAL_LABELS:
        id_to_train_id[label.id] = label.trainId
    for index, (city, frame) in enumerate(FRAMES):
        stem = f"{city}_{frame}"
        image_dir, gt_dir = root / "leftImg8bit" / "val" / city, root / "gtFine" / "val" / city
        image_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(image).save(image_dir / f"{stem}_leftImg8bit.png")
        # Every evaluated class occurs in the first image, so no class is absent from the GT.
        label_ids = label_id_map(rng, [label.id for label in EVAL_LABELS] if index == 0 else ())
        Image.fromarray(label_ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(label_ids).save(gt_dir / f"{stem}_gtFine_instanceIds.png")  # no instances
        Image.fromarray(id_to_train_id[label_ids]).save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
        polygons = {"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": []}
        (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps(polygons))


def evaluate(evaluator, batches):
    evaluator.reset()
    for inputs, outputs in batches:
        evaluator.process(inputs, outputs)
    return evaluator.evaluate()


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    make_cityscapes_val(root)
    return root


@pytest.fixture
def cityscapes_val(cityscapes_root, register_dataset) -> str:
    """The tiny dataset, registered for one test like detectron2's builtin
    cityscapes_fine_sem_seg_val."""
    image_dir = str(cityscapes_root / "leftImg8bit" / "val")
    gt_dir = str(cityscapes_root / "gtFine" / "val")
    return register_dataset(
        lambda: load_cityscapes_semantic(image_dir, gt_dir),
        "tiny_cityscapes_sem_seg_val",
        image_dir=image_dir,
        gt_dir=gt_dir,
        evaluator_type="cityscapes_sem_seg",
        ignore_label=255,
        stuff_classes=[label.name for label in EVAL_LABELS],
        stuff_colors=[list(label.color) for label in EVAL_LABELS],
    )


def model_predictions(cfg, dataset_name):
    """(inputs, outputs) batches of a random-weight model on the dataset."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        return [
            (inputs, model(inputs)) for inputs in build_detection_test_loader(cfg, dataset_name)
        ]


def shifted_gt_predictions(dataset_name):
    """One-hot scores of the ground truth rolled by 2 pixels, ignored pixels predicted as 0:
    a prediction with a high, non-trivial mIoU."""
    batches = []
    for record in DatasetCatalog.get(dataset_name):
        train_ids = np.array(Image.open(record["sem_seg_file_name"]), dtype=np.int64)
        train_ids = np.roll(np.where(train_ids == 255, 0, train_ids), 2, axis=1)
        scores = torch.nn.functional.one_hot(torch.from_numpy(train_ids), len(EVAL_LABELS))
        batches.append(([record], [{"sem_seg": scores.permute(2, 0, 1).float()}]))
    return batches


@pytest.mark.parametrize("predictor", ["random_model", "shifted_gt"])
def test_official_miou_equals_sem_seg_evaluator(cityscapes_val, tmp_path, predictor):
    cfg = small_fpn_cfg(
        num_classes=19,
        **{
            "INPUT.MIN_SIZE_TEST": HEIGHT,
            "INPUT.MAX_SIZE_TEST": WIDTH,
            "DATALOADER.NUM_WORKERS": 0,
            "OUTPUT_DIR": str(tmp_path),
        },
    )
    if predictor == "random_model":
        batches = model_predictions(cfg, cityscapes_val)
    else:
        batches = shifted_gt_predictions(cityscapes_val)
    assert len(batches) == len(FRAMES)

    official = evaluate(build_evaluator(cfg, cityscapes_val), batches)
    detectron2s = evaluate(
        SemSegEvaluator(cityscapes_val, distributed=False, sem_seg_loading_fn=read_label_map),
        batches,
    )
    print(
        f"{predictor}: official IoU {official['sem_seg']['IoU']!r}, SemSegEvaluator mIoU "
        f"{detectron2s['sem_seg']['mIoU']!r}, BoundaryIoUEvaluator mIoU "
        f"{official['boundary_iou']['mIoU']!r} mBIoU {official['boundary_iou']['mBIoU']!r}"
    )
    # Every class occurs in the ground truth, so the official mean (over classes with
    # TP + FP + FN > 0) and SemSegEvaluator's (over classes with GT pixels) are over the same
    # 19 classes. With a class absent from the GT but predicted, the official mean would count
    # it as 0 and SemSegEvaluator's would skip it.
    assert official["sem_seg"]["IoU"] == pytest.approx(detectron2s["sem_seg"]["mIoU"], rel=1e-6)
    assert official["boundary_iou"]["mIoU"] == pytest.approx(
        detectron2s["sem_seg"]["mIoU"], rel=1e-12
    )
    assert 0 <= official["boundary_iou"]["mBIoU"] <= 100
    if predictor == "shifted_gt":
        assert official["sem_seg"]["IoU"] > 40
