"""
Whether the training datasets carry what the config trains from: point supervision
(MODEL.POINT_SUPERVISION.ENABLED) needs points in every DATASETS.TRAIN dataset, and sparse point
labels train only with it. Checked by the Trainer before it builds anything.
"""

from collections.abc import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from .catalog import dataset_task
from .point_annotations import has_point_annotations
from .sparse_labels import SPARSE_LABELS_KEY

__all__ = ["check_training_supervision"]


def check_training_supervision(dataset_names: Sequence[str], point_supervision: bool) -> None:
    """
    Checks each training dataset against ``point_supervision``: with it, a semantic dataset must
    have sparse point labels (registered with ``sparse_labels``) and an instance dataset point
    annotations (its records are loaded to see); without it, a semantic dataset must not have
    sparse labels. (An instance dataset of points only, trained without point supervision, is
    refused by the mask head at the first iteration, which sees its instances.)

    Args:
        dataset_names: DATASETS.TRAIN.
        point_supervision: MODEL.POINT_SUPERVISION.ENABLED.

    Raises:
        ValueError: naming the dataset and MODEL.POINT_SUPERVISION.ENABLED, with what to do.
    """
    for name in dataset_names:
        sparse = bool(MetadataCatalog.get(name).get(SPARSE_LABELS_KEY, False))
        if dataset_task(name) == "semantic":
            if point_supervision and not sparse:
                raise ValueError(
                    f"MODEL.POINT_SUPERVISION.ENABLED is True, but DATASETS.TRAIN dataset "
                    f"{name!r} has full label maps, not sparse point labels: train on a dataset "
                    f"registered with {SPARSE_LABELS_KEY} (its labels made with "
                    "tools/make_point_labels.py), or set MODEL.POINT_SUPERVISION.ENABLED False"
                )
            if sparse and not point_supervision:
                raise ValueError(
                    f"DATASETS.TRAIN dataset {name!r} has sparse point labels "
                    f"({SPARSE_LABELS_KEY}), which train only with MODEL.POINT_SUPERVISION."
                    "ENABLED True (PointRend's point loss at the labelled pixels, not at points "
                    "sampled where almost none is labelled): set it"
                )
        elif point_supervision and not any(
            has_point_annotations(record.get("annotations", []))
            for record in DatasetCatalog.get(name)
        ):
            raise ValueError(
                f"MODEL.POINT_SUPERVISION.ENABLED is True, but DATASETS.TRAIN dataset {name!r} has "
                "no point annotations (point_coords, point_labels): make them from its masks with "
                "tools/make_point_annotations.py, or set MODEL.POINT_SUPERVISION.ENABLED False"
            )
