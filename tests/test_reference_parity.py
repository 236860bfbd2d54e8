"""
Parity with detectron2's reference implementation (detectron2.projects.point_rend), used only
as a test oracle: same weights in, same outputs out.
"""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from pointrend_d2 import point_features
from tests.helpers import reference_cfg, small_fpn_cfg

reference = pytest.importorskip("detectron2.projects.point_rend")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(reference, ours): ours loaded from a checkpoint that the reference model saved."""
    torch.manual_seed(0)
    cfg = small_fpn_cfg(num_classes=6)
    reference_model = build_model(reference_cfg(cfg)).eval()
    save_dir = tmp_path_factory.mktemp("reference_checkpoint")
    DetectionCheckpointer(reference_model, save_dir=str(save_dir)).save("reference_final")
    ours = build_model(cfg).eval()
    checkpointer = DetectionCheckpointer(ours)
    result = checkpointer.load(str(save_dir / "reference_final.pth"))
    assert result is not None
    ours_state, ref_state = ours.state_dict(), reference_model.state_dict()
    assert ours_state.keys() == ref_state.keys()
    for key in ours_state:
        assert torch.equal(ours_state[key], ref_state[key]), key
    return reference_model, ours


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
