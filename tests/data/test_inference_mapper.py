"""
The test-time pre-processing of the predictors, for models of either task: the checked reader
(EXIF orientation as detectron2 applies it, errors naming the file) and the test resize.
"""

import numpy as np
import pytest
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from pointrend_d2.data import InferenceMapper
from pointrend_d2.predictor import Predictor
from tests.helpers import small_fpn_cfg, small_rcnn_cfg, write_exif_image


@pytest.mark.parametrize("task_cfg", [small_fpn_cfg, small_rcnn_cfg], ids=["semantic", "instance"])
def test_predictor_input_is_the_photo_as_displayed(tmp_path, task_cfg):
    cfg = task_cfg(**{"INPUT.MIN_SIZE_TEST": 48, "INPUT.MAX_SIZE_TEST": 96})
    photo = write_exif_image(tmp_path / "photo.jpg", 6, (64, 96))  # displayed 96x64
    model_input = Predictor(cfg, model=torch.nn.Identity()).model_input(photo)
    assert (model_input["height"], model_input["width"]) == (96, 64)
    # detectron2's reader and test resize, the oracle.
    expected = utils.read_image(photo, format=cfg.INPUT.FORMAT)
    expected = T.ResizeShortestEdge(48, 96).get_transform(expected).apply_image(expected)
    np.testing.assert_array_equal(model_input["image"].permute(1, 2, 0).numpy(), expected)


def test_truncated_image_is_named(tmp_path):
    path = tmp_path / "cut.png"
    write_exif_image(path, None, (64, 80))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    mapper = InferenceMapper(augmentations=[], image_format="RGB")
    with pytest.raises(ValueError, match=r"Image file .*cut\.png is not a readable image"):
        mapper({"file_name": str(path)})
