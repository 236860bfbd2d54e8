"""
pointrend_d2.predictor: one image at a time, pre-processed exactly like the test data loader, with
clear errors for arrays that are not 8-bit 3-channel images.
"""

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

from pointrend_d2.checkpoint import SafeCheckpointer
from pointrend_d2.predictor import Predictor
from tests.helpers import small_fpn_cfg


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    cfg = small_fpn_cfg(**{"INPUT.MIN_SIZE_TEST": 48, "INPUT.MAX_SIZE_TEST": 96})
    model = build_model(cfg)
    weights = tmp_path_factory.mktemp("weights")
    SafeCheckpointer(model, str(weights)).save("model")
    cfg.MODEL.WEIGHTS = str(weights / "model.pth")
    return Predictor(cfg)


def test_file_and_array_give_the_same_output_at_the_original_size(predictor, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "image.png")
    from_file = predictor(str(tmp_path / "image.png"))["sem_seg"]
    from_array = predictor(np.ascontiguousarray(rgb[:, :, ::-1]))["sem_seg"]  # INPUT.FORMAT BGR
    assert from_file.shape == (5, 30, 50)
    torch.testing.assert_close(from_file, from_array, rtol=0, atol=0)
    model_input = predictor.model_input(str(tmp_path / "image.png"))
    # Resized like the test loader: shortest edge 48 (capped by MAX_SIZE_TEST 96).
    assert model_input["image"].shape == (3, 48, 80)
    assert (model_input["height"], model_input["width"]) == (30, 50)


@pytest.mark.parametrize(
    "image,message",
    [
        (np.zeros((8, 8), np.uint8), r"shape \(8, 8\); expected \(H, W, 3\)"),
        (np.zeros((8, 8, 4), np.uint8), r"shape \(8, 8, 4\); expected \(H, W, 3\)"),
        (np.zeros((8, 8, 3), np.float32), r"dtype float32; expected uint8"),
    ],
)
def test_arrays_that_are_not_8_bit_colour_images_are_refused(predictor, image, message):
    with pytest.raises(ValueError, match=message):
        predictor(image)


def test_a_missing_image_file_is_named(predictor, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Image file .*missing.png does not exist"):
        predictor(str(tmp_path / "missing.png"))


def test_inference_without_weights_is_refused():
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty: evaluation and inference need"):
        Predictor(small_fpn_cfg())
