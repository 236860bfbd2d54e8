"""
Test-time pre-processing of one image for a model of either task, semantic or instance: the
image file read by pointrend_d2's one reader (:class:`pointrend_d2.data.image_io.ImageReader`)
and resized by detectron2's test augmentation, as the test data loaders do. The predictors
(:class:`pointrend_d2.predictor.Predictor`, ``ExportedPredictor``) use it.
"""

import copy

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import ImageReader

__all__ = ["InferenceMapper"]


class InferenceMapper:
    """
    Maps an image record (``file_name``; ``height`` and ``width`` optional) to the model's
    input: ``image`` (3, H', W') uint8 in ``image_format``, after the augmentations, with the
    image's ``height`` and ``width`` as displayed, at which the model's outputs come back.
    """

    @configurable
    def __init__(self, *, augmentations: list[T.Augmentation | T.Transform], image_format: str):
        """
        Args:
            augmentations: applied to the image, in order (``self.augmentations`` applies them
                to an image array too).
            image_format: an image format of :func:`detectron2.data.detection_utils.read_image`.
        """
        self.augmentations = T.AugmentationList(augmentations)
        self.image_reader = ImageReader(image_format)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        return {
            "augmentations": utils.build_augmentation(cfg, is_train=False),
            "image_format": cfg.INPUT.FORMAT,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        """
        A copy of the record with ``image``, ``height`` and ``width``.

        Raises:
            FileNotFoundError, ValueError: naming the file.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        aug_input = T.AugInput(self.image_reader.read_record(dataset_dict))
        self.augmentations(aug_input)
        dataset_dict["image"] = torch.as_tensor(
            np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))
        )
        return dataset_dict
