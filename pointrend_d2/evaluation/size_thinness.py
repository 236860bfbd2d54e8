"""
Semantic segmentation broken down by the size and the width of the ground-truth objects (see
:mod:`pointrend_d2.evaluation.object_measures`), for one or more stages of the prediction.

An object is a connected component (8-connectivity) of one class in the ground-truth label map;
ignore pixels belong to no object. For every class and bin:

* **pixel recall**: the fraction of the ground-truth pixels of the bin's objects that a stage
  predicts as their class (the IoU's intersection over the ground truth; a prediction's false
  positives have no ground-truth object, hence no bin, so there is no per-bin precision);
* **object recall**: the fraction of the bin's objects that a stage *finds*: at least half of the
  object's pixels predicted as its class.

With several stages (PointRend's coarse logits upsampled bilinearly, and its refined output), each
pixel and object is also counted by which stages got it right (:class:`StageBreakdown`): right
at the coarse stage and wrong after refinement is "refinement damaged it", wrong at both "the
coarse map missed it (and refinement did not recover it)".
"""

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.comm import all_gather, is_main_process, synchronize
from detectron2.utils.file_io import PathManager

from .label_files import read_label_map
from .object_measures import BINNINGS, Binning
from .stage_breakdown import StageBreakdown, correct_pattern

__all__ = ["SemSegSizeThinnessEvaluator", "semantic_breakdown", "semantic_object_counts"]

logger = logging.getLogger(__name__)

#: The counts of :func:`semantic_object_counts`: ground-truth pixels and objects.
UNITS = ("pixel", "object")


def semantic_object_counts(
    gt: np.ndarray, predictions: Sequence[np.ndarray], num_classes: int, ignore_label: int
) -> dict[str, np.ndarray]:
    """
    The ground-truth pixels and objects of one image, counted by class, size bin, width bin and
    the pattern of stages that got them right (see :mod:`pointrend_d2.evaluation.stage_breakdown`).

    Args:
        gt: (H, W) integer ground truth in ``[0, num_classes)`` or ``ignore_label``.
        predictions: per stage, (H, W) integer predicted labels.
        num_classes: K.
        ignore_label: ground-truth label of no object.

    Returns:
        ``{"pixel": counts, "object": counts}``, each (K, S, W, 2 ** P) int64 with S and W the
        numbers of bins of :data:`BINNINGS` (size, width), P the number of stages. A pixel
        is right when predicted as its class, an object when at least half its pixels are.
    """
    for stage, prediction in enumerate(predictions):
        if prediction.shape != gt.shape:
            raise ValueError(
                f"prediction {stage} has shape {prediction.shape}, the ground truth {gt.shape}"
            )
    valid = gt != ignore_label
    classes = np.unique(gt[valid])
    if classes.size and (classes[0] < 0 or classes[-1] >= num_classes):
        raise ValueError(
            f"ground truth labels must be in [0, {num_classes}) or {ignore_label}, found "
            f"{sorted(set(classes.tolist()) - set(range(num_classes)))}"
        )
    num_patterns = 2 ** len(predictions)
    bin_shape = tuple(len(binning.labels) for binning in BINNINGS)
    counts = {
        unit: np.zeros((num_classes, *bin_shape, num_patterns), dtype=np.int64) for unit in UNITS
    }
    pixel_pattern = correct_pattern([prediction == gt for prediction in predictions])
    for class_id in classes.tolist():
        class_mask = gt == class_id
        num_components, components, stats, _ = cv2.connectedComponentsWithStats(
            class_mask.astype(np.uint8), connectivity=8
        )
        # Each component's bins as one flat index, times the number of patterns, so that adding
        # a pattern gives the flat index of the count (component 0, the rest of the image, is
        # never counted).
        component_bins = np.zeros((len(BINNINGS), num_components), dtype=np.int64)
        for component in range(1, num_components):
            left, top, width, height = stats[component, :4]
            mask = components[top : top + height, left : left + width] == component
            component_bins[:, component] = [binning.bin_of(mask) for binning in BINNINGS]
        component_offset = np.ravel_multi_index(tuple(component_bins), bin_shape) * num_patterns
        pixel_components = components[class_mask]
        patterns = pixel_pattern[class_mask]
        counts["pixel"][class_id] += _histogram(
            component_offset[pixel_components] + patterns, counts["pixel"].shape[1:]
        )
        # An object is right in a stage when that stage has at least half of its pixels right.
        area = stats[:, cv2.CC_STAT_AREA]
        found = [
            2 * np.bincount(pixel_components, weights=patterns >> s & 1, minlength=num_components)
            >= area
            for s in range(len(predictions))
        ]
        counts["object"][class_id] += _histogram(
            component_offset[1:] + correct_pattern(found)[1:], counts["object"].shape[1:]
        )
    return counts


def _histogram(flat_indices: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The number of occurrences of each flat index of an array of ``shape``."""
    return np.bincount(flat_indices, minlength=int(np.prod(shape))).reshape(shape)


def semantic_breakdown(
    counts: np.ndarray, stages: Sequence[str], binning: Binning, class_id: int | None = None
) -> StageBreakdown:
    """
    The :class:`StageBreakdown` by ``binning`` (one of :data:`BINNINGS`) of one unit's counts of
    :func:`semantic_object_counts` (or of their sum over images): of one class, or of all classes
    together (``class_id`` None).
    """
    if binning not in BINNINGS:
        raise ValueError(
            f"binning {binning.name!r}: the counts are by the bins of "
            f"{[b.name for b in BINNINGS]} only (pointrend_d2.evaluation.BINNINGS)"
        )
    selected = counts.sum(axis=0) if class_id is None else counts[class_id]
    other_binnings = tuple(i for i in range(len(BINNINGS)) if BINNINGS[i] is not binning)
    return StageBreakdown(tuple(stages), binning.labels, selected.sum(axis=other_binnings))


class SemSegSizeThinnessEvaluator(DatasetEvaluator):
    """
    Pixel and object recall of a semantic-segmentation dataset by object size and width (see
    the module docstring), for one or more of the model's outputs: ``prediction_keys`` names the
    outputs (each (K, H, W) scores, labels by argmax), in stage order; the default is the model's
    ``"sem_seg"``, so that it runs beside the other evaluators in ``DatasetEvaluators``.
    ``tools/analyze_thin.py`` passes ``("coarse_sem_seg", "sem_seg")`` with the outputs of
    :func:`pointrend_d2.evaluation.stage_outputs.semantic_stage_outputs`.

    Ground truth is read like detectron2's ``SemSegEvaluator``: ``sem_seg_file_name`` of the
    dataset dicts, metadata ``stuff_classes`` and ``ignore_label``.

    Results are under the task key ``"size_thinness"``, over all classes together (percentages;
    see :meth:`StageBreakdown.results` for the keys, ``<unit>`` "pixel" or "object"). With
    ``output_dir``, ``<output_dir>/size_thinness_evaluation.json`` also holds them per class.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        prediction_keys: Sequence[str] = ("sem_seg",),
        distributed: bool = True,
        output_dir: str | None = None,
        sem_seg_loading_fn: Callable[..., np.ndarray] = read_label_map,
    ):
        """
        Args:
            dataset_name: a registered semantic-segmentation dataset.
            prediction_keys: the model outputs evaluated, in stage order (1 to 16, distinct).
            distributed: gather the counts of all ranks before evaluating.
            output_dir: if set, the results per class are also written there (see above).
            sem_seg_loading_fn: reads a ground-truth file, ``fn(path, dtype=int) -> (H, W)``.
        """
        if not 1 <= len(prediction_keys) <= 16 or len(set(prediction_keys)) < len(prediction_keys):
            raise ValueError(
                f"prediction_keys must be 1 to 16 distinct keys, got {prediction_keys}"
            )
        metadata = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._prediction_keys = tuple(prediction_keys)
        self._distributed = distributed
        self._output_dir = output_dir
        self._sem_seg_loading_fn = sem_seg_loading_fn
        self.class_names: list[str] = list(metadata.stuff_classes)
        self._ignore_label: int = metadata.ignore_label
        self._input_file_to_gt_file = {
            record["file_name"]: record["sem_seg_file_name"]
            for record in DatasetCatalog.get(dataset_name)
        }

    def reset(self):
        self._counts = None

    def process(self, inputs, outputs):
        """
        Args:
            inputs: model inputs, each with the ``file_name`` of a dataset dict.
            outputs: model outputs, each with the ``prediction_keys``: (K, H, W) scores.
        """
        for input, output in zip(inputs, outputs, strict=True):
            missing = [key for key in self._prediction_keys if key not in output]
            if missing:
                raise KeyError(
                    f"SemSegSizeThinnessEvaluator: the model's output has no {missing} (it has "
                    f"{sorted(output)}); prediction_keys must name outputs of the model"
                )
            predictions = [
                output[key].argmax(dim=0).to(torch.device("cpu")).numpy()
                for key in self._prediction_keys
            ]
            gt_file = self._input_file_to_gt_file[input["file_name"]]
            gt = self._sem_seg_loading_fn(gt_file, dtype=int)
            try:
                counts = semantic_object_counts(
                    gt, predictions, len(self.class_names), self._ignore_label
                )
            except ValueError as error:
                raise ValueError(f"{gt_file}: {error}") from error
            if self._counts is None:
                self._counts = counts
            else:
                for unit in UNITS:
                    self._counts[unit] += counts[unit]

    @property
    def stages(self) -> tuple[str, ...]:
        """The stage names: the prediction keys."""
        return self._prediction_keys

    def _summed_counts(self) -> dict[str, np.ndarray] | None:
        """The counts of the processed images (of all ranks when distributed; every rank must
        call it): None on ranks other than the main one, or if no image was processed."""
        if not self._distributed:
            return self._counts
        synchronize()
        gathered = [counts for counts in all_gather(self._counts) if counts is not None]
        if not is_main_process() or not gathered:
            return None
        return {unit: sum(counts[unit] for counts in gathered) for unit in UNITS}

    def evaluate(self):
        """
        Also keeps, on the main rank, :attr:`summed_counts` (the counts of
        :func:`semantic_object_counts` summed over the images) and :attr:`per_class_results`
        (the results of each class, by class name).

        Returns:
            ``{"size_thinness": {...}}`` (see the class docstring); None on ranks other than the
            main one, ``{}`` with a warning if no image was processed.
        """
        counts = self._summed_counts()
        if self._distributed and not is_main_process():
            return None
        if counts is None:
            logger.warning(
                "SemSegSizeThinnessEvaluator on %s: no image processed", self._dataset_name
            )
            return {}
        results = OrderedDict()
        per_class = OrderedDict((name, OrderedDict()) for name in self.class_names)
        for unit in UNITS:
            for binning in BINNINGS:
                results.update(semantic_breakdown(counts[unit], self.stages, binning).results(unit))
                for class_id, name in enumerate(self.class_names):
                    class_breakdown = semantic_breakdown(
                        counts[unit], self.stages, binning, class_id
                    )
                    per_class[name].update(class_breakdown.results(unit))
        self.summed_counts, self.per_class_results = counts, per_class
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "size_thinness_evaluation.json")
            with PathManager.open(path, "w") as f:
                json.dump({"all": results, "per_class": per_class}, f, indent=1)
        return OrderedDict(size_thinness=results)
