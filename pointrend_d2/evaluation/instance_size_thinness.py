"""
Instance segmentation broken down by the size and the width of the ground-truth objects (see
:mod:`pointrend_d2.evaluation.object_measures`), for one or more mask stages of the same
detections (PointRend's coarse masks, its point head's initial grid, its refined masks).

Per bin and stage:

* **mask AP** (COCO's AP over IoU 0.50:0.95, and AP50), by pycocotools' own ``COCOeval`` with
  the bins as its area ranges: exactly as COCO computes APs/APm/APl, a ground truth outside the
  bin is ignored (a detection matched to it counts neither way) and so is an *unmatched*
  detection outside the bin, by the same measure of its mask. The bin "all" is COCO's mask AP.
  Sizes are mask pixel counts, so "small" can differ from COCO's APs, whose area is the json's
  (polygon area for polygons).
* **recall at IoU 0.5**: the fraction of the bin's (non-crowd) ground truths that COCO's
  matching at IoU 0.5 (up to ``max_dets_per_image`` detections per image, highest score first)
  pairs with a detection, and with several stages which stages did (:class:`StageBreakdown`):
  matched by the coarse masks and not by the refined ones is "refinement damaged it".
"""

import contextlib
import copy
import io
from collections import OrderedDict, defaultdict
from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .boundary_ap import mask_to_rle
from .coco_ground_truth import COCOInstanceEvaluator
from .object_measures import BINNINGS, Binning
from .stage_breakdown import StageBreakdown, correct_pattern

__all__ = ["BinnedCOCOeval", "COCOSizeThinnessEvaluator", "load_coco_results"]

#: The label of COCOeval's area range that holds every object, first in every binned evaluation.
ALL = "all"


def rle_bin(binning: Binning, rle: dict) -> int:
    """The bin of the object of a compressed RLE (whole-image mask)."""
    left, top, width, height = (int(v) for v in mask_util.toBbox(rle))
    mask = mask_util.decode(rle)[top : top + height, left : left + width]
    return binning.bin_of(mask)


def load_coco_results(coco_gt: COCO, results: list[dict]) -> COCO:
    """
    ``coco_gt.loadRes(results)`` for mask results (their "bbox" left out, so that it comes from
    the mask, as detectron2's "segm" evaluation does), also when there are none: a results API
    without annotations, where pycocotools' ``loadRes`` fails.
    """
    results = [{k: v for k, v in result.items() if k != "bbox"} for result in results]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress prints
        if results:
            return coco_gt.loadRes(results)
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        coco_dt.createIndex()
    return coco_dt


class BinnedCOCOeval(COCOeval):
    """
    pycocotools' "segm" ``COCOeval`` whose area ranges are the bins of a :class:`Binning`: "all"
    then each bin. Every ground truth and detection takes the index of its mask's bin as its
    "area" (in copies: the COCO objects are left as they are), and area range ``i`` is
    ``[i, i]``, so COCOeval's own ignore rules apply to the bins unchanged.

    Args:
        coco_gt, coco_dt: pycocotools ``COCO`` objects, as for ``COCOeval``.
        binning: the bins.
        gt_bin_cache: optional dict (annotation id -> bin) shared by evaluations of the same
            ``coco_gt`` and ``binning``, so ground-truth masks are measured once.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, binning: Binning, gt_bin_cache=None):
        super().__init__(coco_gt, coco_dt, iouType="segm")
        self.binning = binning
        num_bins = len(binning.labels)
        self.params.areaRng = [[0, num_bins - 1]] + [[i, i] for i in range(num_bins)]
        self.params.areaRngLbl = [ALL, *binning.labels]
        self._gt_bins = {} if gt_bin_cache is None else gt_bin_cache

    def _prepare(self):
        super()._prepare()  # after it, every "segmentation" is a whole-image compressed RLE
        dt_bins: dict = {}
        self._gts = defaultdict(
            list, {key: self._binned(anns, self._gt_bins) for key, anns in self._gts.items()}
        )
        self._dts = defaultdict(
            list, {key: self._binned(anns, dt_bins) for key, anns in self._dts.items()}
        )

    def _binned(self, anns: list[dict], cache: dict) -> list[dict]:
        binned = []
        for ann in anns:
            if ann["id"] not in cache:
                cache[ann["id"]] = rle_bin(self.binning, ann["segmentation"])
            binned.append({**ann, "area": cache[ann["id"]]})
        return binned

    def average_precision(self, iou_index: int | None = None) -> np.ndarray:
        """
        (1 + bins,) AP of "all" and each bin (after ``evaluate`` and ``accumulate``), over all IoU
        thresholds or at ``params.iouThrs[iou_index]``, at the largest ``maxDets``; NaN where no
        category has a ground truth in the bin.
        """
        precision = self.eval["precision"]  # (IoU, recall, category, area range, max dets)
        if iou_index is not None:
            precision = precision[iou_index : iou_index + 1]
        values = []
        for area_index in range(len(self.params.areaRng)):
            area_precision = precision[:, :, :, area_index, -1]
            valid = area_precision[area_precision > -1]
            values.append(float(valid.mean()) if valid.size else float("nan"))
        return np.array(values)

    def matched_ground_truths(self, iou_index: int = 0) -> list[dict[int, bool]]:
        """
        Per area range ("all", then each bin), ``{ground-truth id: matched}`` for the
        ground truths it does not ignore, at ``params.iouThrs[iou_index]`` (after ``evaluate``).
        """
        area_ranges = [tuple(area_range) for area_range in self.params.areaRng]
        matched: list[dict[int, bool]] = [{} for _ in area_ranges]
        for image in self.evalImgs:
            if image is None:
                continue
            in_range = matched[area_ranges.index(tuple(image["aRng"]))]
            for gt_id, ignored, match in zip(
                image["gtIds"], image["gtIgnore"], image["gtMatches"][iou_index], strict=True
            ):
                if not ignored:
                    in_range[gt_id] = bool(match > 0)
        return matched


class COCOSizeThinnessEvaluator(COCOInstanceEvaluator):
    """
    detectron2's ``COCOEvaluator`` ("segm") that also reports mask AP, AP50 and recall at IoU 0.5
    by object size and width (see the module docstring) as task ``"size_thinness"``, for each of
    ``mask_fields``: fields of the output ``Instances`` holding (R, H, W) masks of the same
    detections, in stage order. The default, ``("pred_masks",)``, is the model's masks, so that
    it runs beside the other evaluators; ``tools/analyze_thin.py`` passes
    ``("coarse_masks", "initial_masks", "pred_masks")`` with the outputs of
    :func:`pointrend_d2.evaluation.stage_outputs.instance_stage_outputs`.

    Keys (percentages): ``"<field>/AP/<bin>"``, ``"<field>/AP50/<bin>"``, and those of
    :meth:`StageBreakdown.results` with unit "object" (recall at IoU 0.5, what changed from each
    stage to the last), for the bins "all", then each size and width bin. The breakdowns are
    also kept as :attr:`breakdowns` (by binning name) on the main rank.

    Args:
        dataset_name, output_dir, distributed, max_dets_per_image: as for ``COCOEvaluator``.
        mask_fields: 1 to 16 distinct fields of the outputs' ``instances``.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        mask_fields: Sequence[str] = ("pred_masks",),
        distributed: bool = True,
        max_dets_per_image: int | None = None,
    ):
        if not 1 <= len(mask_fields) <= 16 or len(set(mask_fields)) < len(mask_fields):
            raise ValueError(f"mask_fields must be 1 to 16 distinct fields, got {mask_fields}")
        super().__init__(
            dataset_name,
            tasks=("segm",),
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
        )
        self._mask_fields = tuple(mask_fields)
        # Ground-truth bins by binning name and annotation id: self._coco_api never changes.
        self._gt_bins: dict[str, dict] = {binning.name: {} for binning in BINNINGS}
        self.breakdowns: dict[str, StageBreakdown] = {}

    def process(self, inputs, outputs):
        """
        Args:
            inputs: model inputs, each with the ``image_id`` of a dataset dict.
            outputs: model outputs, each with ``instances`` that have the ``mask_fields``.
        """
        for input, output in zip(inputs, outputs, strict=True):
            instances = output["instances"].to(self._cpu_device)
            missing = [field for field in self._mask_fields if not instances.has(field)]
            if missing:
                raise KeyError(
                    f"COCOSizeThinnessEvaluator: the output instances have no {missing} (they "
                    f"have {sorted(instances.get_fields())}); mask_fields must name fields of "
                    "the model's instances"
                )
            coco_json = instances_to_coco_json(instances, input["image_id"])
            stage_masks = {
                # COCOEvaluator's json already holds the RLEs of pred_masks: not a second copy.
                field: (
                    [result["segmentation"] for result in coco_json]
                    if field == "pred_masks"
                    else [mask_to_rle(mask) for mask in instances.get(field).numpy()]
                )
                for field in self._mask_fields
            }
            self._predictions.append(
                {"image_id": input["image_id"], "instances": coco_json, "stage_masks": stage_masks}
            )

    def _eval_predictions(self, predictions, img_ids=None):
        # COCOEvaluator's evaluation maps the category ids of predictions["instances"] back to
        # the dataset's, in place: the stage results below copy them from there.
        super()._eval_predictions(predictions, img_ids=img_ids)
        if self._do_evaluation:
            self._results["size_thinness"] = self._eval_size_thinness(predictions, img_ids)

    def _eval_size_thinness(self, predictions, img_ids) -> dict[str, float]:
        results = OrderedDict()
        matched = {binning.name: [] for binning in BINNINGS}  # per stage, as matched_ground_truths
        for field in self._mask_fields:
            stage_results = [
                {**result, "segmentation": rle}
                for prediction in predictions
                for result, rle in zip(
                    prediction["instances"], prediction["stage_masks"][field], strict=True
                )
            ]
            coco_dt = load_coco_results(self._coco_api, stage_results)
            for binning in BINNINGS:
                evaluation = BinnedCOCOeval(
                    self._coco_api, coco_dt, binning, self._gt_bins[binning.name]
                )
                evaluation.params.maxDets = self._max_dets_per_image
                if img_ids is not None:
                    evaluation.params.imgIds = img_ids
                with contextlib.redirect_stdout(io.StringIO()):
                    evaluation.evaluate()
                    evaluation.accumulate()
                # iouThrs[0] is 0.5.
                for metric, values in (
                    ("AP", evaluation.average_precision()),
                    ("AP50", evaluation.average_precision(iou_index=0)),
                ):
                    for label, value in zip(evaluation.params.areaRngLbl, values, strict=True):
                        results[f"{field}/{metric}/{label}"] = 100 * value
                matched[binning.name].append(evaluation.matched_ground_truths(iou_index=0))
        for binning in BINNINGS:
            self.breakdowns[binning.name] = breakdown = self._breakdown(
                binning, matched[binning.name]
            )
            results.update(breakdown.results("object"))
        return results

    def _breakdown(self, binning: Binning, matched: list[list[dict[int, bool]]]) -> StageBreakdown:
        """The :class:`StageBreakdown` of the ground truths from each stage's
        ``matched_ground_truths`` (the same ground truths in every stage: only masks differ)."""
        counts = np.zeros((1 + len(binning.labels), 2 ** len(self._mask_fields)), dtype=np.int64)
        for bin_index, in_bin in enumerate(matched[0]):
            gt_ids = list(in_bin)
            found = [[stage[bin_index][gt_id] for gt_id in gt_ids] for stage in matched]
            counts[bin_index] = np.bincount(correct_pattern(found), minlength=counts.shape[1])
        return StageBreakdown(self._mask_fields, (ALL, *binning.labels), counts)
