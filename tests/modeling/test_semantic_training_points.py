"""PointRendSemanticHead's training points: the point sampler's, and with
MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO that fraction on the ground truth's boundaries."""

import torch
from detectron2.modeling import build_model

from pointrend_d2.modeling.point_features import boundary_pixels
from tests.helpers import small_fpn_cfg


def wire_targets() -> torch.Tensor:
    """Background 0 with a 1 px horizontal wire of class 3 on row 20 of 64 x 64."""
    targets = torch.zeros(2, 64, 64, dtype=torch.int64)
    targets[:, 20, :] = 3
    return targets


def test_boundary_ratio_puts_that_fraction_of_the_points_on_the_ground_truths_boundaries():
    options = {
        "MODEL.POINT_HEAD.TRAIN_NUM_POINTS": 400,
        "MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO": 0.25,
    }
    head = build_model(small_fpn_cfg(**options)).sem_seg_head
    targets = wire_targets()
    torch.manual_seed(0)
    coords, labels = head.training_points(torch.zeros(2, 5, 16, 16), targets)
    assert coords.shape == (2, 400, 2) and labels.shape == (2, 400)
    rows = (coords[..., 1] * 64).floor().to(torch.int64)
    cols = (coords[..., 0] * 64).floor().to(torch.int64)
    on_boundary = boundary_pixels(targets, 255)[0][rows, cols]
    # The last 100 points: rows 19-21 (the wire and its neighbours), labelled from the targets.
    assert on_boundary[:, 300:].all()
    assert torch.equal(labels, targets[0][rows, cols])
    assert (labels[:, 300:] == 3).any() and (labels[:, 300:] == 0).any()
    # The sampler's 300 (flat coarse logits: no uncertainty to follow) fall mostly off the wire.
    assert on_boundary[:, :300].float().mean() < 0.25


def test_default_ratio_keeps_the_papers_sampling():
    head = build_model(small_fpn_cfg(**{"MODEL.POINT_HEAD.TRAIN_NUM_POINTS": 64})).sem_seg_head
    coarse_logits = torch.randn(2, 5, 16, 16)
    torch.manual_seed(0)
    coords, _ = head.training_points(coarse_logits, wire_targets())
    torch.manual_seed(0)
    expected = head.point_sampler(coarse_logits, 64, 3, 0.75)
    assert torch.equal(coords, expected)
