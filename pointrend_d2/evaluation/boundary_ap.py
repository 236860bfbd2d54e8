"""
Boundary AP for instance segmentation (Cheng et al., "Boundary IoU: Improving Object-Centric Image
Segmentation Evaluation", CVPR 2021), reported beside detectron2's COCO "bbox" and "segm" AP.

Definitions (checked against the authors' code, bowenc0221/boundary-iou-api):

* Band width: ``d = int(round(dilation_ratio * sqrt(H^2 + W^2)))``, at least 1, with H x W the
  *image* size (``mask_to_boundary`` in ``boundary_iou/utils/boundary_utils.py``); the default
  ``dilation_ratio`` is 0.02, the paper's value for COCO.
* Boundary band of a mask M (the paper's ``M_d ∩ M``): ``M - erode(M)``, where the mask is padded
  by one zero pixel on every side, eroded ``d`` times with a 3x3 kernel and cropped back. A pixel
  of M is in the band iff a pixel outside M lies within Chebyshev distance d; the padding makes a
  mask cut by the image border have a band along the border.
* Boundary IoU: ``BIoU(G, P) = |(G_d ∩ G) ∩ (P_d ∩ P)| / |(G_d ∩ G) ∪ (P_d ∩ P)|``, i.e. the IoU of
  the two bands (0 when both are empty, as pycocotools' mask IoU).
* Boundary AP is *not* COCO AP with Mask IoU replaced by Boundary IoU alone: the authors' COCO
  evaluation (``COCOeval(..., iouType="boundary")``, ``computeBoundaryIoU`` in
  ``boundary_iou/coco_instance_api/cocoeval.py``, the evaluation its README gives) matches
  detections to ground truths with ``min(Mask IoU, Boundary IoU)``, so that errors far from the
  contour, which Boundary IoU alone does not see for large objects, still count.
  Everything else is COCO's (IoU thresholds 0.50:0.95, 101 recall points, area ranges by *mask*
  area, maxDets 1/10/100).
* Crowd ground truths: the official code keeps the plain crowd Mask IoU (intersection over the
  detection's area) for crowd columns and takes the minimum only for non-crowd ones; so does this
  module (so crowd regions still absorb detections exactly as in mask AP).

faster-coco-eval 1.8.0 (PyPI, ``COCOeval_faster(..., iouType="boundary")``) implements the same
rule (min of the two IoUs for non-crowd ground truths, crowd Mask IoU for crowd ones; same padded
erosion in its OpenCV backend). Checked against this module on random COCO-format data: identical
AP on ordinary image sizes, but its default C++ band (``mask.rleToBoundary``, backend
"mask_api") misses band pixels when the image height is at most 2d (e.g. 12 x 300 images at ratio
0.02), where it gave a different AP. It is not used here: pycocotools already does the work with
detectron2's own COCO objects, without a second compiled COCO API.

Implementation: the per-pair IoU is pycocotools' ``maskUtils.iou`` twice, on the mask RLEs and on
the RLEs of the boundary bands (the IoU of the band RLEs *is* Boundary IoU). The predictions are
the ones detectron2's "segm" evaluation already converted to RLEs and loaded (``loadRes``), so the
boundary evaluation reuses its ``cocoGt``/``cocoDt`` and parameters; bands are computed once per
annotation (ground-truth bands are cached across evaluations) and only where a pair is scored.
"""

import contextlib
import copy
import io
import itertools
import logging
import math

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.utils.logger import create_small_table
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from .coco_ground_truth import COCOInstanceEvaluator

__all__ = [
    "BoundaryCOCOeval",
    "COCOBoundaryEvaluator",
    "boundary_ap_iou",
    "boundary_dilation",
    "boundary_iou",
    "mask_boundary_band",
    "mask_iou",
    "mask_to_rle",
    "rle_boundary_band",
]

logger = logging.getLogger(__name__)

_BOUNDARY_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def boundary_dilation(height: int, width: int, dilation_ratio: float) -> int:
    """Band width d in pixels, as the official code: ``int(round(ratio * diagonal))``, >= 1."""
    return max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))


def mask_boundary_band(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """
    The boundary band ``M_d ∩ M`` of a binary mask, exactly as the official ``mask_to_boundary``.

    Args:
        mask: (H, W) bool or integer mask of the whole image (nonzero = object).
        dilation_ratio: band width as a fraction of the image diagonal.

    Returns:
        (H, W) bool: the pixels of the mask that have a pixel outside the mask (or outside the
        image) within Chebyshev distance ``boundary_dilation(H, W, dilation_ratio)``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    height, width = mask.shape
    dilation = boundary_dilation(height, width, dilation_ratio)
    binary = (mask != 0).astype(np.uint8)
    band = np.zeros((height, width), dtype=bool)
    rows, cols = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
    if rows.size == 0:
        return band
    # Erode the mask's bounding box only: everything outside it is 0, so the one-pixel zero ring
    # of the padded box is as close to any box pixel as the nearest outside pixel of the full
    # image, and the result equals the official full-image erosion.
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = binary[y0:y1, x0:x1]
    padded = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=dilation)[1:-1, 1:-1]
    band[y0:y1, x0:x1] = crop > eroded
    return band


def mask_to_rle(mask: np.ndarray) -> dict:
    """A (H, W) binary mask as a compressed pycocotools RLE (``counts`` as bytes)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    return mask_util.encode(np.asfortranarray((mask != 0).astype(np.uint8)[:, :, None]))[0]


def rle_boundary_band(rle: dict, dilation_ratio: float = 0.02) -> dict:
    """The RLE of the boundary band of the mask of a compressed RLE (the image size is its size)."""
    return mask_to_rle(mask_boundary_band(mask_util.decode(rle), dilation_ratio))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


def mask_iou(gt_mask: np.ndarray, dt_mask: np.ndarray) -> float:
    """Mask IoU of two (H, W) binary masks (0 when both are empty, as pycocotools)."""
    return _iou(np.asarray(gt_mask) != 0, np.asarray(dt_mask) != 0)


def boundary_iou(gt_mask: np.ndarray, dt_mask: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """
    Boundary IoU of two (H, W) binary masks of one image, by the definition (reference for tests):
    ``|(G_d ∩ G) ∩ (P_d ∩ P)| / |(G_d ∩ G) ∪ (P_d ∩ P)|``, 0 when both bands are empty.
    """
    gt_mask, dt_mask = np.asarray(gt_mask), np.asarray(dt_mask)
    if gt_mask.shape != dt_mask.shape:
        raise ValueError(f"mask shapes differ: {gt_mask.shape} vs {dt_mask.shape}")
    return _iou(
        mask_boundary_band(gt_mask, dilation_ratio), mask_boundary_band(dt_mask, dilation_ratio)
    )


def boundary_ap_iou(
    gt_mask: np.ndarray, dt_mask: np.ndarray, dilation_ratio: float = 0.02
) -> float:
    """The IoU Boundary AP matches a non-crowd pair with: ``min(Mask IoU, Boundary IoU)``."""
    return min(mask_iou(gt_mask, dt_mask), boundary_iou(gt_mask, dt_mask, dilation_ratio))


class BoundaryCOCOeval(COCOeval):
    """
    pycocotools' ``COCOeval`` ("segm" parameters, official matching and accumulation) whose
    per-pair IoU is Boundary AP's: ``min(Mask IoU, Boundary IoU)`` for non-crowd ground truths,
    the crowd Mask IoU for crowd ones (as boundary-iou-api's ``iouType="boundary"``).

    Args:
        cocoGt, cocoDt: pycocotools ``COCO`` objects, as for ``COCOeval``.
        dilation_ratio: band width as a fraction of the image diagonal.
        gt_band_cache: optional dict (annotation id -> band RLE) shared by evaluations of the same
            ``cocoGt`` and ``dilation_ratio``, so ground-truth bands are computed once.
    """

    def __init__(self, cocoGt=None, cocoDt=None, dilation_ratio: float = 0.02, gt_band_cache=None):
        super().__init__(cocoGt, cocoDt, iouType="segm")
        self.dilation_ratio = dilation_ratio
        self._gt_bands = {} if gt_band_cache is None else gt_band_cache
        self._dt_bands: dict = {}

    def _band(self, cache: dict, ann: dict) -> dict:
        band = cache.get(ann["id"])
        if band is None:
            # After _prepare, ann["segmentation"] is the compressed RLE of the whole image.
            band = cache[ann["id"]] = rle_boundary_band(ann["segmentation"], self.dilation_ratio)
        return band

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 or len(dt) == 0:
            return []
        # Same order and truncation as COCOeval.computeIoU (evaluateImg relies on it).
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        iscrowd = [int(g["iscrowd"]) for g in gt]
        ious = np.asarray(
            mask_util.iou(
                [d["segmentation"] for d in dt], [g["segmentation"] for g in gt], iscrowd
            ),
            dtype=np.float64,
        )
        non_crowd = np.flatnonzero(np.asarray(iscrowd) == 0)
        if non_crowd.size:
            boundary_ious = mask_util.iou(
                [self._band(self._dt_bands, d) for d in dt],
                [self._band(self._gt_bands, gt[j]) for j in non_crowd],
                [0] * non_crowd.size,
            )
            ious[:, non_crowd] = np.minimum(ious[:, non_crowd], boundary_ious)
        return ious

    def summarize(self):
        # detectron2 evaluates a custom max_dets_per_image with COCOevalMaxDets' summarize.
        if self.params.maxDets[2] != 100:
            COCOevalMaxDets.summarize(self)
        else:
            super().summarize()


class COCOBoundaryEvaluator(COCOInstanceEvaluator):
    """
    detectron2's ``COCOEvaluator`` (its ground truth completed as :class:`COCOInstanceEvaluator`
    completes it) that also reports Boundary AP as task ``"boundary"`` (AP, AP50, AP75, APs, APm,
    APl and per-class ``AP-<name>``, in percent), whenever it evaluates "segm".

    The boundary evaluation reuses the "segm" evaluation's loaded predictions (the RLEs made once
    in ``process``) and parameters (``img_ids``, ``max_dets_per_image``), and always runs
    pycocotools' official Python ``COCOeval`` matching (detectron2's compiled ``COCOeval_opt``
    is used for bbox/segm when it loads; otherwise detectron2 falls back to the same official API).

    Empty inputs follow ``COCOEvaluator``: no predictions at all (``process`` never called, or a
    non-main rank) -> ``{}`` with a warning; predictions without any instance -> the tasks
    detectron2 evaluates get NaN metrics (with ``tasks=None`` it infers only "bbox" from zero
    instances, so pass ``tasks=("bbox", "segm")`` to get NaN "segm" and "boundary" too).

    Args:
        dataset_name: a registered dataset with a COCO ``json_file`` (or convertible to one, which
            needs ``output_dir``), as for ``COCOEvaluator``.
        output_dir: where ``COCOEvaluator`` dumps predictions (optional).
        dilation_ratio: Boundary IoU band width as a fraction of the image diagonal (0.02 = the
            paper's COCO setting).
        distributed, max_dets_per_image: as for ``COCOEvaluator``.
        tasks: as for ``COCOEvaluator`` ("bbox", "segm", "keypoints"); "boundary" may be listed
            too and means "segm" (Boundary AP needs the segm evaluation). None: inferred from the
            predictions.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        dilation_ratio: float = 0.02,
        distributed: bool = True,
        tasks=None,
        max_dets_per_image: int | None = None,
    ):
        if not dilation_ratio > 0:
            raise ValueError(f"dilation_ratio must be > 0, got {dilation_ratio}")
        if tasks is not None:
            tasks = tuple(dict.fromkeys("segm" if t == "boundary" else t for t in tasks))
        super().__init__(
            dataset_name,
            tasks=tasks,
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
        )
        self._dilation_ratio = dilation_ratio
        # Ground-truth band RLEs by annotation id: self._coco_api never changes, so they are
        # computed once for all evaluations of this evaluator (e.g. periodic evaluation).
        self._gt_band_cache: dict = {}
        self._boundary_results = None

    def _eval_predictions(self, predictions, img_ids=None):
        self._boundary_results = None
        super()._eval_predictions(predictions, img_ids=img_ids)
        if "segm" in self._results:
            if self._boundary_results is None:
                raise RuntimeError(
                    "COCOEvaluator evaluated segm without passing its COCOeval through "
                    "_derive_coco_results: this detectron2 is not supported by "
                    "COCOBoundaryEvaluator"
                )
            self._results["boundary"] = self._boundary_results

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if iou_type == "segm":
            self._boundary_results = self._eval_boundary(coco_eval, class_names)
        return results

    def _eval_boundary(self, segm_eval, class_names):
        """Boundary AP from the evaluated "segm" ``COCOeval`` (None: no predicted instance)."""
        if segm_eval is None:
            self._logger.warning("No predictions from the model: Boundary AP is NaN.")
            return {metric: float("nan") for metric in _BOUNDARY_METRICS}
        boundary_eval = BoundaryCOCOeval(
            segm_eval.cocoGt,
            segm_eval.cocoDt,
            dilation_ratio=self._dilation_ratio,
            gt_band_cache=self._gt_band_cache,
        )
        boundary_eval.params = copy.deepcopy(segm_eval.params)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress prints
            boundary_eval.evaluate()
            boundary_eval.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            boundary_eval.summarize()
        self._logger.info(
            f"Boundary AP (dilation_ratio={self._dilation_ratio}, IoU = min(mask IoU, boundary "
            f"IoU)):\n{summary.getvalue().rstrip()}"
        )
        return self._derive_boundary_results(boundary_eval, class_names)

    def _derive_boundary_results(self, boundary_eval, class_names):
        """As ``COCOEvaluator._derive_coco_results`` for the "segm" metrics, logged as boundary."""
        stats = boundary_eval.stats
        results = {
            metric: float(stats[idx] * 100 if stats[idx] >= 0 else "nan")
            for idx, metric in enumerate(_BOUNDARY_METRICS)
        }
        self._logger.info("Evaluation results for boundary: \n" + create_small_table(results))
        if not np.isfinite(sum(results.values())):
            self._logger.info("Some metrics cannot be computed and is shown as NaN.")
        if class_names is None or len(class_names) <= 1:
            return results

        precisions = boundary_eval.eval["precision"]  # (iou, recall, class, area, max dets)
        assert len(class_names) == precisions.shape[2]
        per_category = []
        for idx, name in enumerate(class_names):
            precision = precisions[:, :, idx, 0, -1]
            precision = precision[precision > -1]
            ap = np.mean(precision) if precision.size else float("nan")
            per_category.append((f"{name}", float(ap * 100)))

        n_cols = min(6, len(per_category) * 2)
        flat = list(itertools.chain(*per_category))
        rows = itertools.zip_longest(*[flat[i::n_cols] for i in range(n_cols)])
        table = tabulate(
            rows,
            tablefmt="pipe",
            floatfmt=".3f",
            headers=["category", "AP"] * (n_cols // 2),
            numalign="left",
        )
        self._logger.info("Per-category boundary AP: \n" + table)
        results.update({"AP-" + name: ap for name, ap in per_category})
        return results
