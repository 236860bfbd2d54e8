"""
Boundary IoU for semantic segmentation (Cheng et al., "Boundary IoU: Improving Object-Centric
Image Segmentation Evaluation", CVPR 2021), accumulated per class over a dataset.

Definition, for class c with ground-truth mask G_c and predicted mask P_c of one image:

* The inner boundary band of a mask M is ``M - erode(M, d)``: the pixels of M that have a pixel
  outside M within Chebyshev distance d (a (2d+1) x (2d+1) square, as the official code's d
  iterations of a 3x3 erosion). ``d = max(1, round(dilation_ratio * image diagonal))``.
* Image border: as in the official ``mask_to_boundary`` (boundary-iou-api), the mask is padded
  with zeros before the erosion, so everything outside the image counts as "not in M" and a mask
  cut by the image border has a band along the border.
* Pixels whose ground truth is the ignore label count in neither band (they are removed after the
  bands are computed, as they are from IoU); an ignore region is "not c" for the erosion of G_c,
  exactly as the official code sees the binary mask G_c.
* ``BIoU_c = |band(G_c) & band(P_c)| / |band(G_c) | band(P_c)|``, numerator and denominator summed
  over all images before dividing.

Exact single pass for all classes: pixel p (label c) is in band(M_c) iff the (2d+1)^2 window
around p holds a pixel of another label or reaches outside the image. The window is not constant
iff its maximum differs from its minimum, so the union of all classes' bands is one max filter,
one min filter and a border strip, and each band pixel belongs to its own label's band. This is
the per-class definition, not an approximation; the tests check it against a brute-force loop.
"""

import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, SemSegEvaluator
from detectron2.utils.comm import all_gather, is_main_process, synchronize
from detectron2.utils.file_io import PathManager

from .label_files import read_label_map

__all__ = [
    "BoundaryIoUEvaluator",
    "SemSegIoUEvaluator",
    "boundary_band",
    "boundary_distance",
    "boundary_iou_counts",
]

logger = logging.getLogger(__name__)


def boundary_distance(height: int, width: int, dilation_ratio: float) -> int:
    """The band width d in pixels: ``max(1, round(dilation_ratio * image diagonal))``."""
    return max(1, round(dilation_ratio * math.hypot(height, width)))


def boundary_band(label_map: np.ndarray, distance: int) -> np.ndarray:
    """
    The union over labels c of the inner boundary bands of ``label_map == c``.

    Args:
        label_map: (H, W) integer labels in [0, 65535] (any label, the ignore label included, is
            a region of its own).
        distance: d >= 1, the band width (Chebyshev distance, in pixels).

    Returns:
        (H, W) bool: True at pixels p that have, within Chebyshev distance ``distance``, a pixel
        of a label other than ``label_map[p]`` or a position outside the image.
    """
    if distance < 1:
        raise ValueError(f"distance must be >= 1, got {distance}")
    if label_map.size and (label_map.min() < 0 or label_map.max() > np.iinfo(np.uint16).max):
        raise ValueError("boundary_band supports labels in [0, 65535]")
    # cv2's morphology wants uint8/uint16 here; its default border value makes the window stop at
    # the image border (the border itself is handled below).
    labels = label_map.astype(np.uint8 if label_map.max(initial=0) <= 255 else np.uint16)
    window = np.ones((2 * distance + 1, 2 * distance + 1), dtype=np.uint8)
    band = cv2.dilate(labels, window) != cv2.erode(labels, window)
    # Outside the image is "another label" for every mask: the zero padding of the official code.
    band[:distance] = True
    band[-distance:] = True
    band[:, :distance] = True
    band[:, -distance:] = True
    return band


def boundary_iou_counts(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    ignore_label: int,
    distance: int,
) -> dict[str, np.ndarray]:
    """
    Per-class pixel counts of one image for IoU and Boundary IoU.

    Args:
        gt: (H, W) integer ground truth in ``[0, num_classes)`` or ``ignore_label``.
        pred: (H, W) integer prediction in ``[0, num_classes)``.
        num_classes: K.
        ignore_label: ground-truth label not scored.
        distance: band width d in pixels (see :func:`boundary_distance`).

    Returns:
        Dict of (K,) int64 arrays, ignore pixels excluded everywhere: ``intersection``,
        ``gt_area``, ``pred_area`` (for IoU), and ``band_intersection``, ``gt_band_area``,
        ``pred_band_area`` (for Boundary IoU).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth shape {gt.shape} != prediction shape {pred.shape}")
    valid = gt != ignore_label
    gt_valid, pred_valid = gt[valid], pred[valid]
    if gt_valid.size and (gt_valid.min() < 0 or gt_valid.max() >= num_classes):
        raise ValueError(
            f"ground truth labels must be in [0, {num_classes}) or {ignore_label}, found "
            f"{sorted(set(np.unique(gt_valid).tolist()) - set(range(num_classes)))}"
        )

    def count(labels: np.ndarray) -> np.ndarray:
        return np.bincount(labels, minlength=num_classes).astype(np.int64)

    gt_band = boundary_band(gt, distance)[valid]
    pred_band = boundary_band(pred, distance)[valid]
    correct = gt_valid == pred_valid
    return {
        "intersection": count(gt_valid[correct]),
        "gt_area": count(gt_valid),
        "pred_area": count(pred_valid),
        "band_intersection": count(gt_valid[correct & gt_band & pred_band]),
        "gt_band_area": count(gt_valid[gt_band]),
        "pred_band_area": count(pred_valid[pred_band]),
    }


class BoundaryIoUEvaluator(DatasetEvaluator):
    """
    Per-class Boundary IoU (BIoU) and IoU of a semantic-segmentation dataset, their means over
    classes, and ``min(IoU, BIoU)`` per class and its mean (the paper's recommended metric).

    Ground truth is read like detectron2's ``SemSegEvaluator``: ``sem_seg_file_name`` of the
    dataset dicts (``labelTrainIds`` for Cityscapes), with metadata ``stuff_classes`` and
    ``ignore_label``; predictions are the argmax of ``output["sem_seg"]``. Classes absent from the
    ground truth of the whole dataset are NaN and left out of the means, as SemSegEvaluator does
    for IoU, so its mIoU and this evaluator's agree.

    Results are under the task key ``"boundary_iou"`` (percentages), so it runs beside
    SemSegEvaluator in ``DatasetEvaluators``. Unlike SemSegEvaluator's own "BoundaryIoU", which
    erodes the multi-class label map as one grey-level image, the bands here are per class.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        dilation_ratio: float = 0.02,
        distributed: bool = True,
        output_dir: str | None = None,
        sem_seg_loading_fn: Callable[..., np.ndarray] = read_label_map,
    ):
        """
        Args:
            dataset_name: a registered semantic-segmentation dataset.
            dilation_ratio: band width as a fraction of the image diagonal.
            distributed: gather the counts of all ranks before evaluating.
            output_dir: if set, the results are also written to
                ``<output_dir>/boundary_iou_evaluation.json``.
            sem_seg_loading_fn: reads a ground-truth file, ``fn(path, dtype=int) -> (H, W)``.
        """
        if dilation_ratio <= 0:
            raise ValueError(f"dilation_ratio must be > 0, got {dilation_ratio}")
        metadata = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._dilation_ratio = dilation_ratio
        self._distributed = distributed
        self._output_dir = output_dir
        self._sem_seg_loading_fn = sem_seg_loading_fn
        self._class_names: list[str] = list(metadata.stuff_classes)
        self._ignore_label: int = metadata.ignore_label
        self._input_file_to_gt_file = {
            record["file_name"]: record["sem_seg_file_name"]
            for record in DatasetCatalog.get(dataset_name)
        }

    def reset(self):
        num_classes = len(self._class_names)
        self._counts = {
            key: np.zeros(num_classes, dtype=np.int64)
            for key in (
                "intersection",
                "gt_area",
                "pred_area",
                "band_intersection",
                "gt_band_area",
                "pred_band_area",
            )
        }

    def process(self, inputs, outputs):
        """
        Args:
            inputs: model inputs, each with the ``file_name`` of a dataset dict.
            outputs: model outputs, each with ``sem_seg``: (K, H, W) scores.
        """
        for input, output in zip(inputs, outputs, strict=True):
            pred = output["sem_seg"].argmax(dim=0).to(torch.device("cpu")).numpy()
            gt_file = self._input_file_to_gt_file[input["file_name"]]
            gt = self._sem_seg_loading_fn(gt_file, dtype=int)
            height, width = gt.shape
            try:
                counts = boundary_iou_counts(
                    gt,
                    pred,
                    len(self._class_names),
                    self._ignore_label,
                    boundary_distance(height, width, self._dilation_ratio),
                )
            except ValueError as error:
                raise ValueError(f"{gt_file}: {error}") from error
            for key, value in counts.items():
                self._counts[key] += value

    def evaluate(self):
        """
        Returns:
            ``{"boundary_iou": {...}}`` with ``mBIoU``, ``mIoU``, ``mMinIoUBIoU``, per class
            ``BIoU-<name>``, ``IoU-<name>``, ``min(IoU,BIoU)-<name>`` (percentages) and
            ``dilation_ratio``; None on ranks other than the main one.
        """
        counts = self._counts
        if self._distributed:
            synchronize()
            gathered = all_gather(self._counts)
            if not is_main_process():
                return None
            counts = {key: sum(rank_counts[key] for rank_counts in gathered) for key in counts}

        present = counts["gt_area"] > 0
        iou = _ratio(counts["intersection"], counts["gt_area"], counts["pred_area"], present)
        biou = _ratio(
            counts["band_intersection"], counts["gt_band_area"], counts["pred_band_area"], present
        )
        min_iou_biou = np.minimum(iou, biou)

        results = OrderedDict()
        results["mBIoU"] = 100 * _mean(biou)
        results["mIoU"] = 100 * _mean(iou)
        results["mMinIoUBIoU"] = 100 * _mean(min_iou_biou)
        results["dilation_ratio"] = self._dilation_ratio
        for name, values in (("BIoU", biou), ("IoU", iou), ("min(IoU,BIoU)", min_iou_biou)):
            for class_name, value in zip(self._class_names, values, strict=True):
                results[f"{name}-{class_name}"] = 100 * value
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "boundary_iou_evaluation.json")
            with PathManager.open(path, "w") as f:
                json.dump(results, f, indent=1)
        logger.info(
            "Boundary IoU on %s (dilation ratio %g): mBIoU %.2f, mIoU %.2f, mean min(IoU,BIoU) "
            "%.2f",
            self._dataset_name,
            self._dilation_ratio,
            results["mBIoU"],
            results["mIoU"],
            results["mMinIoUBIoU"],
        )
        return OrderedDict(boundary_iou=results)


def _ratio(
    intersection: np.ndarray, gt_area: np.ndarray, pred_area: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """Per-class intersection over union, NaN where ``valid`` is False."""
    union = gt_area + pred_area - intersection
    ratio = np.full(intersection.shape, np.nan)
    ratio[valid] = intersection[valid] / union[valid]
    return ratio


def _mean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries, NaN if there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


class SemSegIoUEvaluator(SemSegEvaluator):
    """
    detectron2's ``SemSegEvaluator`` (mIoU, fwIoU, mACC, pACC and per-class IoU and accuracy)
    without its ``BoundaryIoU-<class>`` and ``min(IoU, B-Iou)-<class>`` keys. Those erode the
    multi-class label map as one grey-level image, which mixes classes: they are not Boundary IoU
    (see :class:`BoundaryIoUEvaluator` for the per-class metric) and are not computed at all.

    Labels are read by :func:`read_label_map` unless ``sem_seg_loading_fn`` says otherwise:
    detectron2's default reader fails under numpy 2.
    """

    def __init__(self, dataset_name: str, *args, sem_seg_loading_fn=read_label_map, **kwargs):
        super().__init__(dataset_name, *args, sem_seg_loading_fn=sem_seg_loading_fn, **kwargs)
        self._compute_boundary_iou = False
