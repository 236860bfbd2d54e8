"""
Parity with detectron2's reference implementation (detectron2.projects.point_rend), used only
as a test oracle: the reference is built from detectron2's own settings and published semantic
configs (tests.helpers.reference_cfg), its checkpoint loads into our configs with every tensor
(SafeCheckpointer is strict), and the outputs are the same.
"""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.projects import point_rend as reference
from detectron2.utils.events import EventStorage

from pointrend_d2.checkpoint import CheckpointMismatchError, SafeCheckpointer
from pointrend_d2.config import setup_cfg
from pointrend_d2.modeling import point_features
from tests.helpers import config_path, reference_cfg, small_fpn_cfg


def save_reference(reference_model, save_dir) -> str:
    """Save ``reference_model`` as detectron2's training does; return the file."""
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
    cityscapes_reference,
):
    reference_model, checkpoint = cityscapes_reference
    ours = load_ours(shrunk_cityscapes_cfg(), checkpoint, reference_model)
    image = torch.randint(0, 256, (3, 128, 256)).float()
    with torch.no_grad():
        expected = reference_model([{"image": image}])[0]["sem_seg"]
        actual = ours([{"image": image}])[0]["sem_seg"]
    assert actual.shape == (19, 128, 256)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


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
def test_inference_matches_reference(models, height, width):
    reference_model, ours = models
    image = torch.randint(0, 256, (3, height, width)).float()
    with torch.no_grad():
        expected = reference_model([{"image": image}])[0]["sem_seg"]
        actual = ours([{"image": image}])[0]["sem_seg"]
    assert actual.shape == (6, height, width)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert torch.equal(actual.argmax(0), expected.argmax(0))


def test_training_losses_match_reference(models):
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
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-6, atol=1e-6)


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
