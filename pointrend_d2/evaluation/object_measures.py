"""
The size and the width of a ground-truth object, and the bins that break results down by them.

Both are measured on the object's binary mask at the ground truth's resolution (the evaluated
image), in pixels:

* **size**: the area, the object's pixel count. Bins as COCO's: small (area < 32^2), medium
  (32^2 <= area < 96^2), large (area >= 96^2).
* **width**: twice the largest distance from a point of the object to the nearest point outside
  it, with the points taken at the centres of a half-pixel grid (the mask upsampled 2x, nearest)
  and everything beyond the image border counting as outside. It is the diameter of the largest
  disc that fits in the object, measured so that an axis-aligned strip n pixels wide has width
  exactly n (a 1 px line 1, a 2 px line 2) and a digital disc of diameter D a width between
  D - 2.5 and D. Bins: <= 2 px, (2, 4] px, (4, 8] px, > 8 px.

Why the largest disc: PointRend's coarse map samples the image every ``stride`` pixels (4 for
SemanticFPN, 8 or 16 for DeepLab, a box / 7 for instance masks). An object whose widest part is
narrower than that can fall between the samples everywhere, so the coarse map may never see it
and no subdivision step is drawn to it; an object with one wide part is seen at least there. The
width is the object's widest part, not its typical width: a thin wire that touches a blob of its
class (one connected component in a semantic label map) counts as wide.
"""

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["BINNINGS", "SIZE_BINNING", "WIDTH_BINNING", "Binning", "object_area", "object_width"]


def object_area(mask: np.ndarray) -> int:
    """The pixel count of a binary mask (nonzero = object)."""
    return int(np.count_nonzero(mask))


def object_width(mask: np.ndarray) -> float:
    """
    The width of the object of a binary mask (see the module docstring): the largest Euclidean
    distance transform of the mask upsampled 2x (nearest), padded with background, in half-pixel
    units, which is twice the largest distance in pixels. Exact below about 1500 px (the square
    root of a whole number of squared half-pixels).

    Args:
        mask: (H, W) bool or integer mask (nonzero = object).

    Returns:
        The width in pixels; 0 for an empty mask.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0.0
    # Only the object's bounding box matters: a one-pixel background ring around it is as near to
    # every object pixel as the nearest background pixel (or image border) of the whole image.
    crop = (mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] != 0).astype(np.uint8)
    padded = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    upsampled = cv2.resize(
        padded, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST_EXACT
    )  # each pixel becomes a 2x2 block
    distance = cv2.distanceTransform(upsampled, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # Exact up to float32 rounding (7.0000005 for 7): the squared distance between two grid
    # points is a whole number, so round it to that, and a width on a bin limit falls in its bin.
    return math.sqrt(round(float(distance.max()) ** 2))


@dataclass(frozen=True)
class Binning:
    """
    Bins of one measure of an object.

    Attributes:
        name: the measure's name ("size", "width").
        labels: one label per bin, in increasing order of the measure.
        limits: the boundaries between consecutive bins (one fewer than ``labels``).
        upper_inclusive: whether a value equal to a limit falls in the bin below it (width:
            "<= 2 px") or above it (size: "area < 32^2").
        measure: the measure of an object's (H, W) binary mask.
    """

    name: str
    labels: tuple[str, ...]
    limits: tuple[float, ...]
    upper_inclusive: bool
    measure: Callable[[np.ndarray], float]

    def __post_init__(self):
        if len(self.limits) != len(self.labels) - 1 or list(self.limits) != sorted(self.limits):
            raise ValueError(
                f"Binning {self.name!r}: need {len(self.labels) - 1} increasing limits for the "
                f"bins {self.labels}, got {self.limits}"
            )

    def index(self, value: float) -> int:
        """The index of the bin of ``value``."""
        find = bisect.bisect_left if self.upper_inclusive else bisect.bisect_right
        return find(self.limits, value)

    def bin_of(self, mask: np.ndarray) -> int:
        """The index of the bin of the object of a binary mask."""
        return self.index(self.measure(mask))


SIZE_BINNING = Binning(
    name="size",
    labels=("small", "medium", "large"),
    limits=(32**2, 96**2),
    upper_inclusive=False,
    measure=object_area,
)
WIDTH_BINNING = Binning(
    name="width",
    labels=("width<=2px", "width2-4px", "width4-8px", "width>8px"),
    limits=(2, 4, 8),
    upper_inclusive=True,
    measure=object_width,
)
#: The breakdowns every size-and-thinness evaluation reports, in this order.
BINNINGS = (SIZE_BINNING, WIDTH_BINNING)
