"""
Point annotations of instances (PointSup): per object, its box and a few points marked inside (1)
or outside (0) it, in a COCO json annotation, as detectron2's PointSup reads them::

    {"id": 7, "image_id": 1, "category_id": 2, "iscrowd": 0, "bbox": [x, y, width, height],
     "point_coords": [[x1, y1], [x2, y2], ...], "point_labels": [1, 0, ...]}

``point_coords`` are in the image's continuous pixel coordinates, as boxes and polygon vertices
are: the pixel of row i, column j covers ``j <= x < j + 1``, ``i <= y < i + 1`` (so integer
coordinates name a pixel's top-left corner, half a pixel from its centre). A ``segmentation`` may
be kept beside the points; point supervision does not read it.

The COCO json checker (:mod:`pointrend_d2.data.coco_json`) checks each annotation's points with
:class:`PointAnnotationCheck`; :func:`point_instance_fields` moves them with the image's
augmentations into the ``gt_point_coords`` and ``gt_point_labels`` fields of detectron2's
``Instances`` (:class:`pointrend_d2.data.InstanceDatasetMapper`). The rules, for the json as a
whole:

* a point outside its image, or farther than the checker's box tolerance outside its box, a
  label other than 0 and 1, coordinates that are not ``[x, y]`` pairs, labels of another count:
  errors naming the annotation;
* a crowd region (``iscrowd`` 1) with points: an error, since detectron2 trains on no crowd
  region and would drop its points without a word;
* points on some objects and not on others (no ``point_coords`` key): an error naming the first
  without; an empty list is an object without points, trained on its box and class only (one
  warning counts them);
* every point of the json with the same label: an error (labels are inside/outside, not "is
  labelled"); one object's points all alike is normal (a small object, or points that all
  missed a thin one).
"""

import logging
import math

import numpy as np
import torch
from detectron2.data import transforms as T
from torch import Tensor

__all__ = [
    "IGNORED_POINT",
    "POINT_KEYS",
    "PointAnnotationCheck",
    "has_point_annotations",
    "is_finite_number",
    "point_instance_fields",
]

logger = logging.getLogger(__name__)

#: The annotation keys of a point annotation, which the COCO json loader carries into records.
POINT_KEYS = ("point_coords", "point_labels")
#: The label of a point that does not count (padding, or moved out of the image).
IGNORED_POINT = -1
# How many annotations a warning names.
_NAMED = 3


def has_point_annotations(annotations: list[dict]) -> bool:
    """Whether any of ``annotations`` (COCO json entries or dataset-record ones) has points."""
    return any("point_coords" in annotation for annotation in annotations)


def is_finite_number(value) -> bool:
    """Whether a json value is a finite number (not a bool, a string or NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class PointAnnotationCheck:
    """
    Checks the point annotations of one COCO json (see the module docstring): :meth:`check`
    each annotation after its box has been checked, then :meth:`finish`.
    """

    def __init__(self, json_file: str, box_tolerance: float):
        """
        Args:
            json_file: the json, named by the errors.
            box_tolerance: how far (pixels) a point may lie outside its box.
        """
        self.json_file = json_file
        self.box_tolerance = box_tolerance
        self.with_points: list = []
        self.first_without_points: str | None = None
        self.without_points: list = []
        self.label_counts = [0, 0]

    def check(self, where: str, annotation: dict, height: int, width: int) -> None:
        """
        Checks one annotation whose ``bbox`` is valid.

        Args:
            where: how errors name the annotation.
            annotation: the json entry.
            height, width: its image's size.

        Raises:
            ValueError: naming the annotation and the point, for a bad point annotation.
        """
        present = [key for key in POINT_KEYS if key in annotation]
        if annotation.get("iscrowd", 0):
            if present:
                raise ValueError(
                    f"{where}: a crowd region ('iscrowd': 1) with {present}; detectron2 trains "
                    "on no crowd region, so its points would be dropped: remove them, or set "
                    "'iscrowd' to 0 if it is one object"
                )
            return
        if not present:
            self.first_without_points = self.first_without_points or where
            return
        if len(present) == 1:
            missing = next(key for key in POINT_KEYS if key not in present)
            raise ValueError(
                f"{where}: has {present[0]!r} but no {missing!r}; a point annotation needs "
                "both, one label (1 inside the object, 0 outside) per point"
            )
        coords, labels = annotation["point_coords"], annotation["point_labels"]
        self._check_lists(where, coords, labels)
        for index, ((x, y), label) in enumerate(zip(coords, labels, strict=True)):
            self._check_point(where, index, x, y, annotation["bbox"], height, width)
            self.label_counts[int(label)] += 1
        self.with_points.append(where)
        if not coords:
            self.without_points.append(annotation["id"])

    def _check_lists(self, where: str, coords, labels) -> None:
        if not isinstance(coords, list) or not all(
            isinstance(point, list) and len(point) == 2 and all(map(is_finite_number, point))
            for point in coords
        ):
            flat = isinstance(coords, list) and all(map(is_finite_number, coords))
            hint = (
                ": a flat list; group it into pairs [[x1, y1], [x2, y2], ...]"
                if flat and coords
                else ""
            )
            raise ValueError(
                f"{where}: 'point_coords' must be a list of [x, y] pairs of finite numbers{hint}"
            )
        if not isinstance(labels, list) or len(labels) != len(coords):
            count = len(labels) if isinstance(labels, list) else type(labels).__name__
            raise ValueError(
                f"{where}: {len(coords)} point_coords but point_labels {count}; give one label "
                "per point (1 inside the object, 0 outside)"
            )
        invalid = [label for label in labels if not is_finite_number(label) or label not in (0, 1)]
        if invalid:
            hint = (
                "class ids? The class is the annotation's category_id"
                if all(is_finite_number(label) for label in invalid)
                else "numbers 0 or 1"
            )
            raise ValueError(
                f"{where}: point_labels {invalid[:5]} are not 0 or 1; a point's label is 1 inside "
                f"the object and 0 outside ({hint})"
            )

    def _check_point(
        self, where: str, index: int, x: float, y: float, bbox: list, height: int, width: int
    ) -> None:
        point = f"{where}: point {index} ({x:g}, {y:g})"
        if not (0 <= x <= width and 0 <= y <= height):
            hint = (
                "x and y swapped? Points are [x, y], x the column"
                if 0 <= y <= width and 0 <= x <= height
                else "does the annotation belong to another image?"
            )
            raise ValueError(f"{point} lies outside the {height}x{width} (HxW) image; {hint}")
        x0, y0, box_width, box_height = bbox
        tolerance = self.box_tolerance
        if not (
            x0 - tolerance <= x <= x0 + box_width + tolerance
            and y0 - tolerance <= y <= y0 + box_height + tolerance
        ):
            raise ValueError(
                f"{point} lies outside its 'bbox' {bbox} (x {x0:g}..{x0 + box_width:g}, y "
                f"{y0:g}..{y0 + box_height:g}); points are marked in the object's box, where its "
                "mask is predicted: does the point belong to another object, or is the bbox "
                "[x0, y0, x1, y1] rather than [x, y, width, height]?"
            )

    def finish(self) -> None:
        """
        The checks of the json as a whole; warns about objects without points.

        Raises:
            ValueError: some objects have points and others not, or every point has one label.
        """
        if not self.with_points:
            return
        if self.first_without_points is not None:
            raise ValueError(
                f"{self.first_without_points}: has no 'point_coords' while "
                f"{len(self.with_points)} annotation(s) of the json have points; give every "
                "object its points (an empty list for an object without any), or use a json "
                "with masks only"
            )
        outside, inside = self.label_counts
        if outside + inside and not (outside and inside):
            label, meaning = (1, "inside") if inside else (0, "outside")
            raise ValueError(
                f"COCO json {self.json_file}: all {outside + inside} points are labelled "
                f"{label} ({meaning} their object); point_labels are 1 inside the object and 0 "
                "outside, and a mask cannot be learnt from one kind: were the labels written as "
                "'is labelled' rather than inside/outside?"
            )
        if self.without_points:
            logger.warning(
                "COCO json %s: %d object(s) have no points (empty point_coords), ids %s%s; they "
                "train their box and class, not their mask",
                self.json_file,
                len(self.without_points),
                self.without_points[:_NAMED],
                " ..." if len(self.without_points) > _NAMED else "",
            )


def point_instance_fields(
    annotations: list[dict], transforms: T.TransformList, image_shape: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """
    The points of ``annotations`` (dataset-record entries with ``point_coords`` and
    ``point_labels``; one without is an object without points) in the augmented image, as
    ``Instances`` fields.

    Args:
        annotations: R annotations, in the order of the ``Instances``.
        transforms: the augmentations applied to the image.
        image_shape: (height, width) of the augmented image.

    Returns:
        gt_point_coords: (R, P, 2) float32 points ``[x, y]`` in the augmented image's pixel
            coordinates, P the most points of any annotation (0 without any).
        gt_point_labels: (R, P) int64 labels, 1 inside, 0 outside; -1 (ignored) for padding and
            for points the augmentations moved out of the image (a crop).
    """
    point_lists = [a.get("point_coords", []) for a in annotations]
    num_points = max(map(len, point_lists), default=0)
    coords = np.zeros((len(annotations), num_points, 2), np.float32)
    labels = np.full((len(annotations), num_points), IGNORED_POINT, np.int64)
    height, width = image_shape
    for index, (annotation, point_list) in enumerate(zip(annotations, point_lists, strict=True)):
        count = len(point_list)
        if count == 0:
            continue
        points = transforms.apply_coords(np.asarray(point_list, np.float64).reshape(count, 2))
        inside = (
            (points[:, 0] >= 0)
            & (points[:, 0] <= width)
            & (points[:, 1] >= 0)
            & (points[:, 1] <= height)
        )
        coords[index, :count] = points
        labels[index, :count] = np.where(inside, annotation["point_labels"], IGNORED_POINT)
    return torch.from_numpy(coords), torch.from_numpy(labels)
