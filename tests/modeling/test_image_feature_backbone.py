"""build_backbone_with_image: the wrapped backbone's maps plus the standardised image at stride 1,
and the semantic point head reading image patches from it (MODEL.POINT_HEAD.IMAGE_PATCH_SIZE)."""

import pytest
import torch
from detectron2.modeling import build_model

from pointrend_d2.modeling.image_feature_backbone import standardize_per_image
from tests.helpers import small_fpn_cfg

WITH_IMAGE = {"MODEL.BACKBONE.NAME": "build_backbone_with_image"}


def test_outputs_the_wrapped_maps_and_the_standardised_image():
    torch.manual_seed(0)
    backbone = build_model(small_fpn_cfg(**WITH_IMAGE)).backbone.eval()
    shapes = backbone.output_shape()
    inner_shapes = backbone.backbone.output_shape()
    assert shapes == {**inner_shapes, "image": shapes["image"]}
    assert (shapes["image"].channels, shapes["image"].stride) == (3, 1)
    assert backbone.size_divisibility == backbone.backbone.size_divisibility == 32
    images = torch.randn(2, 3, 64, 96) * 40 + 7
    with torch.no_grad():
        outputs, inner_outputs = backbone(images), backbone.backbone(images)
    assert sorted(outputs) == sorted([*inner_outputs, "image"])
    for name, value in inner_outputs.items():
        assert torch.equal(outputs[name], value)
    assert torch.equal(outputs["image"], standardize_per_image(images))


def test_standardised_channels_have_zero_mean_and_unit_variance():
    images = (
        torch.randn(2, 3, 20, 30, dtype=torch.float64)
        * torch.tensor([1.0, 50.0, 1e-3]).view(1, 3, 1, 1)
        + 100.0
    )
    images[1, 2] = 4.0  # a constant channel
    standardized = standardize_per_image(images)
    torch.testing.assert_close(
        standardized[0].mean(dim=(1, 2)), torch.zeros(3, dtype=torch.float64)
    )
    torch.testing.assert_close(
        standardized[0].std(dim=(1, 2), correction=0), torch.ones(3, dtype=torch.float64)
    )
    assert torch.equal(standardized[1, 2], torch.zeros(20, 30, dtype=torch.float64))


@pytest.mark.parametrize(
    "wrapped_name,message",
    [
        ("build_resnet_fpn_backbon", r"WRAPPED_NAME='build_resnet_fpn_backbon': must name another "
         r"backbone builder of BACKBONE_REGISTRY .*'build_resnet_fpn_backbone'"),
        # Wrapping itself would recurse without end.
        ("build_backbone_with_image", r"WRAPPED_NAME='build_backbone_with_image': must name"),
    ],
)  # fmt: skip
def test_bad_wrapped_name_is_named(wrapped_name, message):
    cfg = small_fpn_cfg(**WITH_IMAGE, **{"MODEL.BACKBONE.WRAPPED_NAME": wrapped_name})
    with pytest.raises(ValueError, match=message):
        build_model(cfg)


def test_point_head_reads_the_pixels_around_its_points_and_no_others():
    torch.manual_seed(0)
    cfg = small_fpn_cfg(**WITH_IMAGE, **{"MODEL.POINT_HEAD.IMAGE_PATCH_SIZE": 3})
    head = build_model(cfg).sem_seg_head.eval()
    # p2 (32 channels) and 3 x 3 pixels of 3 channels; the coarse logits come in separately.
    assert head.point_head.fc1.in_channels == 32 + 27 + 5
    features = {"p2": torch.randn(1, 32, 16, 16), "image": torch.randn(1, 3, 64, 64)}
    coarse_logits = torch.randn(1, 5, 16, 16)
    # Pixel centres of (row 10, col 20) and (row 40, col 50).
    points = torch.tensor([[[20.5 / 64, 10.5 / 64], [50.5 / 64, 40.5 / 64]]])
    with torch.no_grad():
        logits = head.predict_points(features, coarse_logits, points)
        far = {**features, "image": features["image"].clone()}
        far["image"][0, :, 12:39, :] += 5.0  # rows 12-38: more than 1 px from both points
        far["image"][0, :, :, 22:49] += 5.0
        assert torch.equal(head.predict_points(far, coarse_logits, points), logits)
        near = {**features, "image": features["image"].clone()}
        near["image"][0, 1, 41, 51] += 5.0  # the second point's bottom-right neighbour
        changed = head.predict_points(near, coarse_logits, points)
    assert torch.equal(changed[..., 0], logits[..., 0])
    assert not torch.equal(changed[..., 1], logits[..., 1])


def test_model_with_image_patches_trains_and_segments():
    torch.manual_seed(0)
    cfg = small_fpn_cfg(**WITH_IMAGE, **{"MODEL.POINT_HEAD.IMAGE_PATCH_SIZE": 3})
    model = build_model(cfg)
    inputs = [
        {"image": torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8),
         "sem_seg": torch.randint(0, 5, (64, 96))}
        for _ in range(2)
    ]  # fmt: skip
    losses = model(inputs)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
    sum(losses.values()).backward()
    assert model.backbone.backbone.bottom_up.stem.conv1.weight.grad is not None
    assert model.sem_seg_head.point_head.fc1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (output,) = model([{"image": inputs[0]["image"]}])
    assert output["sem_seg"].shape == (5, 64, 96)
