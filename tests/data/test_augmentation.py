"""SSD's colour distortion (INPUT.COLOR_AUG_SSD): deterministic transforms, labels untouched."""

import numpy as np
import pytest
from detectron2.data import transforms as T

from pointrend_d2.data.augmentation import (
    PhotometricDistortion,
    PhotometricDistortionTransform,
    build_semantic_train_augmentation,
)
from tests.helpers import small_fpn_cfg


def distort(image, **overrides):
    parameters = {
        "brightness_delta": 0.0,
        "contrast": 1.0,
        "saturation": 1.0,
        "hue_delta": 0,
        "contrast_first": True,
        **overrides,
    }
    return PhotometricDistortionTransform(**parameters, image_format="BGR").apply_image(image)


def test_each_distortion_does_what_it_says():
    image = np.random.default_rng(0).integers(40, 200, (6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(distort(image, brightness_delta=10.0), image + 10)
    np.testing.assert_array_equal(
        distort(image, contrast=1.5), np.clip(image * 1.5, 0, 255).astype(np.uint8)
    )
    # A grey image has no saturation and no hue to change.
    grey = np.full((4, 4, 3), 128, np.uint8)
    np.testing.assert_array_equal(distort(grey, saturation=1.5, hue_delta=18), grey)
    saturated = distort(image, saturation=1.5)
    spread = lambda x: (x.max(axis=2).astype(int) - x.min(axis=2)).mean()  # noqa: E731
    assert spread(saturated) > spread(image)
    # Brightness clips at 255 rather than wrapping around.
    assert distort(np.full((1, 1, 3), 250, np.uint8), brightness_delta=32.0).max() == 255


def test_rgb_images_get_the_same_distortion_in_their_channel_order():
    bgr = np.random.default_rng(1).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    parameters = {
        "brightness_delta": 5.0,
        "contrast": 0.8,
        "saturation": 1.3,
        "hue_delta": 7,
        "contrast_first": False,
    }
    from_bgr = PhotometricDistortionTransform(**parameters, image_format="BGR").apply_image(bgr)
    from_rgb = PhotometricDistortionTransform(**parameters, image_format="RGB").apply_image(
        np.ascontiguousarray(bgr[:, :, ::-1])
    )
    np.testing.assert_array_equal(from_rgb, from_bgr[:, :, ::-1])


def test_augmentation_draws_fixed_parameters_and_keeps_labels():
    np.random.seed(0)
    image = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    labels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    aug_input = T.AugInput(image.copy(), sem_seg=labels.copy())
    transform = PhotometricDistortion("BGR")(aug_input)
    np.testing.assert_array_equal(aug_input.sem_seg, labels)
    # The same transform gives the same image again: no randomness left in it.
    np.testing.assert_array_equal(transform.apply_image(image), aug_input.image)
    drawn = [PhotometricDistortion("BGR").get_transform(image) for _ in range(200)]
    assert 0.3 < np.mean([t.brightness_delta != 0 for t in drawn]) < 0.7
    assert all(-18 <= t.hue_delta <= 18 and 0.5 <= t.saturation <= 1.5 for t in drawn)


def test_color_aug_ssd_key_places_it_after_the_crop_and_before_the_flip():
    cfg = small_fpn_cfg(**{"INPUT.COLOR_AUG_SSD": True, "INPUT.CROP.ENABLED": True})
    kinds = [type(a).__name__ for a in build_semantic_train_augmentation(cfg)]
    assert kinds == [
        "ResizeShortestEdge",
        "RandomCrop_CategoryAreaConstraint",
        "PhotometricDistortion",
        "RandomFlip",
    ]
    cfg.INPUT.COLOR_AUG_SSD = False
    assert "PhotometricDistortion" not in [
        type(a).__name__ for a in build_semantic_train_augmentation(cfg)
    ]
    with pytest.raises(ValueError, match="INPUT.FORMAT='L'"):
        PhotometricDistortion("L")
