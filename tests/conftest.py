"""Shared test helpers: small configs and models built on the CPU."""

from pathlib import Path

import pytest
import torch
from detectron2.config import CfgNode, get_cfg

import pointrend_d2

REPO = Path(__file__).resolve().parents[1]


def _small_cfg(base_config: str, num_classes: int, options: list, overrides: dict) -> CfgNode:
    """``base_config`` shrunk for fast CPU tests by ``options``, then ``overrides`` (KEY=VALUE)."""
    cfg = get_cfg()
    pointrend_d2.add_pointrend_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / base_config))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.RESNETS.DEPTH", 18,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes,
            "MODEL.POINT_HEAD.FC_DIM", 32,
            "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 256,
            "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 600,
            *options,
        ]
    )  # fmt: skip
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def small_fpn_cfg(num_classes: int = 5, **overrides) -> CfgNode:
    """A tiny ResNet-18 FPN PointRend config (random weights) for fast CPU tests."""
    options = [
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.FPN.OUT_CHANNELS", 32,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
    ]  # fmt: skip
    return _small_cfg("Base-PointRend-Semantic-FPN.yaml", num_classes, options, overrides)


def small_deeplab_cfg(num_classes: int = 5, output_stride: int = 16, **overrides) -> CfgNode:
    """A tiny dilated ResNet-18 DeepLabV3 + PointRend config (random weights) for CPU tests."""
    res4_dilation, res5_dilation, aspp_dilations = {
        16: (1, 2, [6, 12, 18]),
        8: (2, 4, [12, 24, 36]),
    }[output_stride]
    options = [
        "MODEL.RESNETS.NORM", "GN",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", 32,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
        "MODEL.RESNETS.RES4_DILATION", res4_dilation,
        "MODEL.RESNETS.RES5_DILATION", res5_dilation,
        "MODEL.DEEPLAB_V3.ASPP_CHANNELS", 32,
        "MODEL.DEEPLAB_V3.ASPP_DILATIONS", aspp_dilations,
        "MODEL.DEEPLAB_V3.NORM", "GN",
        "MODEL.DEEPLAB_V3.DROPOUT", 0.0,
    ]  # fmt: skip
    return _small_cfg("Base-DeepLabV3-PointRend.yaml", num_classes, options, overrides)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
