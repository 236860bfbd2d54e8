"""
Datasets with one foreground class: NUM_CLASSES=1 (a sigmoid foreground logit, binary
cross-entropy) and NUM_CLASSES=2 (background + object, softmax), through every model.
"""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from pointrend_d2.modeling.coarse_head import expand_foreground_logit
from pointrend_d2.modeling.losses import sem_seg_loss
from tests.helpers import reference_cfg, small_deeplab_cfg, small_fpn_cfg

MODELS = {
    "fpn_pointrend": lambda num_classes: small_fpn_cfg(num_classes=num_classes),
    "deeplab_pointrend": lambda num_classes: small_deeplab_cfg(num_classes=num_classes),
    "deeplab": lambda num_classes: small_deeplab_cfg(
        num_classes=num_classes, **{"MODEL.SEM_SEG_HEAD.NAME": "DeepLabV3CoarseHead"}
    ),
}


def object_batch(height: int = 40, width: int = 56):
    """Two images of a bright rectangle (label 1) on a dark background (0), some pixels ignored."""
    batch = []
    for index in range(2):
        labels = torch.zeros(height, width, dtype=torch.long)
        labels[8 + 4 * index : 30, 12 : 44 - 5 * index] = 1
        labels[:, :4] = 255
        image = 40.0 + 160.0 * (labels == 1).float().expand(3, -1, -1)
        batch.append({"image": image + 8 * torch.randn(3, height, width), "sem_seg": labels})
    return batch


@pytest.mark.parametrize("num_classes", [1, 2])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_one_foreground_class_trains_and_infers(model_name, num_classes):
    model = build_model(MODELS[model_name](num_classes)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with EventStorage():
        for _ in range(2):
            losses = model(object_batch())
            total = sum(losses.values())
            assert torch.isfinite(total)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
    expected_keys = {"loss_sem_seg"} | (
        {"loss_sem_seg_point"} if "pointrend" in model_name else set()
    )
    assert losses.keys() == expected_keys
    predictors = [m for name, m in model.named_modules() if name.endswith("predictor")]
    assert predictors and all(p.weight.grad.abs().sum() > 0 for p in predictors)

    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": object_batch()[0]["image"][:, :35, :50]}])
    sem_seg = result["sem_seg"]
    # Two channels either way, so that SemSegEvaluator's argmax gives labels 0 and 1.
    assert sem_seg.shape == (2, 35, 50)
    assert torch.isfinite(sem_seg).all()
    if num_classes == 1:
        assert torch.equal(sem_seg[0], torch.zeros(35, 50))


def test_one_class_losses_are_binary_cross_entropy():
    model = build_model(small_fpn_cfg(num_classes=1)).train()
    batch_item = object_batch(height=64, width=96)[0]  # sizes divisible by the FPN's 32
    features = model.backbone(batch_item["image"].unsqueeze(0))
    targets = batch_item["sem_seg"].unsqueeze(0)
    head = model.sem_seg_head
    coarse_logits = head.coarse_sem_seg_head.layers(features)
    losses = head.coarse_sem_seg_head.losses(coarse_logits, targets)
    upsampled = F.interpolate(coarse_logits, scale_factor=4, mode="bilinear", align_corners=False)
    valid = targets != 255
    expected = F.binary_cross_entropy_with_logits(upsampled[:, 0][valid], targets[valid].float())
    torch.testing.assert_close(losses["loss_sem_seg"], expected)


def test_sem_seg_loss():
    logits = torch.randn(2, 1, 5, 7)
    labels = torch.randint(0, 2, (2, 5, 7))
    labels[0, :2] = 255
    valid = labels != 255
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], labels[valid].float())
    torch.testing.assert_close(sem_seg_loss(logits, labels, 255), expected)

    logits = torch.randn(2, 4, 5, 7)
    labels = torch.randint(0, 4, (2, 5, 7))
    labels[1, 3:] = 255
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(sem_seg_loss(logits, labels, 255), expected)
    # All ignored: zero, not NaN.
    assert sem_seg_loss(logits, torch.full_like(labels, 255), 255).item() == 0


def test_expand_foreground_logit():
    logit = torch.randn(2, 1, 3, 4)
    two_class = expand_foreground_logit(logit)
    assert two_class.shape == (2, 2, 3, 4)
    torch.testing.assert_close(two_class.softmax(dim=1)[:, 1:], logit.sigmoid())
    assert torch.equal(two_class.argmax(dim=1), (logit[:, 0] > 0).long())
    many = torch.randn(2, 3, 3, 4)
    assert expand_foreground_logit(many) is many


def test_reference_fails_with_one_class():
    """detectron2's PointRend takes the top-2 logits, which one class does not have."""
    reference_model = build_model(reference_cfg(small_fpn_cfg(num_classes=1))).eval()
    with pytest.raises(RuntimeError, match="out of range"), torch.no_grad():
        reference_model([{"image": object_batch()[0]["image"]}])
