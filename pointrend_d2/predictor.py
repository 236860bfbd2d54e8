"""
Inference on single images, the one pre-processing path of every tool: an image file or array is
read and resized exactly as the test data loaders do (:class:`InferenceMapper`: the checked
reader, EXIF orientation applied, and the config's test augmentation), and the model is built
and loaded weights-only (:func:`pointrend_d2.checkpoint.load_weights_for_inference`). Instance
models' masks come back unpasted, as :class:`~pointrend_d2.modeling.paste.BoxMasks` pasted when
read, so that memory does not grow with detections times image size.

Images are (H, W, 3) uint8 numpy arrays in the config's ``INPUT.FORMAT`` ("BGR" or "RGB").
"""

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling import GeneralizedRCNN, build_model
from torch import nn

from .checkpoint import load_weights_for_inference
from .data.inference_mapper import InferenceMapper
from .modeling.paste import postprocess_detections

__all__ = ["Predictor", "build_model_input", "check_image_array"]


def check_image_array(image: np.ndarray, name: str = "image") -> None:
    """
    Raise a ValueError naming ``name`` unless ``image`` is an (H, W, 3) uint8 array.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected an (H, W, 3) uint8 numpy array, got {type(image)}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name} has shape {image.shape}; expected (H, W, 3): one colour image, 3 channels "
            "(convert grayscale or RGBA images to 3 channels first)"
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} has dtype {image.dtype}; expected uint8 values 0-255 (scale other ranges to "
            "0-255 and convert to uint8 first)"
        )


def build_model_input(mapper: InferenceMapper, image: str | np.ndarray) -> dict:
    """
    The model's input for one image, pre-processed like the test data loader's.

    Args:
        mapper: the test-time pre-processing (``InferenceMapper(cfg)``).
        image: an image file (any format the mapper reads, errors naming the file) or an
            (H, W, 3) uint8 array in the mapper's image format.

    Returns:
        ``{"image": (3, H', W') uint8 tensor resized for the model, "height": H, "width": W}``:
        the model's outputs come back at the original size H x W.
    """
    if isinstance(image, str):
        return mapper({"file_name": image})
    check_image_array(image)
    aug_input = T.AugInput(image)
    mapper.augmentations(aug_input)
    return {
        "image": torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))),
        "height": image.shape[0],
        "width": image.shape[1],
    }


class Predictor:
    """
    detectron2's ``DefaultPredictor`` for pointrend_d2: builds the model of ``cfg``, loads
    ``MODEL.WEIGHTS`` (strictly, weights-only: :func:`load_weights_for_inference`) and runs it on
    one image at a time.

        predictor = Predictor(cfg)
        sem_seg = predictor("image.png")["sem_seg"]  # (K, H, W) logits at the image's size
        instances = predictor("image.png")["instances"]  # instance models: detections
        mask = instances.pred_masks[0]  # (H, W) bool, pasted when read (BoxMasks)
    """

    def __init__(self, cfg: CfgNode, model: nn.Module | None = None):
        """
        Args:
            cfg: the model's config (``MODEL.WEIGHTS`` is loaded unless ``model`` is given).
            model: an already built and loaded model to use instead.
        """
        self.cfg = cfg.clone()
        if model is None:
            model = build_model(self.cfg)
            load_weights_for_inference(model, self.cfg)
        self.model = model.eval()
        self.mapper = InferenceMapper(self.cfg)

    def model_input(self, image: str | np.ndarray) -> dict:
        """See :func:`build_model_input`."""
        return build_model_input(self.mapper, image)

    @torch.no_grad()
    def __call__(self, image: str | np.ndarray) -> dict:
        """
        The model's output for one image file or (H, W, 3) uint8 array (``INPUT.FORMAT``); for a
        ``GeneralizedRCNN``, its ``instances`` with ``pred_masks`` as
        :class:`~pointrend_d2.modeling.paste.BoxMasks` (detectron2's masks, pasted when read).
        """
        model_input = self.model_input(image)
        if isinstance(self.model, GeneralizedRCNN):
            (detections,) = self.model.inference([model_input], do_postprocess=False)
            height, width = model_input["height"], model_input["width"]
            return {"instances": postprocess_detections(detections, height, width)}
        return self.model([model_input])[0]
