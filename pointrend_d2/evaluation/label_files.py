"""Ground-truth label files read into numpy arrays, under numpy 1 and 2 alike."""

import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["read_label_map"]


def read_label_map(file_name: str, dtype=None) -> np.ndarray:
    """
    The labels of an image file as a new, writable array, read as detectron2's
    ``load_image_into_numpy_array`` reads them (PathManager and PIL, no EXIF transpose), which
    detectron2's evaluators call with ``dtype=int``. detectron2's passes ``copy=False`` to
    ``np.array``, which numpy 2 refuses whenever the dtype conversion needs a copy ("Unable to
    avoid copy while creating an array as requested"); a copy costs nothing next to evaluation.

    Args:
        file_name: path (or PathManager URL) of the label image.
        dtype: dtype of the result (default: the image's own).
    """
    with PathManager.open(file_name, "rb") as f:
        return np.array(Image.open(f), dtype=dtype)
