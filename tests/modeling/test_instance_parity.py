"""
Parity of PointRendInstanceMaskHead with detectron2's reference PointRend Mask R-CNN
(detectron2.projects.point_rend, a test oracle only): a checkpoint saved from the reference model
loads into ours with every tensor, inference gives the same boxes, scores, classes and masks, and
with the same proposals and points the training losses agree.
"""

import dataclasses

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.projects.point_rend import mask_head as reference_mask_head
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from pointrend_d2.checkpoint import SafeCheckpointer
from pointrend_d2.modeling import mask_head as our_mask_head
from pointrend_d2.modeling import point_head as our_point_head
from pointrend_d2.modeling.point_features import sample_uncertain_points
from tests.helpers import (
    assert_inference_matches,
    assert_steps_differ_only_at_ties,
    foreground_proposals,
    pixel_centre_points,
    reference_instance_cfg,
    small_rcnn_cfg,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(reference, ours, our_cfg): ours loaded from a checkpoint that the reference saved."""
    torch.manual_seed(0)
    our_cfg = small_rcnn_cfg(num_classes=5)
    reference_model = build_model(reference_instance_cfg(our_cfg)).eval()
    # Predictors of ordinary scale: their initial std 0.001 makes every mask logit near zero, and
    # a tolerance would then say little about PointRend's refinement.
    mask_head = reference_model.roi_heads.mask_head
    with torch.no_grad():
        for layer in (mask_head.coarse_head.prediction, mask_head.point_head.predictor):
            fan_in = layer.weight[0].numel()
            layer.weight.normal_(0, fan_in**-0.5)
    save_dir = tmp_path_factory.mktemp("reference_instance_checkpoint")
    DetectionCheckpointer(reference_model, save_dir=str(save_dir)).save("model_final")
    ours = build_model(our_cfg).eval()
    # SafeCheckpointer is DetectionCheckpointer loading strictly: every tensor, no shape skipped.
    SafeCheckpointer(ours).load(str(save_dir / "model_final.pth"))
    ours_state, reference_state = ours.state_dict(), reference_model.state_dict()
    assert ours_state.keys() == reference_state.keys()
    for key in ours_state:
        assert torch.equal(ours_state[key], reference_state[key]), key
    return reference_model, ours, our_cfg


def test_checkpoint_holds_both_heads(models):
    _, ours, _ = models
    names = set(ours.state_dict())
    # A narrower CONV_DIM than the FPN's channels adds the channel-reducing conv, as in detectron2.
    for name in (
        "roi_heads.mask_head.coarse_head.reduce_channel_dim_conv.weight",
        "roi_heads.mask_head.coarse_head.reduce_spatial_dim_conv.weight",
        "roi_heads.mask_head.coarse_head.fc2.weight",
        "roi_heads.mask_head.coarse_head.prediction.weight",
        "roi_heads.mask_head.point_head.fc3.weight",
        "roi_heads.mask_head.point_head.predictor.weight",
    ):
        assert name in names


def _conv_on_concatenation(layer, features, extra_features, output_channels=None):
    """The reference point head's arithmetic for our point head: the 1x1 convolution on the
    concatenated inputs, every output channel, then the requested ones."""
    inputs = features if extra_features is None else torch.cat([features, extra_features], dim=1)
    out = layer(inputs)
    if output_channels is None:
        return out
    return out.gather(1, output_channels.unsqueeze(2).expand(-1, -1, out.shape[2]))


SIZES = pytest.mark.parametrize(
    "size", [(128, 160), (150, 203)], ids=["divisible", "not-divisible"]
)


@SIZES
def test_inference_matches_reference(models, monkeypatch, size):
    """
    With the reference's summation order in our point head and its selection (a dense top-k),
    every mask logit agrees with the reference's to float rounding, and so do the boxes, scores,
    classes and pasted masks. (:func:`test_other_orders_and_selections_differ_only_at_ties`
    covers our order and the bounded selection.)
    """
    reference_model, ours, _ = models
    _select_by(monkeypatch, ours.roi_heads.mask_head, "topk")
    monkeypatch.setattr(our_point_head, "pointwise_linear", _conv_on_concatenation)
    # The reference refines every class's logit; ours the predicted class's only.
    assert_inference_matches(
        monkeypatch,
        (reference_model, ours),
        (reference_mask_head, our_mask_head),
        _random_image(*size),
    )


def _select_by(monkeypatch, head, selection: str) -> None:
    settings = dataclasses.replace(head.point_settings, subdivision_selection=selection)
    monkeypatch.setattr(head, "point_settings", settings)


def _random_image(height: int, width: int) -> list[dict]:
    torch.manual_seed(1)
    return [{"image": torch.rand(3, height, width) * 255, "height": height, "width": width}]


def _subdivision_steps(head, features, boxes, classes) -> list:
    steps = []
    with torch.no_grad():
        head.subdivision_inference(features, [boxes], classes, on_step=steps.append)
    return steps


# Rounding allowance between the two summation orders of the point MLP, relative to the largest
# logit: each of its 4 layers sums at most 512 products, whose float32 sums differ by at most
# n * eps = 512 * 1.2e-7 = 6e-5 of the sum of the products' magnitudes (Higham's bound), and
# through 4 layers 2.5e-4. That sum of magnitudes can exceed the largest logit where terms cancel;
# 1e-3 allows for 4x cancellation and stays far below the spread of the uncertainties.
ROUNDING_ALLOWANCE = 1e-3


@pytest.mark.parametrize("arithmetic", ["ours", "reference"])
@pytest.mark.parametrize("selection", ["topk", "bounded"])
@SIZES
def test_other_orders_and_selections_differ_only_at_ties(
    models, monkeypatch, size, selection, arithmetic
):
    """
    Our point MLP's matrix products sum in another order than the reference's convolution, so
    their logits differ by rounding; the bounded selection finds the same cells as a top-k except
    among exactly equal uncertainties, which the two break differently. Where two cells'
    uncertainties at the N-th place are within that rounding (or equal), another cell can be
    selected, after which the maps differ by more. Step by step against our head with the
    reference's order and selection (which equals the reference, above): until a selection
    differs, the maps agree to rounding; at the first step where one differs, every differing cell
    is within twice the measured rounding of the N-th uncertainty (exactly at it where the order
    is the same); the pasted masks are the reference's. How many cells differ depends on the CPU's
    kernels.
    """
    reference_model, ours, _ = models
    head = ours.roi_heads.mask_head
    inputs = _random_image(*size)
    if arithmetic == "reference":
        monkeypatch.setattr(our_point_head, "pointwise_linear", _conv_on_concatenation)
    _select_by(monkeypatch, head, selection)
    with torch.no_grad():
        expected = reference_model(inputs)[0]["instances"]
        actual = ours(inputs)[0]["instances"]
        features = ours.backbone(ours.preprocess_image(inputs).tensor)
    assert torch.equal(actual.pred_masks, expected.pred_masks)

    boxes, classes = actual.pred_boxes.tensor, actual.pred_classes
    our_steps = _subdivision_steps(head, features, boxes, classes)
    monkeypatch.setattr(our_point_head, "pointwise_linear", _conv_on_concatenation)
    _select_by(monkeypatch, head, "topk")
    reference_steps = _subdivision_steps(head, features, boxes, classes)
    assert_steps_differ_only_at_ties(our_steps, reference_steps, ROUNDING_ALLOWANCE)


def test_zero_detections_match_reference(models):
    reference_model, ours, _ = models
    empty = Instances(
        (64, 64),
        pred_boxes=Boxes(torch.zeros(0, 4)),
        pred_classes=torch.zeros(0, dtype=torch.int64),
    )
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        features = ours.backbone(image)
        our_result = ours.roi_heads.mask_head(features, [empty])[0]
        reference_result = reference_model.roi_heads.mask_head(features, [empty.to("cpu")])[0]
    assert our_result.pred_masks.shape[0] == reference_result.pred_masks.shape[0] == 0


def test_training_losses_match_reference(models, monkeypatch):
    """The same proposals and points give the same coarse and point losses. The points are at
    pixel centres, where the reference's bilinear reading of the bit masks equals ours (the pixel
    that contains the point)."""
    reference_model, ours, our_cfg = models
    generator = torch.Generator().manual_seed(3)
    image_size = (96, 128)
    proposals = [foreground_proposals(image_size, 5, generator) for _ in range(2)]
    num_points = our_cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS
    point_coords = pixel_centre_points(proposals, num_points, generator)

    monkeypatch.setattr(
        reference_mask_head,
        "get_uncertain_point_coords_with_randomness",
        lambda *args, **kwargs: point_coords,
    )
    monkeypatch.setattr(ours.roi_heads.mask_head, "point_sampler", lambda *args: point_coords)
    features = ours.backbone(torch.rand(2, 3, *image_size))
    features = {name: features[name] for name in ("p2", "p3", "p4", "p5")}
    reference_model.roi_heads.mask_head.train()
    ours.roi_heads.mask_head.train()
    try:
        with EventStorage():
            expected = reference_model.roi_heads.mask_head(features, proposals)
            actual = ours.roi_heads.mask_head(features, proposals)
    finally:
        reference_model.roi_heads.mask_head.eval()
        ours.roi_heads.mask_head.eval()
    assert set(actual) == set(expected) == {"loss_mask", "loss_mask_point"}
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6)


def test_training_points_match_reference_sampler(models):
    """Our sampler on the ground-truth class's coarse logit draws the reference's points."""
    coarse = torch.randn(7, 5, 7, 7)
    gt_classes = torch.randint(0, 5, (7,))
    torch.manual_seed(5)
    expected = reference_mask_head.get_uncertain_point_coords_with_randomness(
        coarse,
        lambda logits: reference_mask_head.calculate_uncertainty(logits, gt_classes),
        196,
        3,
        0.75,
    )
    torch.manual_seed(5)
    actual = sample_uncertain_points(coarse[torch.arange(7), gt_classes].unsqueeze(1), 196, 3, 0.75)
    assert torch.equal(actual, expected)
