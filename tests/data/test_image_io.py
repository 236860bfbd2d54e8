"""
The one image reader: EXIF orientation applied as detectron2's read_image applies it, sizes read
from headers as displayed, and size errors that say which orientation each file has.
"""

import numpy as np
import pytest
from detectron2.data import detection_utils as utils
from PIL import Image

from pointrend_d2.data.image_io import (
    ImageReader,
    label_size_error,
    read_image_file,
    read_image_geometry,
)
from tests.helpers import write_exif_image

# Stored 64x96 (HxW): orientations 5-8 display it 96x64.
STORED_HEIGHT, STORED_WIDTH = 64, 96


def save_with_orientation(path, orientation: int | None) -> str:
    return write_exif_image(path, orientation, (STORED_HEIGHT, STORED_WIDTH))


@pytest.mark.parametrize("extension", [".png", ".jpg"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_detectron2s_and_the_header_knows_it(tmp_path, orientation, extension):
    path = save_with_orientation(tmp_path / f"photo{extension}", orientation)
    expected = utils.read_image(path, format="BGR")  # detectron2's reader, the oracle
    np.testing.assert_array_equal(ImageReader("BGR")(path), expected)
    assert np.asarray(read_image_file(path)).shape == expected.shape
    geometry = read_image_geometry(path)
    assert geometry.size == expected.shape[:2]
    assert geometry.stored_size == (STORED_HEIGHT, STORED_WIDTH)
    assert geometry.orientation == orientation


def test_no_or_invalid_orientation_is_none(tmp_path):
    for orientation in (None, 0, 9):
        path = save_with_orientation(tmp_path / f"photo_{orientation}.png", orientation)
        geometry = read_image_geometry(path)
        assert geometry.orientation == 1 and geometry.size == (STORED_HEIGHT, STORED_WIDTH)
        assert geometry.describe() == "64x96 (HxW)"
        assert ImageReader("RGB")(path).shape == (STORED_HEIGHT, STORED_WIDTH, 3)


def test_describe_says_how_it_is_stored_and_shown(tmp_path):
    rotated = read_image_geometry(save_with_orientation(tmp_path / "rotated.jpg", 6))
    assert rotated.describe() == (
        "96x64 (HxW) as displayed (stored 64x96 with EXIF orientation 6: shown rotated 90° "
        "clockwise)"
    )
    mirrored = read_image_geometry(save_with_orientation(tmp_path / "mirrored.jpg", 2))
    assert mirrored.describe() == "64x96 (HxW) (EXIF orientation 2: shown mirrored left-right)"


def label(path, size) -> str:
    Image.new("L", size[::-1]).save(path)
    return str(path)


def test_label_size_errors_say_each_files_orientation(tmp_path):
    image = read_image_geometry(save_with_orientation(tmp_path / "photo.jpg", 6))
    as_stored = read_image_geometry(label(tmp_path / "stored.png", (64, 96)), "Label")
    message = str(label_size_error(as_stored, image))
    assert message.startswith(f"Label file {as_stored.file_name} is 64x96 (HxW) but its image ")
    assert "the label fits the image as stored" in message
    assert "stored 64x96 with EXIF orientation 6" in message
    assert "save the image without its EXIF orientation tag" in message

    neither = read_image_geometry(label(tmp_path / "neither.png", (50, 50)), "Label")
    message = str(label_size_error(neither, image))
    assert "is 50x50 (HxW) but its image" in message
    assert "96x64 (HxW) as displayed (stored 64x96 with EXIF orientation 6" in message
    assert "they differ in either orientation" in message
