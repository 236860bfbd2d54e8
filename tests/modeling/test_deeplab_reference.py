"""
The dilated ResNet and DeepLabV3CoarseHead against detectron2's DeepLab project
(detectron2.projects.deeplab, a test oracle only): its build_resnet_deeplab_backbone, DeepLabV3Head
and SemanticSegmentor, built from its own settings (add_deeplab_config) with the sizes of ours.

Where they describe the same model (a basic stem, res5 dilated without multi-grid, the
cross-entropy loss, image pooling over the whole map) a checkpoint of the reference loads into our
DeepLabV3 baseline with every tensor and gives the same logits and losses. They differ by design,
tested here: our loss is 0, not NaN, on a fully ignored crop; our image pooling averages the whole
map, the reference's (with INPUT.CROP.ENABLED) windows of the training crop's size, which agree on
an image of that size only; and our backbone has the output stride as its size divisibility, so
that the model pads every image to a multiple of it (the reference pads none).
"""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.projects import deeplab as reference
from detectron2.utils.events import EventStorage

from pointrend_d2.checkpoint import SafeCheckpointer
from pointrend_d2.modeling.deeplab_head import DeepLabV3CoarseHead
from tests.helpers import small_deeplab_cfg

NUM_CLASSES = 5
# A narrow ResNet-50 (the reference builds bottleneck ResNets only), GroupNorm throughout.
SIZES = {
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 32,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 128,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 32,
}


def our_cfg(output_stride: int = 16):
    return small_deeplab_cfg(
        NUM_CLASSES,
        output_stride,
        **{**SIZES, "MODEL.SEM_SEG_HEAD.NAME": "DeepLabV3CoarseHead"},
    )


def reference_cfg(ours, *, crop_size=None):
    """detectron2's DeepLabV3 (its add_deeplab_config defaults, then the keys of its Cityscapes
    configs) with the model of ``ours``: a basic stem, no multi-grid, cross-entropy. With
    ``crop_size``, INPUT.CROP as its training configs set it (image pooling over crop windows)."""
    cfg = get_cfg()
    reference.add_deeplab_config(cfg)
    resnets, deeplab = ours.MODEL.RESNETS, ours.MODEL.DEEPLAB_V3
    stride = {(1, 2): 16, (2, 4): 8}[(resnets.RES4_DILATION, resnets.RES5_DILATION)]
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.META_ARCHITECTURE", "SemanticSegmentor",
            "MODEL.BACKBONE.NAME", "build_resnet_deeplab_backbone",
            "MODEL.BACKBONE.FREEZE_AT", 0,
            "MODEL.RESNETS.STEM_TYPE", "basic",
            "MODEL.RESNETS.RES5_MULTI_GRID", [1, 1, 1],
            "MODEL.RESNETS.OUT_FEATURES", ["res2", "res5"],
            "MODEL.SEM_SEG_HEAD.NAME", "DeepLabV3Head",
            "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res5"],
            "MODEL.SEM_SEG_HEAD.LOSS_TYPE", "cross_entropy",
            "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", stride,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_CLASSES,
            "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", deeplab.ASPP_CHANNELS,
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", deeplab.ASPP_CHANNELS,
            "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", deeplab.ASPP_DILATIONS,
            "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT", deeplab.DROPOUT,
            "MODEL.SEM_SEG_HEAD.NORM", deeplab.NORM,
            "INPUT.CROP.ENABLED", crop_size is not None,
            "INPUT.CROP.TYPE", "absolute",
            "INPUT.CROP.SIZE", crop_size or (512, 1024),
        ]
    )  # fmt: skip
    for key in ("DEPTH", "NORM", "STEM_OUT_CHANNELS", "RES2_OUT_CHANNELS", "WIDTH_PER_GROUP",
                "STRIDE_IN_1X1", "NUM_GROUPS", "RES4_DILATION", "RES5_DILATION"):  # fmt: skip
        cfg.MODEL.RESNETS[key] = resnets[key]
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        cfg.MODEL[key] = ours.MODEL[key]
    return cfg


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(reference, ours): our DeepLabV3 baseline loaded from a checkpoint the reference saved,
    its classifier of ordinary scale (the initial std 0.001 makes every logit near zero)."""
    torch.manual_seed(0)
    ours_cfg = our_cfg()
    reference_model = build_model(reference_cfg(ours_cfg)).eval()
    predictor = reference_model.sem_seg_head.predictor
    with torch.no_grad():
        predictor.weight.normal_(0, predictor.weight[0].numel() ** -0.5)
    save_dir = tmp_path_factory.mktemp("deeplab_reference")
    DetectionCheckpointer(reference_model, save_dir=str(save_dir)).save("model_final")
    ours = build_model(ours_cfg).eval()
    SafeCheckpointer(ours).load(str(save_dir / "model_final.pth"))  # strict: every tensor
    assert isinstance(ours.sem_seg_head, DeepLabV3CoarseHead)
    assert ours.state_dict().keys() == reference_model.state_dict().keys()
    return reference_model, ours


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_backbone_matches_reference(output_stride):
    torch.manual_seed(0)
    cfg = our_cfg(output_stride)
    expected_backbone = build_backbone(reference_cfg(cfg), ShapeSpec(channels=3)).eval()
    backbone = build_backbone(cfg, ShapeSpec(channels=3)).eval()
    backbone.load_state_dict(expected_backbone.state_dict())
    assert backbone.output_shape() == expected_backbone.output_shape()
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected, actual = expected_backbone(image), backbone(image)
    for name in ("res2", "res5"):
        assert torch.equal(actual[name], expected[name]), name
    # Ours pads images to a multiple of its output stride; the reference to nothing.
    assert (backbone.size_divisibility, expected_backbone.size_divisibility) == (output_stride, 0)


def test_inference_matches_reference(models):
    """An image whose sides are multiples of the output stride: nothing to pad for either."""
    reference_model, ours = models
    image = torch.randint(0, 256, (3, 128, 192)).float()
    with torch.no_grad():
        expected = reference_model([{"image": image}])[0]["sem_seg"]
        actual = ours([{"image": image}])[0]["sem_seg"]
    assert actual.shape == (NUM_CLASSES, 128, 192)
    assert torch.equal(actual, expected)


def training_losses(model, labels: torch.Tensor) -> dict:
    image = torch.randint(0, 256, (3, *labels.shape), generator=torch.Generator().manual_seed(1))
    model.train()
    try:
        with EventStorage():
            torch.manual_seed(3)  # the same ASPP dropout
            return model([{"image": image.float(), "sem_seg": labels}])
    finally:
        model.eval()


def test_training_loss_matches_reference_but_not_on_a_fully_ignored_crop(models):
    reference_model, ours = models
    labels = torch.randint(0, NUM_CLASSES, (128, 192), generator=torch.Generator().manual_seed(2))
    labels[:40, :50] = 255
    expected, actual = training_losses(reference_model, labels), training_losses(ours, labels)
    assert actual.keys() == expected.keys() == {"loss_sem_seg"}
    torch.testing.assert_close(actual["loss_sem_seg"], expected["loss_sem_seg"])
    ignored = torch.full_like(labels, 255)
    assert training_losses(reference_model, ignored)["loss_sem_seg"].isnan()
    assert training_losses(ours, ignored)["loss_sem_seg"].item() == 0


def test_image_pooling_agrees_with_the_references_crop_windows_on_a_crop_only():
    """
    With INPUT.CROP.ENABLED the reference's ASPP averages windows of the crop's size, ours the
    whole map: the same on a map of the crop's size, not on a larger one. (BatchNorm in the
    heads, which at inference is affine: GroupNorm would normalise the pooled 1x1 map away.)
    """
    torch.manual_seed(0)
    cfg = our_cfg()
    cfg.MODEL.DEEPLAB_V3.NORM = "BN"
    crop = (128, 192)
    input_shape = {"res5": ShapeSpec(channels=64, stride=16)}
    reference_head = reference.DeepLabV3Head(reference_cfg(cfg, crop_size=crop), input_shape)
    head = DeepLabV3CoarseHead(cfg, input_shape)
    head.load_state_dict(reference_head.state_dict())
    # Averages of the same 96 values in another order differ by at most 96 eps of the largest,
    # and the layers after them add rounding of the same order: 1e-4 is 800 eps.
    for factor, agree in ((1, True), (2, False)):
        res5 = torch.randn(2, 64, crop[0] * factor // 16, crop[1] * factor // 16)
        with torch.no_grad():
            expected = reference_head.eval()({"res5": res5})[0]
            actual = head.eval()({"res5": res5})[0]
        difference = (actual - expected).abs().max() / expected.abs().max()
        assert (difference <= 1e-4) == agree, (factor, difference)
