"""
The registered datasets as the config names them: their task (semantic or instance, by
``evaluator_type``), their records, and their class counts checked against the config's.
"""

from collections.abc import Sequence

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.build import filter_images_with_only_crowd_annotations

__all__ = [
    "INSTANCE_EVALUATOR_TYPES",
    "SEMANTIC_EVALUATOR_TYPES",
    "dataset_task",
    "instance_training_records",
    "load_dataset_records",
    "validate_dataset_classes",
]

SEMANTIC_EVALUATOR_TYPES = ("sem_seg", "cityscapes_sem_seg")
INSTANCE_EVALUATOR_TYPES = ("coco", "cityscapes_instance")


def dataset_task(dataset_name: str) -> str:
    """
    "semantic" or "instance": the task of a registered dataset, by its ``evaluator_type``; a
    dataset without one is an instance dataset if its metadata lists ``thing_classes`` only.

    Raises:
        ValueError: for an evaluator type pointrend_d2 does not train or evaluate.
    """
    metadata = MetadataCatalog.get(dataset_name)
    evaluator_type = metadata.get("evaluator_type")
    if evaluator_type is None:
        only_things = metadata.get("thing_classes") and not metadata.get("stuff_classes")
        return "instance" if only_things else "semantic"
    if evaluator_type in SEMANTIC_EVALUATOR_TYPES:
        return "semantic"
    if evaluator_type in INSTANCE_EVALUATOR_TYPES:
        return "instance"
    raise ValueError(
        f"Dataset {dataset_name!r} has evaluator_type={evaluator_type!r}; pointrend_d2 trains "
        f"and evaluates {list(SEMANTIC_EVALUATOR_TYPES + INSTANCE_EVALUATOR_TYPES)} datasets"
    )


def load_dataset_records(names: Sequence[str], config_key: str) -> list[dict]:
    """
    The records of the datasets ``names`` (from config key ``config_key``), concatenated.

    Raises:
        ValueError: no dataset is named, or one has no records.
        KeyError: a dataset is not registered (detectron2's message lists the registered ones).
    """
    if not names:
        raise ValueError(f"{config_key} is empty: name one or more registered datasets")
    records = []
    for name in names:
        dataset_records = DatasetCatalog.get(name)
        if not dataset_records:
            raise ValueError(f"Dataset {name!r} in {config_key} has no images")
        records.extend(dataset_records)
    return records


def instance_training_records(names: Sequence[str], filter_empty: bool) -> list[dict]:
    """
    The records of the instance datasets ``names`` (DATASETS.TRAIN) as detectron2's
    ``get_detection_dataset_dicts`` gives them (class histogram in the log), without the images
    that have no annotation to train on (none, or only crowd ones) if ``filter_empty``
    (DATALOADER.FILTER_EMPTY_ANNOTATIONS).

    Raises:
        ValueError: ``filter_empty`` leaves no image, with the advice to turn it off.
    """
    records = get_detection_dataset_dicts(list(names), filter_empty=False)
    if not filter_empty:
        return records
    kept = filter_images_with_only_crowd_annotations(records)
    if not kept:
        raise ValueError(
            f"DATASETS.TRAIN {list(names)}: none of its {len(records)} images has an annotation "
            "to train on (all have none, or only crowd ones), and "
            "DATALOADER.FILTER_EMPTY_ANNOTATIONS True leaves such images out. To train on them "
            "as images of background only, set DATALOADER.FILTER_EMPTY_ANNOTATIONS False; "
            "otherwise check the annotations (the log counts those skipped when the dataset "
            "was loaded)"
        )
    return kept


def validate_dataset_classes(cfg: CfgNode, dataset_names: list[str]) -> None:
    """
    Check the config's class count against the classes of every dataset in ``dataset_names``
    whose metadata lists them: MODEL.ROI_HEADS.NUM_CLASSES against ``thing_classes`` for instance
    datasets (``evaluator_type`` "coco" or "cityscapes_instance"), MODEL.SEM_SEG_HEAD.NUM_CLASSES
    against ``stuff_classes`` for the others. A single sigmoid foreground logit
    (SEM_SEG_HEAD.NUM_CLASSES = 1) is trained on datasets of two classes, background and
    foreground.

    The one class-count check of the package: the Trainer calls it before building anything, and
    the evaluators for each test dataset.

    Raises:
        ValueError: naming the dataset, its classes and the config key.
    """
    for name in dataset_names:
        metadata = MetadataCatalog.get(name)
        if metadata.get("evaluator_type") in ("coco", "cityscapes_instance"):
            key, num_classes = "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES
            classes = metadata.get("thing_classes")
        else:
            key, num_classes = "MODEL.SEM_SEG_HEAD.NUM_CLASSES", cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
            classes = metadata.get("stuff_classes")
        if classes is None or len(classes) == num_classes:
            continue
        if key.startswith("MODEL.SEM_SEG_HEAD") and (num_classes, len(classes)) == (1, 2):
            continue
        hint = (
            " (or 1 for a sigmoid foreground logit)"
            if len(classes) == 2 and key.startswith("MODEL.SEM_SEG_HEAD")
            else ""
        )
        raise ValueError(
            f"{key}={num_classes} but dataset {name!r} has {len(classes)} classes "
            f"{list(classes)}: set NUM_CLASSES to {len(classes)}{hint}"
        )
