"""
Config errors fail when the model is built, naming the key and the allowed values; each component
checks its own keys. (The -1 values of TRAIN_NUM_POINTS and SUBDIVISION_STEPS, and
PointSettings.steps_to_input_resolution on its own, are tested in test_deeplab.py.)
"""

import pytest
import torch
import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_model
from detectron2.utils.events import EventStorage
from PIL import Image
from torch import nn

from pointrend_d2.data import register_datasets_from_config
from pointrend_d2.data.catalog import validate_dataset_classes
from pointrend_d2.modeling.coarse_head import CoarseSemSegHead, SemanticFPNCoarseHead
from tests.helpers import small_fpn_cfg, small_rcnn_cfg


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.POINT_HEAD.IN_FEATURES", ["p2", "res9"],
         r"IN_FEATURES=\['p2', 'res9'\]: \['res9'\] not produced by the backbone; .* "
         r"\['p2', 'p3', 'p4', 'p5', 'p6'\]"),
        ("MODEL.POINT_HEAD.IN_FEATURES", [], r"IN_FEATURES=\[\]: none not produced"),
        ("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 0, r"SUBDIVISION_NUM_POINTS=0: must be > 0"),
        ("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", 1.5,
         r"IMPORTANCE_SAMPLE_RATIO=1.5: must be in \[0, 1\]"),
        ("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", -0.1,
         r"IMPORTANCE_SAMPLE_RATIO=-0.1: must be"),
        ("MODEL.POINT_HEAD.OVERSAMPLE_RATIO", 0, r"OVERSAMPLE_RATIO=0: must be >= 1"),
        ("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 0, r"TRAIN_NUM_POINTS=0: must be > 0, or -1"),
        ("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", -2, r"TRAIN_NUM_POINTS=-2: must be > 0, or -1"),
        ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 0, r"NUM_CLASSES=0: must be >= 1"),
        ("MODEL.POINT_HEAD.SUBDIVISION_STEPS", 3,
         r"MODEL.POINT_HEAD.SUBDIVISION_STEPS=3 .* coarse stride 4: it must be 2 .* or -1"),
        ("MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "SemSegFPNHeadd",
         r"COARSE_SEM_SEG_HEAD_NAME='SemSegFPNHeadd' is not a coarse head registered in "
         r"SEM_SEG_HEADS_REGISTRY; registered: \[.*'DeepLabV3CoarseHead'.*'SemSegFPNHead'.*\]"),
        # The PointRend head wrapping itself would recurse without end.
        ("MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "PointRendSemanticHead",
         r"'PointRendSemanticHead' is not a coarse head"),
        ("MODEL.POINT_HEAD.NAME", "MLP", r"POINT_HEAD.NAME='MLP' is not registered in "
         r"POINT_HEAD_REGISTRY; registered: \['MLPPointHead'\]"),
        ("MODEL.POINT_HEAD.SUBDIVISION_SELECTION", "dense",
         r"SUBDIVISION_SELECTION='dense': must be one of \('auto', 'bounded', 'topk'\)"),
        ("MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO", 1.0,
         r"TRAIN_BOUNDARY_POINT_RATIO=1.0: must be in \[0, 1\)"),
        ("MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO", -0.5,
         r"TRAIN_BOUNDARY_POINT_RATIO=-0.5: must be in \[0, 1\)"),
        ("MODEL.POINT_HEAD.IMAGE_PATCH_SIZE", 4,
         r"IMAGE_PATCH_SIZE=4: must be 0 \(no image pixels\) or an odd number >= 1"),
        ("MODEL.POINT_HEAD.IMAGE_PATCH_SIZE", -1, r"IMAGE_PATCH_SIZE=-1: must be 0"),
        # The default backbone outputs no image map.
        ("MODEL.POINT_HEAD.IMAGE_PATCH_SIZE", 3,
         r"IMAGE_PATCH_SIZE=3 reads the backbone's stride-1 map 'image', which it does not output "
         r"\(its maps: \['p2', .*\]\); set MODEL.BACKBONE.NAME to 'build_backbone_with_image'"),
    ],
)  # fmt: skip
def test_bad_value_is_named_at_build_time(key, value, message):
    with pytest.raises(ValueError, match=message):
        build_model(small_fpn_cfg(**{key: value}))


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV2",
         r"POOLER_TYPE='ROIAlignV2': PointRendInstanceMaskHead pools its own region features .* "
         r"set POOLER_TYPE to ''"),
        ("MODEL.ROI_MASK_HEAD.IN_FEATURES", ["p7"],
         r"ROI_MASK_HEAD.IN_FEATURES=\['p7'\]: \['p7'\] not among the maps the ROI heads receive "
         r"\(MODEL.ROI_HEADS.IN_FEATURES=\['p2', 'p3', 'p4', 'p5'\]\)"),
        ("MODEL.POINT_HEAD.IN_FEATURES", ["p6"], r"POINT_HEAD.IN_FEATURES=\['p6'\]: \['p6'\] not"),
        ("MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 7, r"POOLER_RESOLUTION=7: must be even"),
        ("MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION", 0,
         r"OUTPUT_SIDE_RESOLUTION=0: must be >= 1"),
        ("MODEL.ROI_MASK_HEAD.NUM_FC", 0, r"ROI_MASK_HEAD.NUM_FC=0: must be >= 1"),
        ("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", -1,
         r"TRAIN_NUM_POINTS=-1: must be > 0 for instance masks"),
        ("MODEL.POINT_HEAD.SUBDIVISION_STEPS", -1,
         r"SUBDIVISION_STEPS=-1: must be >= 0 for instance masks"),
        ("MODEL.POINT_HEAD.NAME", "MLP", r"POINT_HEAD.NAME='MLP' is not registered"),
        ("MODEL.POINT_HEAD.SUBDIVISION_SELECTION", "dense", r"SUBDIVISION_SELECTION='dense'"),
        ("MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO", 0.25,
         r"TRAIN_BOUNDARY_POINT_RATIO=0.25: the instance mask heads sample no points on "
         r"ground-truth boundaries \(semantic PointRend only\); set it to 0"),
        ("MODEL.POINT_HEAD.IMAGE_PATCH_SIZE", 3,
         r"IMAGE_PATCH_SIZE=3: the instance mask heads read no image pixels at their points "
         r"\(semantic PointRend only\); set it to 0"),
    ],
)  # fmt: skip
def test_bad_instance_value_is_named_at_build_time(key, value, message):
    with pytest.raises(ValueError, match=message):
        build_model(small_rcnn_cfg(**{key: value}))


def test_instance_subdivision_steps_and_initial_grid():
    """784 points re-predict every cell up to 28x28, so 5 steps from 7x7 are a 28x28 grid and 3
    steps; any step count >= 0 is allowed and reaches 7 * 2**steps."""
    for steps, initial, remaining in ((5, 28, 3), (2, 28, 0), (0, 7, 0)):
        head = build_model(
            small_rcnn_cfg(**{"MODEL.POINT_HEAD.SUBDIVISION_STEPS": steps})
        ).roi_heads.mask_head
        assert (head.initial_resolution, head.subdivision_steps) == (initial, remaining)


@pytest.mark.parametrize("key,value", [
    ("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", 0.0),
    ("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", 1.0),
    ("MODEL.POINT_HEAD.OVERSAMPLE_RATIO", 1),
    ("MODEL.POINT_HEAD.SUBDIVISION_STEPS", -1),
    ("MODEL.POINT_HEAD.IN_FEATURES", ["p2", "p3"]),
    ("MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO", 0.0),
    ("MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO", 0.99),
])  # fmt: skip
def test_boundary_values_are_accepted(key, value):
    build_model(small_fpn_cfg(**{key: value}))


def test_auto_selection_is_kept_until_a_call_resolves_it():
    """A model built for one device and moved to another selects for the tensors it gets."""
    semantic_head = build_model(small_fpn_cfg(**{"MODEL.DEVICE": "cpu"})).sem_seg_head
    mask_head = build_model(small_rcnn_cfg(**{"MODEL.DEVICE": "cpu"})).roi_heads.mask_head
    for head in (semantic_head, mask_head):
        assert head.point_settings.subdivision_selection == "auto"


def test_one_class_needs_a_coarse_head_that_trains_a_single_logit():
    """detectron2's SemSegFPNHead would train one logit with a 1-class cross-entropy (always 0)."""
    cfg = small_fpn_cfg(
        num_classes=1, **{"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME": "SemSegFPNHead"}
    )
    with pytest.raises(ValueError, match=r"NUM_CLASSES=1 .*'SemSegFPNHead' does not: use "):
        build_model(cfg)
    model = build_model(small_fpn_cfg(num_classes=1))
    assert type(model.sem_seg_head.coarse_sem_seg_head) is SemanticFPNCoarseHead


class ConstantLossCoarseHead(SemanticFPNCoarseHead):
    """A coarse head with a loss of its own (a stand-in for, e.g., hard-pixel mining)."""

    def losses(self, predictions, targets):
        return {"loss_sem_seg": predictions.sum() * 0 + 42.0, "loss_extra": predictions.sum() * 0}


@pytest.fixture
def constant_loss_coarse_head():
    SEM_SEG_HEADS_REGISTRY.register(ConstantLossCoarseHead)
    yield "ConstantLossCoarseHead"
    SEM_SEG_HEADS_REGISTRY._obj_map.pop("ConstantLossCoarseHead")


def test_the_coarse_heads_own_loss_is_used(constant_loss_coarse_head):
    cfg = small_fpn_cfg(**{"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME": constant_loss_coarse_head})
    model = build_model(cfg).train()
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    sem_seg = torch.randint(0, 5, (64, 64))
    with EventStorage():
        losses = model([{"image": image, "sem_seg": sem_seg}])
    assert losses.keys() == {"loss_sem_seg", "loss_extra", "loss_sem_seg_point"}
    assert losses["loss_sem_seg"].item() == 42.0


class NoLossHead(nn.Module):
    common_stride = 4

    def __init__(self, cfg, input_shape):
        super().__init__()

    def layers(self, features):
        return features["p2"][:, :5]

    losses = None


def test_coarse_head_without_the_contract_is_named(monkeypatch):
    monkeypatch.setitem(SEM_SEG_HEADS_REGISTRY._obj_map, "NoLossHead", NoLossHead)
    assert not isinstance(NoLossHead(None, None), CoarseSemSegHead)
    cfg = small_fpn_cfg(**{"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME": "NoLossHead"})
    with pytest.raises(ValueError, match="'NoLossHead' is not a coarse head registered"):
        build_model(cfg)


def test_one_class_model_on_a_two_class_folder_spec(tmp_path):
    """One check of NUM_CLASSES against a folder dataset, which allows 1 for 2 classes."""
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "labels" / "a.png")
    spec = tmp_path / "spec.yaml"
    name = "config_checks_two_class_spec"
    spec.write_text(
        yaml.safe_dump(
            {
                "classes": ["bg", "fg"],
                "datasets": {name: {"image_dir": "images", "label_dir": "labels"}},
            }
        )
    )
    try:
        for num_classes in (1, 2):
            cfg = small_fpn_cfg(num_classes=num_classes, **{"DATASETS.FOLDER_SPECS": [str(spec)]})
            cfg.DATASETS.TRAIN = (name,)
            assert register_datasets_from_config(cfg) == [name]
            validate_dataset_classes(cfg, [name])
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
        with pytest.raises(
            ValueError,
            match=r"NUM_CLASSES=3 but dataset .* set NUM_CLASSES to 2 "
            r"\(or 1 for a sigmoid foreground logit\)",
        ):
            validate_dataset_classes(cfg, [name])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
