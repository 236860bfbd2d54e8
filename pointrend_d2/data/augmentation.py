"""Training augmentations for semantic segmentation."""

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import transforms as T

__all__ = [
    "PhotometricDistortion",
    "PhotometricDistortionTransform",
    "build_semantic_train_augmentation",
]


class PhotometricDistortionTransform(T.Transform):
    """
    SSD's colour distortion with fixed parameters: add ``brightness_delta`` to every channel, then
    scale by ``contrast`` either first or last (``contrast_first``), scale the HSV saturation by
    ``saturation`` and shift the hue by ``hue_delta`` (OpenCV's 0-180 hue scale). Every step is
    clipped to 0-255. Labels and geometry are unchanged.
    """

    def __init__(
        self,
        brightness_delta: float,
        contrast: float,
        saturation: float,
        hue_delta: int,
        contrast_first: bool,
        image_format: str,
    ):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 image in ``image_format`` ("BGR" or "RGB") -> the distorted image."""
        bgr = img if self.image_format == "BGR" else img[:, :, ::-1]
        bgr = _scale_and_shift(bgr, 1.0, self.brightness_delta)
        if self.contrast_first:
            bgr = _scale_and_shift(bgr, self.contrast, 0.0)
        # The HSV round trip rounds, so it is taken only when it changes something.
        if self.saturation != 1.0 or self.hue_delta != 0:
            hsv = cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2HSV)
            hsv[:, :, 1] = _scale_and_shift(hsv[:, :, 1], self.saturation, 0.0)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + self.hue_delta) % 180
            bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if not self.contrast_first:
            bgr = _scale_and_shift(bgr, self.contrast, 0.0)
        return bgr if self.image_format == "BGR" else np.ascontiguousarray(bgr[:, :, ::-1])

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


def _scale_and_shift(values: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """``values * scale + shift`` clipped to 0-255, as uint8."""
    return np.clip(values.astype(np.float32) * scale + shift, 0, 255).astype(np.uint8)


class PhotometricDistortion(T.Augmentation):
    """
    SSD's colour augmentation (detectron2's INPUT.COLOR_AUG_SSD): each of brightness (±32),
    contrast (x0.5-1.5), saturation (x0.5-1.5) and hue (±18 of 180) is distorted with probability
    1/2; contrast comes before or after the HSV steps with probability 1/2. The parameters are
    drawn here, so the returned transform is deterministic.
    """

    def __init__(self, image_format: str = "BGR"):
        super().__init__()
        if image_format not in ("BGR", "RGB"):
            raise ValueError(
                f"INPUT.FORMAT={image_format!r}: INPUT.COLOR_AUG_SSD needs 'BGR' or 'RGB' images"
            )
        self.image_format = image_format

    def get_transform(self, image: np.ndarray) -> PhotometricDistortionTransform:
        def half_the_time(value, identity):
            return value if np.random.rand() < 0.5 else identity

        return PhotometricDistortionTransform(
            brightness_delta=half_the_time(np.random.uniform(-32, 32), 0.0),
            contrast=half_the_time(np.random.uniform(0.5, 1.5), 1.0),
            saturation=half_the_time(np.random.uniform(0.5, 1.5), 1.0),
            hue_delta=half_the_time(int(np.random.randint(-18, 19)), 0),
            contrast_first=bool(np.random.rand() < 0.5),
            image_format=self.image_format,
        )


def build_semantic_train_augmentation(cfg: CfgNode) -> list[T.Augmentation]:
    """
    The usual semantic-segmentation training augmentations, in order: resize the shortest edge
    (INPUT.MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING); if INPUT.CROP.ENABLED, a
    random crop (CROP.TYPE, CROP.SIZE) retried until no class covers more than
    CROP.SINGLE_CATEGORY_MAX_AREA of it, ignore pixels not counted; if INPUT.COLOR_AUG_SSD, SSD's
    colour distortion (:class:`PhotometricDistortion`); a random flip (INPUT.RANDOM_FLIP). This is
    the order of detectron2's PointRend semantic training.
    """
    augs: list[T.Augmentation] = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(PhotometricDistortion(cfg.INPUT.FORMAT))
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    return augs
