"""
Recall of ground truth by bin, for several stages of one model's prediction, and what changed
between stages.

A stage is one version of the model's prediction of the same image (PointRend's coarse
prediction, its refined one). Every ground-truth unit (a pixel, or an object) is counted once per
bin, under the *pattern* of stages that predicted it correctly: bit ``s`` of the pattern is set when
stage ``s`` got the unit right. From these counts follow each stage's recall and, for two stages,
the units the later one lost (right before, wrong after: "refinement damaged it") or gained (wrong
before, right after), and those both missed ("the coarse map missed it and refinement did not
recover it").
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["StageBreakdown", "correct_pattern"]


def correct_pattern(correct: list[np.ndarray]) -> np.ndarray:
    """
    The pattern of each unit: ``sum_s correct[s] << s``.

    Args:
        correct: per stage, a bool array over the same units (at most 16 stages).

    Returns:
        int64 array of the units' shape.
    """
    if not 1 <= len(correct) <= 16:
        raise ValueError(f"need 1 to 16 stages, got {len(correct)}")
    pattern = np.zeros(np.shape(correct[0]), dtype=np.int64)
    for stage, stage_correct in enumerate(correct):
        pattern |= np.asarray(stage_correct, dtype=np.int64) << stage
    return pattern


@dataclass(frozen=True)
class StageBreakdown:
    """
    Ground-truth units counted by bin and by the pattern of stages that got them right.

    Attributes:
        stages: the stage names, bit ``s`` of a pattern standing for ``stages[s]``.
        bin_labels: one label per bin.
        counts: (len(bin_labels), 2 ** len(stages)) int64, ``counts[b, pattern]``.
    """

    stages: tuple[str, ...]
    bin_labels: tuple[str, ...]
    counts: np.ndarray

    def __post_init__(self):
        expected = (len(self.bin_labels), 2 ** len(self.stages))
        if self.counts.shape != expected:
            raise ValueError(f"counts must have shape {expected}, got {self.counts.shape}")

    def total(self) -> np.ndarray:
        """(B,) the units of each bin."""
        return self.counts.sum(axis=1)

    def _fraction(self, selected: np.ndarray) -> np.ndarray:
        """(B,) the fraction of each bin's units whose pattern is ``selected``, NaN if empty."""
        total = self.total()
        fraction = np.full(total.shape, np.nan)
        nonempty = total > 0
        fraction[nonempty] = self.counts[nonempty][:, selected].sum(axis=1) / total[nonempty]
        return fraction

    def _has(self, stage: str) -> np.ndarray:
        """(2 ** P,) bool: the patterns in which ``stage`` is right."""
        bit = self.stages.index(stage)
        return (np.arange(self.counts.shape[1]) >> bit & 1).astype(bool)

    def recall(self, stage: str) -> np.ndarray:
        """(B,) the fraction of each bin's units that ``stage`` got right (NaN: no units)."""
        return self._fraction(self._has(stage))

    def lost(self, before: str, after: str) -> np.ndarray:
        """(B,) the fraction of units right in ``before`` and wrong in ``after``."""
        return self._fraction(self._has(before) & ~self._has(after))

    def gained(self, before: str, after: str) -> np.ndarray:
        """(B,) the fraction of units wrong in ``before`` and right in ``after``."""
        return self._fraction(~self._has(before) & self._has(after))

    def missed_by_both(self, before: str, after: str) -> np.ndarray:
        """(B,) the fraction of units wrong in both stages."""
        return self._fraction(~self._has(before) & ~self._has(after))

    def results(self, unit: str) -> dict[str, float]:
        """
        Flat results, fractions in percent: ``"<unit>s/<bin>"`` the number of units,
        ``"<stage>/<unit>_recall/<bin>"``, and for every stage before the last one
        ``"<stage>-><last>/lost_<unit>s/<bin>"``, ``.../gained_<unit>s/<bin>`` and
        ``.../missed_<unit>s/<bin>`` (missed by both; fractions of the bin's units).
        """
        results = {}
        for label, total in zip(self.bin_labels, self.total(), strict=True):
            results[f"{unit}s/{label}"] = float(total)
        for stage in self.stages:
            for label, value in zip(self.bin_labels, self.recall(stage), strict=True):
                results[f"{stage}/{unit}_recall/{label}"] = 100 * float(value)
        last = self.stages[-1]
        for stage in self.stages[:-1]:
            for name, values in (
                (f"lost_{unit}s", self.lost(stage, last)),
                (f"gained_{unit}s", self.gained(stage, last)),
                (f"missed_{unit}s", self.missed_by_both(stage, last)),
            ):
                for label, value in zip(self.bin_labels, values, strict=True):
                    results[f"{stage}->{last}/{name}/{label}"] = 100 * float(value)
        return results
