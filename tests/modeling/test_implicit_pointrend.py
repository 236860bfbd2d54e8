"""
Implicit PointRend (ImplicitPointRendInstanceMaskHead): parity with detectron2's reference
ImplicitPointRendMaskHead (detectron2.projects.point_rend, a test oracle only) — a checkpoint saved
from the reference model loads into ours with every tensor, inference gives the same boxes,
scores, classes and masks, the same proposals and points give the same training losses — for the
released config and its variants; the config's checks; and a training step and inference of the
shipped config shrunk for the CPU.
"""

import dataclasses

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.projects.point_rend import mask_head as reference_mask_head
from detectron2.projects.point_rend import point_features as reference_point_features
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from pointrend_d2.checkpoint import SafeCheckpointer
from pointrend_d2.config import setup_cfg
from pointrend_d2.modeling import implicit_mask_head
from pointrend_d2.modeling import implicit_point_head as our_point_head
from pointrend_d2.modeling import mask_head as our_mask_head
from pointrend_d2.modeling.implicit_mask_head import ImplicitPointRendInstanceMaskHead
from pointrend_d2.modeling.implicit_point_head import POSITIONAL_ENCODING_CHANNELS
from tests.helpers import (
    assert_inference_matches,
    assert_steps_differ_only_at_ties,
    config_path,
    foreground_proposals,
    pixel_centre_points,
    record_mask_logits,
    reference_instance_cfg,
    small_rcnn_cfg,
)

# What implicit_pointrend_R_50_FPN_1x_coco.yaml changes in pointrend_rcnn_R_50_FPN_1x_coco.yaml
# (test_config_is_pointrend_with_the_implicit_mask_head checks it), so that small_rcnn_cfg with
# these is the shipped config shrunk for the CPU.
IMPLICIT_OVERRIDES = {
    "MODEL.ROI_MASK_HEAD.NAME": "ImplicitPointRendInstanceMaskHead",
    "MODEL.POINT_HEAD.SUBDIVISION_STEPS": 3,
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": False,
}


def small_implicit_cfg(num_classes: int = 5, **overrides):
    return small_rcnn_cfg(num_classes, **{**IMPLICIT_OVERRIDES, **overrides})


def reference_implicit_cfg(our_cfg):
    """
    detectron2's reference Implicit PointRend config: reference_instance_cfg (its get_cfg,
    add_pointrend_config and Base-RCNN-FPN.yaml values, sizes from ``our_cfg``) with the values of
    projects/PointRend/configs/InstanceSegmentation/Base-Implicit-PointRend.yaml written out (its
    ROI heads are Base-RCNN-FPN.yaml's), then the implicit keys of ``our_cfg``.
    """
    cfg = reference_instance_cfg(our_cfg)
    cfg.merge_from_list(
        [
            "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
            "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", False,
            "MODEL.ROI_MASK_HEAD.NAME", "ImplicitPointRendMaskHead",
            "MODEL.POINT_HEAD.NAME", "ImplicitPointHead",
            "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 196,
            "MODEL.POINT_HEAD.SUBDIVISION_STEPS", 3,
            "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 784,
            "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK", our_cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK,
        ]
    )  # fmt: skip
    cfg.MODEL.IMPLICIT_POINTREND = our_cfg.MODEL.IMPLICIT_POINTREND.clone()
    return cfg


def _ordinary_scale_parameters(head, p2_rms: float, trunk_rms: float) -> None:
    """
    Give the reference parameter head's prediction (initial std 0.001, whose near-zero implicit
    functions would make a tolerance say little) parameters of ordinary scale: its bias a random
    MLP (weights of std fan_in**-0.5, the feature columns divided by the RMS ``p2_rms`` of the
    features they read, biases of std 0.5), its weight a per-instance variation of half that
    scale for inputs of RMS ``trunk_rms``.
    """
    point_head, prediction = head.point_head, head.parameter_head.prediction
    num_layers = len(point_head.num_weight_params)
    fan_ins = [point_head.in_channels] + [point_head.channels] * (num_layers - 1)
    stds = [fan_in**-0.5 for fan_in in fan_ins] + [0.5] * num_layers
    sizes = point_head.num_weight_params + point_head.num_bias_params
    trunk_norm = trunk_rms * prediction.weight.shape[1] ** 0.5
    with torch.no_grad():
        for bias, weight, std in zip(
            prediction.bias.split(sizes), prediction.weight.split(sizes), stds, strict=True
        ):
            bias.normal_(0, std)
            weight.normal_(0, 0.5 * std / trunk_norm)
        if point_head.image_feature_enabled:
            # The input layer's weight reads the positional encoding (if any), then the features.
            start = POSITIONAL_ENCODING_CHANNELS if point_head.positional_encoding_enabled else 0
            for part in (prediction.bias, prediction.weight):
                first_layer = part[: sizes[0]].view(point_head.channels, point_head.in_channels, -1)
                first_layer[:, start:] /= p2_rms


def _rms(x) -> float:
    return x.square().mean().sqrt().item()


def _prediction_input_rms(head, run) -> float:
    """The RMS of the input of ``head``'s parameter prediction layer while ``run()`` runs."""
    inputs = []
    prediction = head.parameter_head.prediction
    hook = prediction.register_forward_hook(lambda module, x, y: inputs.append(x[0]))
    try:
        with torch.no_grad():
            run()
    finally:
        hook.remove()
    return _rms(torch.cat(inputs))


def _random_image(height: int, width: int) -> list[dict]:
    torch.manual_seed(1)
    return [{"image": torch.rand(3, height, width) * 255, "height": height, "width": width}]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(reference, ours): ours loaded from a checkpoint that the reference saved."""
    torch.manual_seed(0)
    reference_model = build_model(reference_implicit_cfg(small_implicit_cfg())).eval()
    # The scales of this test's image: its p2, and the input of the parameter head's prediction.
    image = _random_image(150, 203)
    reference_head = reference_model.roi_heads.mask_head
    trunk_rms = _prediction_input_rms(reference_head, lambda: reference_model(image))
    with torch.no_grad():
        p2 = reference_model.backbone(reference_model.preprocess_image(image).tensor)["p2"]
    _ordinary_scale_parameters(reference_head, _rms(p2), trunk_rms)
    save_dir = tmp_path_factory.mktemp("reference_implicit_checkpoint")
    DetectionCheckpointer(reference_model, save_dir=str(save_dir)).save("model_final")
    ours = build_model(small_implicit_cfg()).eval()
    # SafeCheckpointer is DetectionCheckpointer loading strictly: every tensor, no shape skipped.
    SafeCheckpointer(ours).load(str(save_dir / "model_final.pth"))
    ours_state, reference_state = ours.state_dict(), reference_model.state_dict()
    assert ours_state.keys() == reference_state.keys()
    for key in ours_state:
        assert torch.equal(ours_state[key], reference_state[key]), key
    return reference_model, ours


def test_checkpoint_holds_the_parameter_head_and_the_positional_encoding(models):
    _, ours = models
    head_names = set(ours.roi_heads.mask_head.state_dict())
    assert head_names == {
        # CONV_DIM narrower than the FPN's channels adds the channel-reducing conv.
        *(f"parameter_head.{layer}.{kind}" for layer in (
            "reduce_channel_dim_conv", "reduce_spatial_dim_conv", "fc1", "fc2", "prediction"
        ) for kind in ("weight", "bias")),
        "point_head.positional_encoding_gaussian_matrix",
    }  # fmt: skip
    # (32 features + 256 encoding) -> 32 -> 32 -> 32 -> 5 classes, weights then biases.
    num_params = 288 * 32 + 2 * 32 * 32 + 32 * 5 + 3 * 32 + 5
    assert ours.roi_heads.mask_head.point_head.num_params == num_params
    assert ours.roi_heads.mask_head.parameter_head.prediction.out_features == num_params


def _reference_arithmetic(weight, bias, inputs):
    """The reference implicit head's arithmetic for ours: an einsum on the concatenated inputs,
    then the bias."""
    return torch.einsum("nck,ndc->ndk", torch.cat(inputs, dim=1), weight) + bias


def _select_by(monkeypatch, head, selection: str) -> None:
    settings = dataclasses.replace(head.point_settings, subdivision_selection=selection)
    monkeypatch.setattr(head, "point_settings", settings)


SIZES = pytest.mark.parametrize(
    "size", [(128, 160), (150, 203)], ids=["divisible", "not-divisible"]
)


@SIZES
def test_inference_matches_reference(models, monkeypatch, size):
    """
    With the reference's summation order in our implicit function and its selection (a dense
    top-k), every mask logit agrees with the reference's to float rounding, and so do the boxes,
    scores, classes and pasted masks. The rounding: ours evaluates the output layer's row of the
    predicted class only, the reference all K rows and then selects; another shape of matrix
    product can round a sum of 32 products differently in the last bits (2e-6 of their
    magnitudes), hence rtol 1e-5 and, for logits near 0, atol 1e-6.
    """
    reference_model, ours = models
    _select_by(monkeypatch, ours.roi_heads.mask_head, "topk")
    monkeypatch.setattr(our_point_head, "instance_linear", _reference_arithmetic)
    expected_logits = assert_inference_matches(
        monkeypatch, models, (reference_mask_head, our_mask_head), _random_image(*size)
    )
    # Logits of both signs in most boxes: the comparison sees masks, not empty boxes.
    mixed_signs = (expected_logits > 0).flatten(1).any(1) & (expected_logits < 0).flatten(1).any(1)
    assert mixed_signs.sum() > len(mixed_signs) // 2


# Rounding allowance between the two summation orders of the implicit function, relative to the
# largest logit: each of its 4 layers sums at most 288 products (and the bias) in float32, whose
# sums in two orders differ by at most n * eps = 289 * 1.2e-7 = 3.5e-5 of the sum of the products'
# magnitudes (Higham's bound), and through 4 layers 1.4e-4. That sum of magnitudes can exceed the
# largest logit where terms cancel; 1e-3 allows for 7x cancellation and stays far below the
# spread of the uncertainties.
ROUNDING_ALLOWANCE = 1e-3


# The reference's order with a top-k is test_inference_matches_reference.
@pytest.mark.parametrize(
    "selection,arithmetic", [("topk", "ours"), ("bounded", "ours"), ("bounded", "reference")]
)
def test_other_orders_and_selections_differ_only_at_ties(
    models, monkeypatch, selection, arithmetic
):
    """
    Our implicit function sums in another order than the reference's einsum on concatenated
    inputs, so their logits differ by rounding; the bounded selection finds the same cells as a
    top-k except among exactly equal uncertainties. Step by step against our head with the
    reference's order and selection (which equals the reference, above), the maps agree to
    rounding until a selection differs, and then only at near-ties of the N-th uncertainty; the
    pasted masks are the reference's.
    """
    reference_model, ours = models
    head = ours.roi_heads.mask_head
    inputs = _random_image(150, 203)
    if arithmetic == "reference":
        monkeypatch.setattr(our_point_head, "instance_linear", _reference_arithmetic)
    _select_by(monkeypatch, head, selection)
    with torch.no_grad():
        expected = reference_model(inputs)[0]["instances"]
        actual = ours(inputs)[0]["instances"]
        features = ours.backbone(ours.preprocess_image(inputs).tensor)
    assert torch.equal(actual.pred_masks, expected.pred_masks)

    boxes, classes = [actual.pred_boxes.tensor], actual.pred_classes
    our_steps, reference_steps = [], []
    with torch.no_grad():
        head.subdivision_inference(features, boxes, classes, on_step=our_steps.append)
        monkeypatch.setattr(our_point_head, "instance_linear", _reference_arithmetic)
        _select_by(monkeypatch, head, "topk")
        head.subdivision_inference(features, boxes, classes, on_step=reference_steps.append)
    assert len(our_steps) == 3
    assert_steps_differ_only_at_ties(our_steps, reference_steps, ROUNDING_ALLOWANCE)


def test_zero_detections_match_reference(models):
    """An image without detections: no masks, as the reference's."""
    reference_model, ours = models
    no_detections = [
        Instances((64, 64), pred_boxes=Boxes(torch.zeros(0, 4)), pred_classes=torch.zeros(0).long())
    ]
    features = {name: torch.randn(1, 32, 64 // stride, 64 // stride) for name, stride in (
        ("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32)
    )}  # fmt: skip
    with torch.no_grad():
        (ours_result,) = ours.roi_heads.mask_head(features, no_detections)
        (reference_result,) = reference_model.roi_heads.mask_head(features, no_detections)
    assert len(ours_result.pred_masks) == len(reference_result.pred_masks) == 0


def test_training_losses_match_reference(models, monkeypatch):
    """The same proposals and points give the same point loss and parameter regularizer."""
    reference_model, ours = models
    generator = torch.Generator().manual_seed(3)
    image_size = (96, 128)
    proposals = [foreground_proposals(image_size, 5, generator) for _ in range(2)]
    point_coords = pixel_centre_points(proposals, 196, generator)
    reference_head, our_head = reference_model.roi_heads.mask_head, ours.roi_heads.mask_head

    def reference_points(instances):
        boxes = Boxes.cat([x.proposal_boxes for x in instances]).tensor
        image_points = reference_point_features.get_point_coords_wrt_image(boxes, point_coords)
        return point_coords, reference_point_features.sample_point_labels(instances, image_points)

    monkeypatch.setattr(reference_head, "_uniform_sample_train_points", reference_points)
    monkeypatch.setattr(our_head, "point_sampler", lambda *args: point_coords)
    features = ours.backbone(torch.rand(2, 3, *image_size))
    features = {name: features[name] for name in ("p2", "p3", "p4", "p5")}
    reference_head.train()
    our_head.train()
    try:
        with EventStorage():
            expected = reference_head(features, proposals)
            actual = our_head(features, proposals)
    finally:
        reference_head.eval()
        our_head.eval()
    assert set(actual) == set(expected) == {"loss_l2", "loss_mask_point"}
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6)


def test_training_points_are_the_references_uniform_draws():
    """Ours draws the reference's training points from the same random state."""
    torch.manual_seed(5)
    expected = torch.rand(7, 196, 2)
    torch.manual_seed(5)
    assert torch.equal(
        implicit_mask_head.sample_uniform_points(7, 196, torch.device("cpu")), expected
    )


# The feature maps of R-50-FPN's p2-p5 shrunk: 32 channels at strides 4 to 32.
HEAD_INPUT_SHAPE = {
    name: ShapeSpec(channels=32, stride=stride)
    for name, stride in {"p2": 4, "p3": 8, "p4": 16, "p5": 32}.items()
}


@pytest.mark.parametrize(
    "image_features,positional_encoding,class_agnostic",
    [(True, False, False), (False, True, False), (True, True, True)],
    ids=["features-only", "encoding-only", "class-agnostic"],
)
def test_variants_match_reference_head(
    monkeypatch, image_features, positional_encoding, class_agnostic
):
    """Each input of the implicit function alone, and class-agnostic masks: the reference head's
    state loads strictly into ours, which with the reference's arithmetic and selection gives its
    mask logits (to the rounding of test_inference_matches_reference)."""
    our_cfg = small_implicit_cfg(
        **{
            "MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED": image_features,
            "MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED": positional_encoding,
            "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": class_agnostic,
            "MODEL.POINT_HEAD.SUBDIVISION_SELECTION": "topk",
        }
    )
    torch.manual_seed(0)
    reference_head = reference_mask_head.ImplicitPointRendMaskHead(
        reference_implicit_cfg(our_cfg), HEAD_INPUT_SHAPE
    ).eval()
    generator = torch.Generator().manual_seed(2)
    features = {
        name: torch.randn(1, 32, 96 // shape.stride, 128 // shape.stride, generator=generator)
        for name, shape in HEAD_INPUT_SHAPE.items()
    }
    proposals = foreground_proposals((96, 128), 5, generator)
    detections = Instances(
        (96, 128), pred_boxes=proposals.proposal_boxes, pred_classes=proposals.gt_classes
    )
    trunk_rms = _prediction_input_rms(
        reference_head, lambda: reference_head(features, [detections])
    )
    _ordinary_scale_parameters(reference_head, _rms(features["p2"]), trunk_rms)
    ours = ImplicitPointRendInstanceMaskHead(our_cfg, HEAD_INPUT_SHAPE).eval()
    ours.load_state_dict(reference_head.state_dict(), strict=True)
    monkeypatch.setattr(our_point_head, "instance_linear", _reference_arithmetic)
    reference_logits = record_mask_logits(monkeypatch, reference_mask_head)
    our_logits = record_mask_logits(monkeypatch, our_mask_head)
    with torch.no_grad():
        reference_head(features, [detections[:]])
        ours(features, [detections[:]])
    classes = (
        detections.pred_classes if not class_agnostic else torch.zeros_like(detections.pred_classes)
    )
    expected = reference_logits[0][torch.arange(len(classes)), classes].unsqueeze(1)
    assert our_logits[0].shape == expected.shape == (len(detections), 1, 224, 224)
    assert (expected > 0).any() and (expected < 0).any()
    torch.testing.assert_close(our_logits[0], expected, rtol=1e-5, atol=1e-6)


def test_config_is_pointrend_with_the_implicit_mask_head():
    """The shipped config is the PointRend R-50 1x config with IMPLICIT_OVERRIDES, so the tests'
    small_implicit_cfg is it shrunk."""
    implicit = setup_cfg(str(config_path("implicit_pointrend_R_50_FPN_1x_coco.yaml")))
    pointrend = setup_cfg(str(config_path("pointrend_rcnn_R_50_FPN_1x_coco.yaml")))
    for key, value in IMPLICIT_OVERRIDES.items():
        pointrend.merge_from_list([key, value])
    assert implicit == pointrend


def _training_image(generator) -> dict:
    """A 64x64 image with its ground-truth instances (those of :func:`foreground_proposals`)."""
    proposals = foreground_proposals((64, 64), 5, generator)
    instances = Instances(
        (64, 64),
        gt_boxes=proposals.gt_boxes,
        gt_classes=proposals.gt_classes,
        gt_masks=proposals.gt_masks,
    )
    return {"image": torch.rand(3, 64, 64, generator=generator) * 255, "instances": instances}


def test_training_step_and_inference_of_the_shrunk_config():
    """A training forward and backward (finite losses, gradients reaching the parameter head),
    then inference: masks from a 28x28 grid refined to 224x224, pasted into the image."""
    torch.manual_seed(0)
    cfg = small_implicit_cfg(
        **{
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 16,
            # A few detections of any score, so that the mask head runs on random weights.
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
            "TEST.DETECTIONS_PER_IMAGE": 3,
        }
    )
    model = build_model(cfg).train()
    batch = [_training_image(torch.Generator().manual_seed(4))]
    with EventStorage():
        losses = model(batch)
    assert {"loss_l2", "loss_mask_point"} <= set(losses)
    assert all(torch.isfinite(loss) for loss in losses.values()), losses
    sum(losses.values()).backward()
    gradient = model.roi_heads.mask_head.parameter_head.prediction.weight.grad
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0

    head = model.roi_heads.mask_head
    assert (head.initial_resolution, head.subdivision_steps) == (28, 3)
    model.eval()
    with torch.no_grad():
        (output,) = model([{"image": batch[0]["image"], "height": 64, "width": 64}])
    detections = output["instances"]
    assert len(detections) == 3
    assert detections.pred_masks.shape == (3, 64, 64)


def test_losses_are_float32_under_autocast():
    """Mixed precision (the CPU's bfloat16 autocast, as AMPTrainer's on a GPU): the implicit
    function runs in half precision, its losses in float32."""
    torch.manual_seed(0)
    model = build_model(small_implicit_cfg(**{"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 16})).train()
    batch = [_training_image(torch.Generator().manual_seed(4))]
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(batch)
    for name in ("loss_l2", "loss_mask_point"):
        assert losses[name].dtype == torch.float32 and torch.isfinite(losses[name]), name


@pytest.mark.parametrize(
    "num_points,steps,initial,side", [(784, 3, 28, 224), (600, 3, 24, 192), (784, 0, 28, 28)]
)
def test_initial_grid_is_the_square_root_of_the_points(num_points, steps, initial, side):
    """detectron2's initial grid (it requires a square count); a count between squares starts
    from the largest square grid it covers."""
    cfg = small_implicit_cfg(
        **{
            "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS": num_points,
            "MODEL.POINT_HEAD.SUBDIVISION_STEPS": steps,
        }
    )
    head = ImplicitPointRendInstanceMaskHead(cfg, HEAD_INPUT_SHAPE).eval()
    assert (head.initial_resolution, head.subdivision_steps) == (initial, steps)
    features = {
        name: torch.randn(1, 32, 64 // shape.stride, 64 // shape.stride)
        for name, shape in HEAD_INPUT_SHAPE.items()
    }
    boxes = [torch.tensor([[4.0, 4.0, 40.0, 30.0], [0.0, 10.0, 64.0, 64.0]])]
    with torch.no_grad():
        logits = head.subdivision_inference(features, boxes, torch.tensor([1, 4]))
    assert logits.shape == (2, 1, side, side)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER", -1.0,
         r"PARAMS_L2_REGULARIZER=-1.0: must be >= 0"),
        ("MODEL.POINT_HEAD.NUM_FC", 0,
         r"NUM_FC=0, FC_DIM=32: the implicit point head needs at least one hidden layer"),
        ("MODEL.POINT_HEAD.SUBDIVISION_STEPS", -1,
         r"SUBDIVISION_STEPS=-1: must be >= 0 for instance masks .*3 takes 28x28 to 224x224"),
        ("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", -1,
         r"TRAIN_NUM_POINTS=-1: must be > 0 for instance masks"),
        ("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV2",
         r"POOLER_TYPE='ROIAlignV2': ImplicitPointRendInstanceMaskHead pools its own region "
         r"features .* set POOLER_TYPE to ''"),
        ("MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 7, r"POOLER_RESOLUTION=7: must be even"),
        ("MODEL.ROI_MASK_HEAD.FC_DIM", 0, r"ROI_MASK_HEAD.FC_DIM=0: must be >= 1"),
        ("MODEL.ROI_MASK_HEAD.IN_FEATURES", ["p6"],
         r"ROI_MASK_HEAD.IN_FEATURES=\['p6'\]: \['p6'\] not among the maps"),
        ("MODEL.POINT_HEAD.IN_FEATURES", ["p6"], r"POINT_HEAD.IN_FEATURES=\['p6'\]: \['p6'\] not"),
        ("MODEL.POINT_HEAD.SUBDIVISION_SELECTION", "dense", r"SUBDIVISION_SELECTION='dense'"),
    ],
)  # fmt: skip
def test_bad_value_is_named_at_build_time(key, value, message):
    with pytest.raises(ValueError, match=message):
        ImplicitPointRendInstanceMaskHead(small_implicit_cfg(**{key: value}), HEAD_INPUT_SHAPE)


def test_implicit_function_without_inputs_is_refused():
    cfg = small_implicit_cfg(
        **{
            "MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED": False,
            "MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED": False,
        }
    )
    with pytest.raises(
        ValueError, match=r"IMAGE_FEATURE_ENABLED and POS_ENC_ENABLED are both False"
    ):
        ImplicitPointRendInstanceMaskHead(cfg, HEAD_INPUT_SHAPE)
