"""
Config errors fail when the model is built, naming the key and the allowed values. (The -1 values
of TRAIN_NUM_POINTS and SUBDIVISION_STEPS, and resolve_subdivision_steps on its own, are tested in
test_deeplab.py.)
"""

import pytest
from detectron2.modeling import build_model

from tests.helpers import small_fpn_cfg


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
    ],
)  # fmt: skip
def test_bad_value_is_named_at_build_time(key, value, message):
    with pytest.raises(ValueError, match=message):
        build_model(small_fpn_cfg(**{key: value}))


@pytest.mark.parametrize("key,value", [
    ("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", 0.0),
    ("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", 1.0),
    ("MODEL.POINT_HEAD.OVERSAMPLE_RATIO", 1),
    ("MODEL.POINT_HEAD.SUBDIVISION_STEPS", -1),
    ("MODEL.POINT_HEAD.IN_FEATURES", ["p2", "p3"]),
])  # fmt: skip
def test_boundary_values_are_accepted(key, value):
    build_model(small_fpn_cfg(**{key: value}))
