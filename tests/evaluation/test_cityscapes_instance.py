"""
The official Cityscapes instance evaluation (cityscapesscripts' evalInstanceLevelSemanticLabeling,
through detectron2's CityscapesInstanceEvaluator as our engine builds it for the Cityscapes
instance configs) on a tiny Cityscapes-layout dataset made on the fly: the ground truth's own
masks score AP 100, and a model's predictions go through it.

The dataset is registered with the metadata of detectron2's builtin cityscapes_fine_instance_seg_val
and detectron2's loader, reading the instanceIds PNGs (``from_json=False``): the builtin's
``from_json=True`` needs shapely, which this environment does not have.
"""

import contextlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets.cityscapes import load_cityscapes_instances
from detectron2.evaluation import CityscapesInstanceEvaluator
from detectron2.modeling import build_model
from detectron2.structures import Instances
from PIL import Image

from pointrend_d2.config import setup_cfg
from pointrend_d2.engine import build_evaluator
from tests.helpers import config_path, small_rcnn_cfg

# The official evaluation is the "cityscapes" extra (setup.py): without it, nothing to test.
cityscapes_labels = pytest.importorskip("cityscapesscripts.helpers.labels")
id2label, labels = cityscapes_labels.id2label, cityscapes_labels.labels
# cityscapesscripts 2.3.0 (the latest) cannot run its instance evaluation under numpy 2.
official_evaluation_needs_numpy_1 = pytest.mark.skipif(
    np.lib.NumpyVersion(np.__version__) >= "2.0.0",
    reason="cityscapesscripts' instance evaluation dumps np.count_nonzero's results, numpy "
    "integers under numpy 2, with json.dumps (\"'numpy.int64' object has no attribute "
    "'__dict__'\")",
)

HEIGHT, WIDTH = 128, 256
CELL = 64  # instances are boxes inside the cells of a 2 x 4 grid, one per cell at most
# detectron2's Cityscapes thing classes (builtin_meta.py): the labels with instances that are
# evaluated, in label-id order.
THING_CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
# Stuff and ignored ids drawn under the instances: unlabeled, road, building, sky.
BACKGROUND_IDS = [0, 7, 11, 23]
# The instances of each frame, by class name; every class occurs in the first frame.
FRAMES = {
    ("aachen", "000000_000019"): THING_CLASSES,
    ("aachen", "000001_000019"): ["car", "car", "person", "bicycle"],
    ("bremen", "000000_000019"): ["truck", "person", "person", "car", "rider"],
}
CONFIG = "pointrend_rcnn_R_50_FPN_1x_cityscapes.yaml"


def instance_id_map(rng, class_names):
    """(H, W) Cityscapes instance ids: 16x16 blocks of background ids, then a box per instance
    (label id * 1000 + its index among the image's instances of that label)."""
    blocks = rng.choice(BACKGROUND_IDS, size=(HEIGHT // 16, WIDTH // 16))
    ids = np.kron(blocks, np.ones((16, 16), dtype=np.int64))
    counts = {}
    for cell, name in enumerate(class_names):
        label_id = next(label.id for label in labels if label.name == name)
        instance_id = label_id * 1000 + counts.setdefault(label_id, 0)
        counts[label_id] += 1
        top, left = (cell // 4) * CELL, (cell % 4) * CELL
        y0, x0 = top + rng.integers(2, 14), left + rng.integers(2, 14)
        height, width = rng.integers(20, 48), rng.integers(20, 48)  # >= 400 pixels
        ids[y0 : y0 + height, x0 : x0 + width] = instance_id
    return ids


def polygons_json(ids):
    """gtFine_polygons.json: a rectangle per instance (inclusive pixel corners)."""
    objects = []
    for instance_id in np.unique(ids[ids >= 1000]):
        ys, xs = np.nonzero(ids == instance_id)
        x0, y0, x1, y1 = (int(v) for v in (xs.min(), ys.min(), xs.max(), ys.max()))
        polygon = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
        objects.append({"label": id2label[int(instance_id) // 1000].name, "polygon": polygon})
    return {"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": objects}


def make_cityscapes_val(root):
    """Writes leftImg8bit/val and gtFine/val (instanceIds as 16-bit PNGs, labelIds, polygons)."""
    rng = np.random.default_rng(0)
    for (city, frame), class_names in FRAMES.items():
        stem = f"{city}_{frame}"
        image_dir, gt_dir = root / "leftImg8bit" / "val" / city, root / "gtFine" / "val" / city
        image_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(image).save(image_dir / f"{stem}_leftImg8bit.png")
        ids = instance_id_map(rng, class_names)
        Image.fromarray(ids.astype(np.uint16)).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
        label_ids = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
        Image.fromarray(label_ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps(polygons_json(ids)))


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    make_cityscapes_val(root)
    return root


@pytest.fixture
def cityscapes_val(cityscapes_root, register_dataset) -> str:
    """The tiny dataset, registered for one test like detectron2's builtin
    cityscapes_fine_instance_seg_val: its metadata, detectron2's loader."""
    image_dir = str(cityscapes_root / "leftImg8bit" / "val")
    gt_dir = str(cityscapes_root / "gtFine" / "val")
    builtin = MetadataCatalog.get("cityscapes_fine_instance_seg_val")
    return register_dataset(
        lambda: load_cityscapes_instances(image_dir, gt_dir, from_json=False, to_polygons=True),
        "tiny_cityscapes_instance_seg_val",
        image_dir=image_dir,
        gt_dir=gt_dir,
        evaluator_type=builtin.evaluator_type,
        thing_classes=builtin.thing_classes,
        stuff_classes=builtin.stuff_classes,
    )


def gt_predictions(dataset_name, drop_class=None):
    """(inputs, outputs) batches whose instances are the ground truth's (from the instanceIds
    PNGs, at the image size) with score 1, less those of ``drop_class``."""
    gt_dir = Path(MetadataCatalog.get(dataset_name).gt_dir)
    batches = []
    for record in DatasetCatalog.get(dataset_name):
        image_file = Path(record["file_name"])
        name = image_file.name.replace("leftImg8bit.png", "gtFine_instanceIds.png")
        ids = np.array(Image.open(gt_dir / image_file.parent.name / name), dtype=np.int64)
        masks, classes = [], []
        for instance_id in np.unique(ids[ids >= 1000]):
            class_name = id2label[int(instance_id) // 1000].name
            if class_name != drop_class:
                masks.append(torch.from_numpy(ids == instance_id))
                classes.append(THING_CLASSES.index(class_name))
        instances = Instances((HEIGHT, WIDTH))
        instances.pred_masks = torch.stack(masks)
        instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
        instances.scores = torch.ones(len(classes))
        batches.append(([record], [{"instances": instances}]))
    return batches


def evaluate(evaluator, batches):
    evaluator.reset()
    for inputs, outputs in batches:
        evaluator.process(inputs, outputs)
    # cityscapesscripts writes matches.json into the working directory: keep it out of the clone.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        return evaluator.evaluate()


def test_dataset_is_registered_like_detectron2s_builtin(cityscapes_val):
    metadata = MetadataCatalog.get(cityscapes_val)
    assert metadata.evaluator_type == "cityscapes_instance"
    assert metadata.thing_classes == THING_CLASSES
    evaluated = [label.name for label in labels if label.hasInstances and not label.ignoreInEval]
    assert evaluated == THING_CLASSES
    classes_by_image = {
        f"{city}_{frame}_leftImg8bit.png": sorted(THING_CLASSES.index(name) for name in names)
        for (city, frame), names in FRAMES.items()
    }
    records = DatasetCatalog.get(cityscapes_val)
    assert sorted(record["image_id"] for record in records) == sorted(classes_by_image)
    for record in records:
        annotations = record["annotations"]
        categories = sorted(annotation["category_id"] for annotation in annotations)
        assert categories == classes_by_image[record["image_id"]]
        assert not any(annotation["iscrowd"] for annotation in annotations)


def test_engine_builds_the_official_evaluator(cityscapes_val, tmp_path):
    cfg = setup_cfg(str(config_path(CONFIG)), ["OUTPUT_DIR", str(tmp_path)])
    assert type(build_evaluator(cfg, cityscapes_val)) is CityscapesInstanceEvaluator


@official_evaluation_needs_numpy_1
def test_ground_truth_scores_ap_100_through_the_official_evaluation(cityscapes_val, tmp_path):
    cfg = setup_cfg(str(config_path(CONFIG)), ["OUTPUT_DIR", str(tmp_path)])
    evaluator = build_evaluator(cfg, cityscapes_val)
    perfect = evaluate(evaluator, gt_predictions(cityscapes_val))
    assert perfect["segm"]["AP"] == pytest.approx(100.0)
    assert perfect["segm"]["AP50"] == pytest.approx(100.0)
    # One class never predicted: its AP is 0, the other 7 classes' 100 (the mean is over classes).
    no_bicycles = evaluate(evaluator, gt_predictions(cityscapes_val, drop_class="bicycle"))
    assert no_bicycles["segm"]["AP"] == pytest.approx(100.0 * 7 / 8)


def test_wrong_num_classes_is_refused_naming_the_key(cityscapes_val):
    cfg = setup_cfg(str(config_path("pointrend_rcnn_R_50_FPN_1x_coco.yaml")))
    with pytest.raises(ValueError, match=r"MODEL\.ROI_HEADS\.NUM_CLASSES=80 .* 8 classes"):
        build_evaluator(cfg, cityscapes_val)


@official_evaluation_needs_numpy_1
def test_model_predictions_go_through_the_official_evaluation(cityscapes_val, tmp_path):
    """A random tiny PointRend Mask R-CNN's outputs (masks pasted at the image size), as
    tools/train_net.py evaluates them."""
    cfg = small_rcnn_cfg(
        num_classes=len(THING_CLASSES),
        **{
            "INPUT.MIN_SIZE_TEST": HEIGHT,
            "INPUT.MAX_SIZE_TEST": WIDTH,
            "MODEL.RPN.POST_NMS_TOPK_TEST": 100,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
            "TEST.DETECTIONS_PER_IMAGE": 5,
            "DATALOADER.NUM_WORKERS": 0,
            "OUTPUT_DIR": str(tmp_path),
        },
    )
    model = build_model(cfg).eval()
    with torch.no_grad():
        batches = [
            (inputs, model(inputs)) for inputs in build_detection_test_loader(cfg, cityscapes_val)
        ]
    assert [len(outputs[0]["instances"]) for _, outputs in batches] == [5] * len(FRAMES)
    assert batches[0][1][0]["instances"].pred_masks.shape[1:] == (HEIGHT, WIDTH)
    results = evaluate(build_evaluator(cfg, cityscapes_val), batches)
    assert 0.0 <= results["segm"]["AP"] <= results["segm"]["AP50"] <= 100.0
