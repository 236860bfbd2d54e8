"""
The COCO stuff-only and ADE20K-150 configs: their values against their sources, the ADE20K folder
spec (environment variables in spec paths), and one training iteration plus evaluation of each
through tools/train_net.py on tiny datasets in detectron2's layouts. Also: every config in
configs/ builds its model and predicts, shrunk for the CPU, and every semantic one trains on a
fully ignored crop with losses and gradients of 0, not NaN.
"""

import re
import uuid
from pathlib import Path

import detectron2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES
from detectron2.data.datasets.coco import load_sem_seg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from PIL import Image

from pointrend_d2.config import setup_cfg
from pointrend_d2.data import register_folder_datasets_from_spec
from pointrend_d2.modeling.point_settings import PointSettings
from tests.helpers import FAST_OPTS, REPO, config_path, run_train_net

COCO_R50 = "pointrend_semantic_R_50_FPN_1x_coco.yaml"
COCO_R101 = "pointrend_semantic_R_101_FPN_1x_coco.yaml"
ADE_R50 = "pointrend_semantic_R_50_FPN_160k_ade20k.yaml"
ADE_SPEC = REPO / "configs" / "datasets" / "ade20k_150.yaml"
SIZE = 64

# The real configs shrunk for the CPU: a random R-18 FPN with narrow heads.
TINY_MODEL_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.POINT_HEAD.FC_DIM", "32",
    "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", "600",
]  # fmt: skip
TINY_RUN_OPTS = [
    *FAST_OPTS,
    *TINY_MODEL_OPTS,
    "INPUT.MIN_SIZE_TRAIN", f"({SIZE},)",
    "INPUT.MAX_SIZE_TRAIN", str(2 * SIZE),
    "INPUT.MIN_SIZE_TEST", str(SIZE),
    "INPUT.MAX_SIZE_TEST", str(2 * SIZE),
    "SOLVER.MAX_ITER", "1",
]  # fmt: skip


def write_split(image_dir, label_dir, stems, num_classes):
    """Random 64x64 JPEG images and label PNGs of 4x4 blocks holding every class 0..num_classes-1
    once per image, the remaining blocks 255 (ignored)."""
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    rng = np.random.default_rng(len(stems) + num_classes)
    blocks_per_side = SIZE // 4
    for stem in stems:
        blocks = np.full(blocks_per_side**2, 255, dtype=np.uint8)
        blocks[:num_classes] = np.arange(num_classes)
        blocks = rng.permutation(blocks).reshape(blocks_per_side, blocks_per_side)
        label = np.kron(blocks, np.ones((4, 4), dtype=np.uint8))
        Image.fromarray(label).save(label_dir / f"{stem}.png")
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(image_dir / f"{stem}.jpg")


def make_coco_stuffonly(root):
    """$DETECTRON2_DATASETS/coco as prepare_panoptic_fpn.py leaves it, for the stuff-only sets."""
    for split in ("train2017", "val2017"):
        stems = [f"{index:012d}" for index in ((1, 2) if split == "train2017" else (3, 4))]
        write_split(root / "coco" / split, root / "coco" / f"panoptic_stuff_{split}", stems, 54)


def make_ade20k(root):
    """$DETECTRON2_DATASETS/ADEChallengeData2016 as prepare_ade20k_sem_seg.py leaves it."""
    ade = root / "ADEChallengeData2016"
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        stems = [f"{prefix}_{index:08d}" for index in (1, 2)]
        write_split(ade / "images" / split, ade / "annotations_detectron2" / split, stems, 150)


@pytest.fixture(scope="module")
def ade20k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    make_ade20k(root)
    return root


def detectron2_coco_semantic_cfg():
    """The solver, input and defaults of detectron2's PointRend Base-PointRend-Semantic-FPN.yaml:
    they all come from configs/Base-RCNN-FPN.yaml (shipped with detectron2) over get_cfg()."""
    cfg = get_cfg()
    # Read from the package: detectron2.model_zoo's own lookup imports pkg_resources.
    cfg.merge_from_file(
        str(Path(detectron2.__file__).parent / "model_zoo/configs/Base-RCNN-FPN.yaml")
    )
    return cfg


@pytest.mark.parametrize(("config", "depth"), [(COCO_R50, 50), (COCO_R101, 101)])
def test_coco_configs_are_detectron2s_recipe(config, depth):
    ours = setup_cfg(str(config_path(config)))
    reference = detectron2_coco_semantic_cfg()
    assert ours.SOLVER == reference.SOLVER
    our_input = ours.INPUT.clone()
    # Our keys, for crops and detectron2's PointRend colour augmentation (off, as in its COCO
    # recipe, whose base config does not have the key).
    del our_input.CROP["SINGLE_CATEGORY_MAX_AREA"]
    assert our_input.pop("COLOR_AUG_SSD") is False
    assert our_input == reference.INPUT
    assert not ours.INPUT.CROP.ENABLED
    assert ours.DATASETS.TRAIN == ("coco_2017_train_panoptic_stuffonly",)
    assert ours.DATASETS.TEST == ("coco_2017_val_panoptic_stuffonly",)
    # detectron2's semantic base: POINT_HEAD.NUM_CLASSES 54, TRAIN_NUM_POINTS 1024.
    assert ours.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 54
    assert ours.MODEL.POINT_HEAD.TRAIN_NUM_POINTS == 1024
    our_depth, our_weights = ours.MODEL.RESNETS.DEPTH, ours.MODEL.WEIGHTS
    assert our_depth == depth
    assert our_weights == f"detectron2://ImageNetPretrained/MSRA/R-{depth}.pkl"
    for name in (*ours.DATASETS.TRAIN, *ours.DATASETS.TEST):
        assert len(MetadataCatalog.get(name).stuff_classes) == 54


def test_ade20k_config_values():
    cfg = setup_cfg(str(config_path(ADE_R50)))
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 150
    assert PointSettings.from_config(cfg).train_num_points == 1024
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR) == (16, 160000, 0.01)
    assert (cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.BASE_LR_END) == ("WarmupCosineLR", 0.0001)
    assert tuple(cfg.INPUT.CROP.SIZE) == (512, 512) and cfg.INPUT.CROP.ENABLED
    # Mask2Former's ADE20K short sides: 512 rescaled by 0.5 to 2.0 in steps of 0.1.
    min_sizes = cfg.INPUT.MIN_SIZE_TRAIN
    assert min_sizes == tuple(int(x * 0.1 * 512) for x in range(5, 21))
    assert cfg.DATASETS.FOLDER_SPECS == ["configs/datasets/ade20k_150.yaml"]


# TINY_MODEL_OPTS for every config: also the widths of the DeepLabV3 and R-CNN heads (32 channels
# for GroupNorm's 32 groups), and a few detections of any score, so that the mask heads run.
TINY_ANY_MODEL_OPTS = [
    *TINY_MODEL_OPTS,
    "MODEL.DEEPLAB_V3.ASPP_CHANNELS", "32",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_MASK_HEAD.FC_DIM", "64",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "3",
]  # fmt: skip
EVERY_CONFIG = sorted(
    path.name for path in (REPO / "configs").rglob("*.yaml") if path.parent.name != "datasets"
)


@pytest.mark.parametrize("config", EVERY_CONFIG)
def test_every_config_builds_a_model(config):
    """Each config's model, with its class count, heads and backbone type, on a random R-18 (R-50
    for the ResNeXt configs, whose grouped bottlenecks R-18 does not have) with narrow heads."""
    cfg = setup_cfg(str(config_path(config)))
    options = list(TINY_ANY_MODEL_OPTS)
    if cfg.MODEL.RESNETS.NUM_GROUPS > 1:
        options += ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.RES2_OUT_CHANNELS", "256"]
    cfg.merge_from_list(options)
    model = build_model(cfg).eval()
    with torch.no_grad():
        image = torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8)
        (output,) = model([{"image": image, "height": SIZE, "width": SIZE}])
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        instances = output["instances"]
        assert 1 <= len(instances) <= 3
        assert instances.pred_masks.shape[1:] == (SIZE, SIZE)
        assert instances.pred_classes.max() < cfg.MODEL.ROI_HEADS.NUM_CLASSES
    else:
        assert output["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, SIZE, SIZE)


def test_ade20k_spec_registers_detectron2s_files_and_classes(ade20k_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(ade20k_root))
    assert register_folder_datasets_from_spec(str(ADE_SPEC)) == [
        "ade20k_150_train",
        "ade20k_150_val",
    ]
    ade = ade20k_root / "ADEChallengeData2016"
    for name, split in (("ade20k_150_train", "training"), ("ade20k_150_val", "validation")):
        metadata = MetadataCatalog.get(name)
        # detectron2's names, less the trailing space of its "window ".
        assert metadata.stuff_classes == [c.strip() for c in ADE20K_SEM_SEG_CATEGORIES]
        assert metadata.ignore_label == 255 and metadata.evaluator_type == "sem_seg"
        assert metadata.image_root == str(ade / "images" / split)
        # The same image and label pairs as detectron2's builtin ade20k_sem_seg_* loader.
        detectron2s = load_sem_seg(
            str(ade / "annotations_detectron2" / split), str(ade / "images" / split)
        )
        ours = DatasetCatalog.get(name)
        pairs = [(r["file_name"], r["sem_seg_file_name"]) for r in ours]
        assert pairs == [(r["file_name"], r["sem_seg_file_name"]) for r in detectron2s]
        assert len(pairs) == 2


def test_ade20k_spec_without_detectron2_datasets_names_the_variable(monkeypatch):
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    with pytest.raises(
        FileNotFoundError, match=r"ade20k_150\.yaml: .*DETECTRON2_DATASETS.* not set"
    ):
        register_folder_datasets_from_spec(str(ADE_SPEC))


def test_spec_folders_expand_variables_and_home(tmp_path, monkeypatch):
    variable = f"POINTREND_D2_TEST_{uuid.uuid4().hex[:8].upper()}"
    data = tmp_path / "elsewhere"
    write_split(data / "images", tmp_path / "home" / "labels", ["a"], 3)
    monkeypatch.setenv(variable, str(data))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    name = f"expanded_{variable.lower()}"
    spec = tmp_path / "specs" / "spec.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "classes: [a, b, c]\n"
        f"datasets:\n  {name}: {{image_dir: '${{{variable}}}/images', label_dir: ~/labels}}\n"
    )
    assert register_folder_datasets_from_spec(str(spec)) == [name]
    assert MetadataCatalog.get(name).image_root == str(data / "images")
    assert MetadataCatalog.get(name).sem_seg_root == str(tmp_path / "home" / "labels")

    monkeypatch.delenv(variable)
    spec.write_text(
        "classes: [a, b, c]\n"
        f"datasets:\n  other_{name}: {{image_dir: ${variable}/images, label_dir: labels}}\n"
    )
    with pytest.raises(
        FileNotFoundError,
        match=rf"spec\.yaml: image_dir .* dataset 'other_{name}' .* {variable}, which is not set",
    ):
        register_folder_datasets_from_spec(str(spec))


def copypaste_results(output: str) -> dict:
    """{task: {metric: value}} from the "copypaste:" lines that detectron2 logs after evaluation
    (a "Task: <task>" line, a line of metric names, a line of values)."""
    lines = re.findall(r"copypaste: (.*)", output)
    results = {}
    for index, line in enumerate(lines):
        if line.startswith("Task: "):
            names, values = lines[index + 1].split(","), lines[index + 2].split(",")
            results[line.removeprefix("Task: ")] = dict(zip(names, map(float, values), strict=True))
    return results


def assert_evaluated(output: str) -> None:
    """train_net.py trained from iteration 0, then evaluated mIoU (sem_seg) and Boundary IoU."""
    assert "Starting training from iteration 0" in output, output[-3000:]
    results = copypaste_results(output)
    assert {"sem_seg", "boundary_iou"} <= set(results), output[-3000:]
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    assert 0 <= results["boundary_iou"]["mBIoU"] <= 100
    assert results["boundary_iou"]["mIoU"] == results["sem_seg"]["mIoU"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make_layout", "config", "val_dataset"),
    [
        (make_coco_stuffonly, COCO_R50, "coco_2017_val_panoptic_stuffonly"),
        (make_ade20k, ADE_R50, "ade20k_150_val"),
    ],
)
def test_config_trains_and_evaluates_on_its_layout(
    tmp_path, monkeypatch, make_layout, config, val_dataset
):
    make_layout(tmp_path / "datasets")
    # detectron2 registers its builtin COCO sets at import, and the ADE20K spec names its folders,
    # under this folder.
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    output = run_train_net(
        "--config-file", str(config_path(config)),
        *TINY_RUN_OPTS, "OUTPUT_DIR", str(tmp_path / "out"),
    )  # fmt: skip
    assert_evaluated(output)
    assert val_dataset in output


SEMANTIC_CONFIGS = [
    config
    for config in EVERY_CONFIG
    if setup_cfg(str(config_path(config))).MODEL.META_ARCHITECTURE != "GeneralizedRCNN"
]


@pytest.mark.parametrize("config", SEMANTIC_CONFIGS)
def test_a_fully_ignored_crop_trains_with_zero_losses_and_gradients(config):
    """
    A random crop can hold only ignored labels (Cityscapes' and ADE20K's void, COCO's unlabeled):
    one training step of each semantic config's model (shrunk as above) on a batch of two such
    crops has losses of exactly 0, not NaN, and gradients of 0, so that the step changes nothing.
    """
    cfg = setup_cfg(str(config_path(config)))
    cfg.merge_from_list(TINY_ANY_MODEL_OPTS)
    model = build_model(cfg).train()
    ignored = torch.full((SIZE, SIZE), cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, dtype=torch.int64)
    batch = [
        {"image": torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8), "sem_seg": ignored}
        for _ in range(2)  # 2 images: BatchNorm's image pooling needs more than one value
    ]
    with EventStorage():
        losses = model(batch)
    assert losses and all(loss.item() == 0 for loss in losses.values()), losses
    sum(losses.values()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is None or not parameter.grad.any(), name
