"""
PhotometricDistortion (INPUT.COLOR_AUG_SSD) against detectron2's PointRend ColorAugSSDTransform
(detectron2.projects.point_rend.color_augmentation, a test oracle only), with the parameters that
the reference draws from Python's ``random`` replayed into our transform.

They differ by design in two ways, tested here: ours draws its parameters once, when the
augmentation makes the transform (numpy's RNG), so a transform applies the same distortion to
every image it is given, while the reference draws them each time it is applied (Python's
``random``); and ours converts to HSV and back once for saturation and hue together, and not at
all when neither changes anything, while the reference converts for each step it takes, even for
a hue shift of 0. Each conversion rounds the image, so the results then differ by that rounding.
"""

import random

import cv2
import numpy as np
import pytest
from detectron2.projects.point_rend.color_augmentation import ColorAugSSDTransform

from pointrend_d2.data.augmentation import PhotometricDistortionTransform

SEEDS = range(200)


def reference_draws(seed: int) -> tuple[dict, dict]:
    """
    The parameters that ColorAugSSDTransform.apply_image draws after ``random.seed(seed)``, in
    its order, as our transform's arguments; and which of its HSV steps ("saturation", "hue") it
    takes, each an HSV conversion and back.
    """
    rng = random.Random(seed)

    def half_the_time(draw, identity):
        return (True, draw()) if rng.randrange(2) else (False, identity)

    _, brightness = half_the_time(lambda: rng.uniform(-32, 32), 0.0)
    contrast_first = bool(rng.randrange(2))
    contrast = half_the_time(lambda: rng.uniform(0.5, 1.5), 1.0)[1] if contrast_first else None
    saturation_step, saturation = half_the_time(lambda: rng.uniform(0.5, 1.5), 1.0)
    hue_step, hue = half_the_time(lambda: rng.randint(-18, 18), 0)
    if not contrast_first:
        contrast = half_the_time(lambda: rng.uniform(0.5, 1.5), 1.0)[1]
    parameters = {
        "brightness_delta": brightness,
        "contrast": contrast,
        "saturation": saturation,
        "hue_delta": hue,
        "contrast_first": contrast_first,
    }
    return parameters, {"saturation": saturation_step, "hue": hue_step}


def converts_as_the_reference(seed: int) -> bool:
    """Whether both make the same HSV conversions for this seed: none, or one that changes
    something (ours skips one that would only round)."""
    parameters, steps = reference_draws(seed)
    if steps["saturation"] and steps["hue"]:
        return False
    return not steps["hue"] or parameters["hue_delta"] != 0


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """Random colours: every hue, saturation and value, with clipping at 0 and 255."""
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def both(image: np.ndarray, seed: int, image_format: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, ours) for the reference's draws after ``random.seed(seed)``."""
    parameters, _ = reference_draws(seed)
    random.seed(seed)
    expected = ColorAugSSDTransform(image_format).apply_image(image.copy())
    ours = PhotometricDistortionTransform(**parameters, image_format=image_format)
    return expected, ours.apply_image(image.copy())


@pytest.mark.parametrize("image_format", ["BGR", "RGB"])
def test_the_same_distortion_gives_the_same_image(image, image_format):
    """Brightness, contrast in either order, saturation or hue: every pixel equal."""
    seeds = [seed for seed in SEEDS if converts_as_the_reference(seed)]
    assert len(seeds) > 100  # every combination of the other steps occurs among them
    for seed in seeds:
        expected, actual = both(image, seed, image_format)
        assert np.array_equal(actual, expected), (seed, reference_draws(seed))


# An HSV conversion of an 8-bit image and back moves a channel by at most about 6 levels: OpenCV
# rounds the hue to 2 degrees (an error of at most 1 degree, which moves the middle channel by at
# most (max - min) / 60 <= 4.25 levels), and saturation and value to 1/255 (1 level more). A
# contrast step after it scales that by up to 1.5: 9 levels. Wrong parameters would move the mean
# by many levels; rounding moves it by less than 1.
MAX_ROUNDING = 9


@pytest.mark.parametrize("image_format", ["BGR", "RGB"])
def test_the_extra_hsv_conversions_of_the_reference_only_round(image, image_format):
    seeds = [seed for seed in SEEDS if not converts_as_the_reference(seed)]
    assert len(seeds) > 20
    for seed in seeds:
        expected, actual = both(image, seed, image_format)
        difference = np.abs(actual.astype(np.int32) - expected)
        assert difference.max() <= MAX_ROUNDING and difference.mean() < 1, seed


def test_a_hue_shift_of_0_is_one_round_trip_in_the_reference(image):
    """The difference is the HSV conversion itself: where the reference shifts the hue by 0 (and
    takes no other HSV or later contrast step), it is our image converted to HSV and back."""
    seeds = [
        seed
        for seed in range(2000)
        if reference_draws(seed)[1] == {"saturation": False, "hue": True}
        and reference_draws(seed)[0]["hue_delta"] == 0
        and reference_draws(seed)[0]["contrast_first"]
    ]
    assert seeds
    for seed in seeds:
        expected, actual = both(image, seed, "BGR")
        assert not np.array_equal(actual, expected)
        round_trip = cv2.cvtColor(cv2.cvtColor(actual, cv2.COLOR_BGR2HSV), cv2.COLOR_HSV2BGR)
        assert np.array_equal(round_trip, expected), seed


def test_ours_draws_once_per_transform_the_reference_each_time(image):
    random.seed(0)
    reference = ColorAugSSDTransform("BGR")
    assert not np.array_equal(reference.apply_image(image.copy()), reference.apply_image(image))
    ours = PhotometricDistortionTransform(10.0, 1.2, 0.8, 5, True, "BGR")
    assert np.array_equal(ours.apply_image(image.copy()), ours.apply_image(image.copy()))
