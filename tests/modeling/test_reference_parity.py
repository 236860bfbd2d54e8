"""
Parity with detectron2's reference implementation (detectron2.projects.point_rend), used only
as a test oracle: the reference is built from detectron2's own settings and published semantic
configs (tests.helpers.reference_cfg), its checkpoint loads into our configs with every tensor
(SafeCheckpointer is strict), and the outputs are the same: bit for bit with the reference's
summation order in our point head, and to float rounding (apart from near-tied selections) with
ours.
"""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.projects import point_rend as reference
from detectron2.structures import ImageList
from detectron2.utils.events import EventStorage

from pointrend_d2.checkpoint import CheckpointMismatchError, SafeCheckpointer
from pointrend_d2.config import setup_cfg
from pointrend_d2.modeling import point_features
from pointrend_d2.modeling import point_head as our_point_head
from tests.helpers import config_path, reference_cfg, small_fpn_cfg


def save_reference(reference_model, save_dir) -> str:
    """
    Save ``reference_model`` as detectron2's training does, with a point-head predictor of
    ordinary scale; return the file. The initial std 0.001 makes the point head's logits near
    zero, and the tolerances below would then say little about PointRend's refinement.
    """
    predictor = reference_model.sem_seg_head.point_head.predictor
    with torch.no_grad():
        predictor.weight.normal_(0, predictor.weight[0].numel() ** -0.5)
    DetectionCheckpointer(reference_model, save_dir=str(save_dir)).save("model_final")
    return str(save_dir / "model_final.pth")


def load_ours(our_cfg, checkpoint: str, reference_model):
    """Our model of ``our_cfg`` loaded from the reference's ``checkpoint`` (strictly: every
    tensor, no shape skipped), holding the same tensors as ``reference_model``."""
    ours = build_model(our_cfg).eval()
    SafeCheckpointer(ours).load(checkpoint)
    ours_state, ref_state = ours.state_dict(), reference_model.state_dict()
    assert ours_state.keys() == ref_state.keys()
    for key in ours_state:
        assert torch.equal(ours_state[key], ref_state[key]), key
    return ours


def conv_on_concatenation(layer, features, extra_features, output_channels=None):
    """The reference point head's arithmetic for our point head (which sums the same products in
    another order): the 1x1 convolution on the concatenated inputs."""
    assert output_channels is None  # the semantic head predicts every class
    inputs = features if extra_features is None else torch.cat([features, extra_features], dim=1)
    return layer(inputs)


@pytest.fixture
def reference_summation(monkeypatch):
    """Our point head summing in the reference's order."""
    monkeypatch.setattr(our_point_head, "pointwise_linear", conv_on_concatenation)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(reference, ours): ours loaded from a checkpoint that the reference model saved."""
    torch.manual_seed(0)
    cfg = small_fpn_cfg(num_classes=6)
    reference_model = build_model(reference_cfg(cfg)).eval()
    checkpoint = save_reference(reference_model, tmp_path_factory.mktemp("reference_checkpoint"))
    return reference_model, load_ours(cfg, checkpoint, reference_model)


# detectron2's Cityscapes model shrunk for the CPU: a narrow R-18 FPN; every PointRend key as
# detectron2 publishes it.
CITYSCAPES_SHRINK = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "MODEL.FPN.OUT_CHANNELS", 64,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
]  # fmt: skip


def shrunk_cityscapes_cfg(*options):
    return setup_cfg(
        str(config_path("pointrend_semantic_R_50_FPN_1x_cityscapes.yaml")),
        [*CITYSCAPES_SHRINK, *options],
    )


@pytest.fixture(scope="module")
def cityscapes_reference(tmp_path_factory):
    """detectron2's Cityscapes PointRend (shrunk), and its saved checkpoint."""
    torch.manual_seed(0)
    cfg = reference_cfg(shrunk_cityscapes_cfg(), recipe="cityscapes")
    point_cfg = cfg.MODEL.POINT_HEAD
    # Nothing of the point head is shrunk: these are the published values.
    assert (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, point_cfg.NUM_CLASSES) == (19, 19)
    assert (point_cfg.FC_DIM, point_cfg.NUM_FC, point_cfg.COARSE_PRED_EACH_LAYER) == (256, 3, False)
    assert (point_cfg.TRAIN_NUM_POINTS, point_cfg.SUBDIVISION_NUM_POINTS) == (2048, 8192)
    reference_model = build_model(cfg).eval()
    return reference_model, save_reference(
        reference_model, tmp_path_factory.mktemp("cityscapes_reference")
    )


def test_detectron2_cityscapes_checkpoint_loads_whole_into_our_cityscapes_config(
    cityscapes_reference, reference_summation
):
    reference_model, checkpoint = cityscapes_reference
    ours = load_ours(shrunk_cityscapes_cfg(), checkpoint, reference_model)
    image = torch.randint(0, 256, (3, 128, 256)).float()
    with torch.no_grad():
        expected = reference_model([{"image": image}])[0]["sem_seg"]
        actual = ours([{"image": image}])[0]["sem_seg"]
    assert actual.shape == (19, 128, 256)
    assert torch.equal(actual, expected)


def test_coarse_logits_at_every_layer_cannot_load_detectron2s_cityscapes_checkpoint(
    cityscapes_reference,
):
    """The issue: with COARSE_PRED_EACH_LAYER True (our former semantic base), fc2, fc3 and the
    predictor have other shapes; detectron2 skipped them with warnings, ours names them."""
    _, checkpoint = cityscapes_reference
    ours = build_model(shrunk_cityscapes_cfg("MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER", True))
    with pytest.raises(CheckpointMismatchError) as error:
        SafeCheckpointer(ours).load(checkpoint)
    rows = [line.split("|")[1:3] for line in str(error.value).splitlines() if line.startswith("| ")]
    assert {name.strip(): why.strip() for name, why in rows[1:]} == {
        f"sem_seg_head.point_head.{layer}.weight": (
            f"shape ({out}, 256, 1) in the checkpoint, ({out}, 275, 1) in the model"
        )
        for layer, out in (("fc2", 256), ("fc3", 256), ("predictor", 19))
    }


@pytest.mark.parametrize("height,width", [(128, 192), (100, 150)])
def test_inference_matches_reference(models, reference_summation, height, width):
    """The same arithmetic on the same inputs: the same logits, whatever the CPU."""
    reference_model, ours = models
    image = torch.randint(0, 256, (3, height, width)).float()
    with torch.no_grad():
        expected = reference_model([{"image": image}])[0]["sem_seg"]
        actual = ours([{"image": image}])[0]["sem_seg"]
    assert actual.shape == (6, height, width)
    assert torch.equal(actual, expected)


def subdivision_steps(model, image) -> list:
    """The subdivision steps of ``model``'s inference on ``image`` (3, H, W)."""
    steps = []
    with torch.no_grad():
        normalized = (image - model.pixel_mean) / model.pixel_std
        padded = ImageList.from_tensors([normalized], model.backbone.size_divisibility).tensor
        features = model.backbone(padded)
        head = model.sem_seg_head
        coarse_logits = head.coarse_sem_seg_head.layers(features)
        head.subdivision_inference(features, coarse_logits, on_step=steps.append)
    return steps


# Rounding allowance between the two summation orders of the point MLP, relative to the largest
# logit: each of its 4 layers sums at most 38 products (32 p2 channels and 6 coarse logits),
# whose float32 sums differ by at most n * eps = 38 * 1.2e-7 = 4.6e-6 of the sum of the
# products' magnitudes (Higham's bound), and through 4 layers 1.8e-5. That sum of magnitudes can
# exceed the largest logit where terms cancel; 1e-4 allows for 5x cancellation.
ROUNDING_ALLOWANCE = 1e-4


@pytest.mark.parametrize("height,width", [(128, 192), (100, 150)])
def test_our_summation_order_changes_only_rounding_and_near_ties(
    models, monkeypatch, height, width
):
    """
    Our point MLP sums in another order than the reference's convolution, so the logits differ by
    rounding, and where two cells' uncertainties are within that rounding at the N-th place,
    another cell can be selected, after which the maps differ by more. Step by step against our
    head with the reference's order (which equals the reference, above): until a selection
    differs, the maps agree to rounding; at a step where one differs, every differing cell is
    within twice the measured rounding of the N-th uncertainty. How many cells differ, if any,
    depends on the CPU's kernels.
    """
    _, ours = models
    image = torch.randint(0, 256, (3, height, width)).float()
    our_steps = subdivision_steps(ours, image)
    monkeypatch.setattr(our_point_head, "pointwise_linear", conv_on_concatenation)
    reference_steps = subdivision_steps(ours, image)
    for our_step, reference_step in zip(our_steps, reference_steps, strict=True):
        scale = reference_step.upsampled.abs().max()
        rounding = (our_step.upsampled - reference_step.upsampled).abs().max()
        assert rounding <= ROUNDING_ALLOWANCE * scale, (rounding, scale)
        ours_set = set(our_step.point_indices[0].tolist())
        reference_set = set(reference_step.point_indices[0].tolist())
        if ours_set == reference_set:
            continue
        uncertainty = point_features.calculate_uncertainty(reference_step.upsampled).flatten()
        nth = uncertainty.topk(len(reference_set)).values[-1]
        cells = torch.tensor(sorted(ours_set ^ reference_set))
        assert ((uncertainty[cells] - nth).abs() <= 2 * rounding).all()
        return
    # No selection differed: the refined logits agree to rounding too, and they are PointRend's
    # work, not the coarse logits': the point head changed the selected cells.
    final, reference_final = our_steps[-1].refined, reference_steps[-1].refined
    difference = (final - reference_final).abs().max()
    assert difference <= ROUNDING_ALLOWANCE * reference_final.abs().max()
    refined_cells = reference_steps[-1].point_indices[0]
    change = (reference_final - reference_steps[-1].upsampled).flatten(2)[0][:, refined_cells]
    assert change.abs().max() > 1000 * difference


def test_training_losses_match_reference(models, reference_summation):
    reference_model, ours = models
    reference_model.train()
    ours.train()
    image = torch.randint(0, 256, (3, 96, 128)).float()
    labels = torch.randint(0, 6, (96, 128))
    labels[:20, :30] = 255
    batch = [{"image": image, "sem_seg": labels}]
    try:
        with EventStorage():
            # The same seed gives both the same random points: the samplers draw alike.
            torch.manual_seed(3)
            expected = reference_model(batch)
            torch.manual_seed(3)
            actual = ours(batch)
    finally:
        reference_model.eval()
        ours.eval()
    assert actual.keys() == expected.keys() == {"loss_sem_seg", "loss_sem_seg_point"}
    for key in actual:
        assert torch.equal(actual[key], expected[key]), key


def test_point_sample_matches_reference():
    features = torch.randn(2, 5, 13, 17)
    points = torch.rand(2, 40, 2)
    expected = reference.point_features.point_sample(features, points, align_corners=False)
    assert torch.equal(point_features.point_sample(features, points), expected)


def test_uncertainty_matches_reference():
    logits = torch.randn(2, 7, 9, 9)
    from detectron2.projects.point_rend.semantic_seg import calculate_uncertainty

    assert torch.equal(point_features.calculate_uncertainty(logits), calculate_uncertainty(logits))


@pytest.mark.parametrize("num_points,oversample,beta", [(100, 3, 0.75), (64, 2, 0.0), (30, 1, 1)])
def test_training_sampler_matches_reference(num_points, oversample, beta):
    from detectron2.projects.point_rend.semantic_seg import calculate_uncertainty

    logits = torch.randn(2, 4, 12, 10)
    torch.manual_seed(11)
    expected = reference.point_features.get_uncertain_point_coords_with_randomness(
        logits, calculate_uncertainty, num_points, oversample, beta
    )
    torch.manual_seed(11)
    actual = point_features.sample_uncertain_points(logits, num_points, oversample, beta)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("num_points", [1, 37, 10_000])
def test_grid_selection_matches_reference(num_points):
    uncertainty = torch.randn(2, 1, 21, 34)
    expected_indices, expected_coords = reference.point_features.get_uncertain_point_coords_on_grid(
        uncertainty, num_points
    )
    indices, coords = point_features.select_uncertain_grid_points(uncertainty, num_points)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(coords, expected_coords, rtol=0, atol=2e-7)
