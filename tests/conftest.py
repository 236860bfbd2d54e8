"""Shared test helpers: small configs and models built on the CPU."""

from pathlib import Path

import pytest
import torch
from detectron2.config import CfgNode, get_cfg

import pointrend_d2

REPO = Path(__file__).resolve().parents[1]


def small_fpn_cfg(num_classes: int = 5, **overrides) -> CfgNode:
    """A tiny ResNet-18 FPN PointRend config (random weights) for fast CPU tests."""
    cfg = get_cfg()
    pointrend_d2.add_pointrend_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "Base-PointRend-Semantic-FPN.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.RESNETS.DEPTH", 18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
            "MODEL.FPN.OUT_CHANNELS", 32,
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes,
            "MODEL.POINT_HEAD.FC_DIM", 32,
            "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 256,
            "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 600,
        ]
    )  # fmt: skip
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
