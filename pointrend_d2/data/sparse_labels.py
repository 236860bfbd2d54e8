"""
Sparse point labels for semantic segmentation: ordinary label PNGs in which only clicked pixels
carry a class, the ignore value everywhere else (``tools/make_point_labels.py`` samples them from
full labels). A folder dataset registered with ``sparse_labels`` (spec key ``sparse_labels:
true``, :mod:`pointrend_d2.data.folder`) marks its records with :data:`SPARSE_LABELS_KEY`, and
:class:`pointrend_d2.data.SemanticDatasetMapper` moves their labelled pixels with the image's
augmentations as points (:func:`transform_sparse_labels`) rather than resampling the label map:
a nearest-neighbour resize that shrinks the image would drop most single labelled pixels, and
one that enlarges it would make each a block.
"""

import numpy as np
from detectron2.data import transforms as T

__all__ = ["SPARSE_LABELS_KEY", "transform_sparse_labels"]

#: The record key (True) and metadata key of datasets whose label maps are sparse point labels.
SPARSE_LABELS_KEY = "sparse_labels"


def transform_sparse_labels(
    labels: np.ndarray,
    transforms: T.TransformList,
    image_shape: tuple[int, int],
    ignore_value: int,
) -> np.ndarray:
    """
    A sparse label map moved by ``transforms``: each labelled pixel's centre is transformed as a
    point and labels the pixel of the augmented image that contains it; points moved out of the
    image (a crop) are dropped, and where two land in one pixel (a shrinking resize) the later in
    row-major order is kept.

    Args:
        labels: (H, W) labels before the augmentations.
        transforms: the augmentations applied to the image.
        image_shape: (height, width) of the augmented image.
        ignore_value: the label of unlabelled pixels.

    Returns:
        (height, width) labels of ``labels``' dtype, ``ignore_value`` but at the moved points.
    """
    moved = np.full(image_shape, ignore_value, dtype=labels.dtype)
    rows, cols = np.nonzero(labels != ignore_value)
    if rows.size == 0:
        return moved
    centres = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)
    points = np.floor(transforms.apply_coords(centres)).astype(np.int64)
    height, width = image_shape
    inside = (
        (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    )
    moved[points[inside, 1], points[inside, 0]] = labels[rows[inside], cols[inside]]
    return moved
