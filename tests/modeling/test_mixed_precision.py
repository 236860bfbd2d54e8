"""
Training under autocast (SOLVER.AMP.ENABLED on a GPU): the heads run in half precision and the
losses are computed in float32. detectron2's AMPTrainer needs CUDA, so this runs the same training
forward under the CPU's bfloat16 autocast.
"""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from tests.helpers import small_fpn_cfg, small_rcnn_cfg


def _semantic_batch():
    torch.manual_seed(0)
    return [
        {"image": torch.rand(3, 64, 64) * 255, "sem_seg": torch.randint(0, 5, (64, 64))}
        for _ in range(2)
    ]


def _instance_batch():
    torch.manual_seed(0)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8:30, 10:40] = True
    masks[1, 30:60, 20:50] = True
    instances = Instances(
        (64, 64),
        gt_boxes=Boxes(torch.tensor([[10.0, 8.0, 40.0, 30.0], [20.0, 30.0, 50.0, 60.0]])),
        gt_classes=torch.tensor([0, 1]),
        gt_masks=BitMasks(masks),
    )
    return [{"image": torch.rand(3, 64, 64) * 255, "instances": instances}]


@pytest.mark.parametrize(
    "make_cfg,batch,point_loss",
    [(small_fpn_cfg, _semantic_batch, "loss_sem_seg_point"),
     (small_rcnn_cfg, _instance_batch, "loss_mask_point")],
    ids=["semantic", "instance"],
)  # fmt: skip
def test_losses_are_float32_under_autocast(make_cfg, batch, point_loss):
    cfg = make_cfg(**{"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 16})
    model = build_model(cfg).train()
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(batch())
    assert point_loss in losses
    for name, loss in losses.items():
        assert loss.dtype == torch.float32, name
        assert torch.isfinite(loss), name
    sum(losses.values()).backward()
    point_head = (
        model.sem_seg_head.point_head if hasattr(model, "sem_seg_head") else
        model.roi_heads.mask_head.point_head
    )  # fmt: skip
    assert point_head.predictor.weight.grad is not None
    assert torch.isfinite(point_head.predictor.weight.grad).all()
