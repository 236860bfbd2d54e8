"""
The one image reader of pointrend_d2: the image and label files of both tasks are read here by
the data loaders of training and test, the dataset checks, the predictors and the demo, so
every read error names the file, and every file is oriented by one rule.

Orientation: an image with an EXIF Orientation tag (phone photos) is used as displayed, the tag
applied exactly as detectron2's ``read_image`` applies it (``detection_utils``'s
``_apply_exif_orientation``: tag 0x0112, values 2-8; an unreadable EXIF block is no
orientation), to label files too. Sizes are compared after it: a dataset's ``height`` and
``width``, and a label's size, must be the image's as displayed. Errors say which orientation
each file has, and what to change when annotations were drawn on the image as stored.

Image modes: 8-bit RGB; other 8-bit modes are converted to RGB with a logged note, once per
mode and reader (grayscale and palette images: their colours; RGBA: the alpha channel is
dropped, not composited; CMYK, YCbCr: converted). Images of more than 8 bits per channel
(16-bit grayscale, 32-bit integer or float: PIL modes I;16, I, F) are refused: PIL would clip
them to 8 bits, not rescale them, and only the user knows their range. Float images are also
where NaN or inf could hide; no 8-bit image can hold one.
"""

import dataclasses
import logging

import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = [
    "EXIF_ORIENTATION_TAG",
    "ImageGeometry",
    "ImageReader",
    "exif_orientation",
    "label_size_error",
    "read_image_file",
    "read_image_geometry",
    "size_mismatch_hint",
]

logger = logging.getLogger(__name__)

EXIF_ORIENTATION_TAG = 0x0112
# How each orientation is displayed, as detectron2's _apply_exif_orientation transposes it.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_DISPLAYED = {
    2: "shown mirrored left-right",
    3: "shown rotated 180°",
    4: "shown mirrored top-bottom",
    5: "shown mirrored and rotated 90° counter-clockwise",
    6: "shown rotated 90° clockwise",
    7: "shown mirrored and rotated 90° clockwise",
    8: "shown rotated 90° counter-clockwise",
}
# PIL modes of more than 8 bits per channel, which PIL's convert("RGB") clips rather than scales.
_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# What PIL raises for a file that is not an image, or a truncated or corrupt one.
_CORRUPT_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def exif_orientation(image: Image.Image, *, exact: bool = True) -> int:
    """
    The EXIF orientation of an opened image as detectron2's ``read_image`` reads it: 2-8, or 1
    for none (no tag, another value, or EXIF that cannot be parsed).

    Args:
        exact: look wherever the file may keep EXIF. PIL finds it in the header of every format
            but PNG, whose eXIf chunk may follow the pixels: then PIL decodes the file to find
            it. False: what the header holds (where writers, PIL among them, put it).
    """
    try:
        exif = image.getexif() if exact else Image.Image.getexif(image)
    except Exception:  # detectron2 takes unparsable EXIF for none (its issue 1885)
        return 1
    orientation = exif.get(EXIF_ORIENTATION_TAG, 1)
    return orientation if orientation in _TRANSPOSE else 1


@dataclasses.dataclass(frozen=True)
class ImageGeometry:
    """An image file's size as displayed (EXIF orientation applied) and its orientation."""

    file_name: str
    height: int
    width: int
    orientation: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) as displayed: the size of the array the file is read into."""
        return self.height, self.width

    @property
    def stored_size(self) -> tuple[int, int]:
        """(height, width) of the pixels as stored in the file."""
        return (self.width, self.height) if self.orientation >= 5 else self.size

    def describe(self) -> str:
        """``"64x96 (HxW)"``, and the orientation if it has one."""
        size = f"{self.height}x{self.width} (HxW)"
        if self.orientation == 1:
            return size
        if self.orientation >= 5:
            stored_height, stored_width = self.stored_size
            return (
                f"{size} as displayed (stored {stored_height}x{stored_width} with EXIF "
                f"orientation {self.orientation}: {_DISPLAYED[self.orientation]})"
            )
        return f"{size} (EXIF orientation {self.orientation}: {_DISPLAYED[self.orientation]})"


def _open(file_name: str, kind: str):
    """``PathManager.open(file_name, "rb")``; FileNotFoundError naming the file."""
    try:
        return PathManager.open(file_name, "rb")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{kind} file {file_name} does not exist") from error


def _unreadable(file_name: str, kind: str, error: Exception) -> ValueError:
    return ValueError(f"{kind} file {file_name} is not a readable image: {error}")


def read_image_geometry(
    file_name: str, kind: str = "Image", *, exact: bool = False
) -> ImageGeometry:
    """
    The size and orientation of an image file, from its header: the pixels are not decoded,
    unless ``exact`` and the file is a PNG whose header holds no EXIF (see
    :func:`exif_orientation`). The dataset checks read sizes that disagree again, exactly,
    before they raise an error.

    Args:
        file_name: path (or detectron2 PathManager URL) of the file.
        kind: what the file is, for the error messages ("Image", "Label").
        exact: see :func:`exif_orientation`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an image.
    """
    with _open(file_name, kind) as f:
        try:
            with Image.open(f) as image:
                width, height = image.size
                orientation = exif_orientation(image, exact=exact)
        except _CORRUPT_IMAGE_ERRORS as error:
            raise _unreadable(file_name, kind, error) from error
    if orientation >= 5:
        height, width = width, height
    return ImageGeometry(file_name, height, width, orientation)


def read_image_file(file_name: str, kind: str = "Image") -> Image.Image:
    """
    An image file decoded completely (so that a truncated file fails here, named) and oriented
    as displayed (see the module docstring).

    Args:
        file_name: path (or detectron2 PathManager URL) of the file.
        kind: what the file is, for the error messages ("Image", "Label").

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded as an image.
    """
    with _open(file_name, kind) as f:
        try:
            image = Image.open(f)
            image.load()
        except _CORRUPT_IMAGE_ERRORS as error:
            raise _unreadable(file_name, kind, error) from error
    orientation = exif_orientation(image)
    return image if orientation == 1 else image.transpose(_TRANSPOSE[orientation])


def size_mismatch_hint(expected: tuple[int, int], image: ImageGeometry, source: str) -> str:
    """
    Advice for an image whose size is not the ``expected`` (height, width) that ``source`` (e.g.
    "the json") gives for it.
    """
    if image.orientation >= 5 and expected == image.stored_size:
        return (
            "that is its size as stored, but pointrend_d2 (as detectron2) uses the image as "
            "displayed, its EXIF orientation applied. If the annotations were drawn on the "
            "image as stored (a tool that ignores EXIF), save the image without its EXIF "
            f"orientation tag; if they were drawn as displayed, correct the size in {source}"
        )
    if expected == image.size[::-1]:
        return f"height and width swapped in {source}?"
    return f"was the image resized after {source} was written, or is it another image?"


def label_size_error(label: ImageGeometry, image: ImageGeometry) -> ValueError:
    """The error for a label whose size (as displayed) is not its image's (as displayed)."""
    message = f"Label file {label.file_name} is {label.describe()} but its image {image.file_name}"
    if image.orientation >= 5 and label.size == image.stored_size:
        return ValueError(
            f"{message} is {image.describe()}: the label fits the image as stored, but "
            "pointrend_d2 (as detectron2) uses the image as displayed, its EXIF orientation "
            "applied. Draw the label on the image as displayed (rotate it the same way), or "
            "save the image without its EXIF orientation tag"
        )
    if image.orientation == 1 and label.orientation == 1:
        return ValueError(f"{message} is {image.describe()}")
    return ValueError(
        f"{message} is {image.describe()}: they differ in either orientation; does the label "
        "belong to this image, or was one of them resized?"
    )


class ImageReader:
    """
    Reads image files as the model's input arrays: (H, W, C) uint8 in ``image_format``, oriented
    and converted as the module docstring says; each mode converted is noted once.
    """

    def __init__(self, image_format: str):
        """
        Args:
            image_format: a format of :func:`detectron2.data.detection_utils.read_image`
                ("BGR", "RGB", ...).
        """
        self.image_format = image_format
        self._converted_modes: set[str] = set()

    def __call__(self, file_name: str) -> np.ndarray:
        """The image of ``file_name``; FileNotFoundError or ValueError naming the file."""
        image = read_image_file(file_name, "Image")
        if image.mode in _HIGH_BIT_DEPTH_MODES:
            raise ValueError(
                f"Image file {file_name} has PIL mode {image.mode}, more than 8 bits per pixel; "
                "pointrend_d2 reads 8-bit images: convert it to 8-bit RGB, scaling its values to "
                "0-255 as its range requires"
            )
        if image.mode != "RGB" and image.mode not in self._converted_modes:
            self._converted_modes.add(image.mode)
            logger.info(
                f"Image file {file_name} has PIL mode {image.mode}: converted to RGB (alpha "
                f"dropped, if any); later {image.mode} images are converted without a note"
            )
        return utils.convert_PIL_to_numpy(image, self.image_format)

    def read_record(self, dataset_dict: dict) -> np.ndarray:
        """
        The image of a dataset record (``file_name``), checked against the record's ``height``
        and ``width``, which are set from the image where the record has none.

        Raises:
            detectron2's SizeMismatchError (a ValueError): the sizes differ; the message names
                the file and its orientation.
        """
        file_name = dataset_dict["file_name"]
        image = self(file_name)
        expected = (dataset_dict.get("height"), dataset_dict.get("width"))
        if None not in expected and expected != image.shape[:2]:
            geometry = read_image_geometry(file_name, exact=True)
            raise utils.SizeMismatchError(
                f"Image file {file_name} is {geometry.describe()} but its dataset record says "
                f"{expected[0]}x{expected[1]}; "
                f"{size_mismatch_hint(expected, geometry, 'the dataset (its json or loader)')}"
            )
        utils.check_image_size(dataset_dict, image)  # sets the missing height or width
        return image
