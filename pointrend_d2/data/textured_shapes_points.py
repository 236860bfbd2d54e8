"""
The embedded training splits with points instead of full annotations, made from them on first use
(:mod:`pointrend_d2.data.point_sampling`, seed :data:`POINT_SEED`), for the point-supervision
quickstarts (MODEL.POINT_SUPERVISION.ENABLED):

* ``textured_shapes_instances_train_points{P}``, P in :data:`INSTANCE_POINTS`: the instance train
  split's json with P points per object in its box, labelled from its mask (the images are the
  split's own); the 5 points of an object are the first 5 of its 10.
* ``textured_shapes_sem_seg_train_points{N}``, N in :data:`SEMANTIC_POINTS`: the semantic train
  split's label maps with N pixels per class per image, 255 elsewhere (``sparse_labels``).

Each is written once into the source split's dataset root, in a folder keyed by the source split
folder, the point count, the seed and :data:`POINTS_VERSION`, atomically as the splits are.
"""

import functools
import os
from collections.abc import Callable
from typing import NamedTuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco_json import load_checked_coco_json
from .folder import load_folder_dataset
from .generated_splits import keyed_split_dir, write_split_once
from .point_sampling import write_point_annotations, write_sparse_label_folder
from .registration import register_dataset
from .sparse_labels import SPARSE_LABELS_KEY

__all__ = [
    "INSTANCE_POINTS",
    "POINTS_VERSION",
    "POINT_SEED",
    "SEMANTIC_POINTS",
    "register_textured_shapes_points",
]

#: Bump whenever the points written for the same source change; part of each folder's key.
POINTS_VERSION = "textured_shapes_points_v1"
POINT_SEED = 0
#: Points per object of the registered instance splits.
INSTANCE_POINTS = (5, 10)
#: Labelled pixels per class per image of the registered semantic splits.
SEMANTIC_POINTS = (20,)


def _parameters(source: dict, num_points: int) -> dict:
    return {
        "version": POINTS_VERSION,
        "source": source["image_root"],
        "num_points": num_points,
        "seed": POINT_SEED,
    }


def _points_dir(source: dict, kind: str, num_points: int) -> str:
    """The folder of a source split's points: keyed by the source's folder, count and seed."""
    return keyed_split_dir(
        source["dataset_root"], f"points_{kind}", _parameters(source, num_points)
    )


def _write_instance_points(source: dict, num_points: int, folder: str) -> None:
    write_point_annotations(
        source["json_file"],
        source["image_root"],
        os.path.join(folder, "instances.json"),
        num_points,
        POINT_SEED,
    )


def _write_semantic_points(source: dict, num_points: int, folder: str) -> None:
    write_sparse_label_folder(
        source["sem_seg_root"],
        os.path.join(folder, "labels"),
        num_points,
        POINT_SEED,
        source["ignore_label"],
    )


class _Kind(NamedTuple):
    """How the points of one kind of source split are made, named and loaded."""

    metadata_keys: tuple[str, ...]  # taken from the source's metadata
    write: Callable[[dict, int, str], None]  # (source metadata, points, folder)
    paths: Callable[[str], dict]  # points folder -> the dataset's own metadata
    load: Callable[[str, dict], list[dict]]  # (name, metadata) -> records


_KINDS = {
    "instance": _Kind(
        (
            "thing_classes",
            "thing_colors",
            "thing_dataset_id_to_contiguous_id",
            "evaluator_type",
            "dataset_root",
            "image_root",
        ),
        _write_instance_points,
        lambda folder: {"json_file": os.path.join(folder, "instances.json")},
        lambda name, metadata: load_checked_coco_json(
            metadata["json_file"], metadata["image_root"], name
        ),
    ),
    "semantic": _Kind(
        (
            "stuff_classes",
            "stuff_colors",
            "ignore_label",
            "evaluator_type",
            "dataset_root",
            "image_root",
        ),
        _write_semantic_points,
        lambda folder: {"sem_seg_root": os.path.join(folder, "labels"), SPARSE_LABELS_KEY: True},
        lambda name, metadata: load_folder_dataset(
            metadata["image_root"], metadata["sem_seg_root"], image_ext=".png", sparse_labels=True
        ),
    ),
}


def _load_points(kind: str, source_name: str, name: str, num_points: int) -> list[dict]:
    """The function registered in DatasetCatalog: makes the points on first use, loads them."""
    DatasetCatalog.get(source_name)  # generates the source split on first use
    source = MetadataCatalog.get(source_name).as_dict()
    write_split_once(
        source["dataset_root"],
        _points_dir(source, kind, num_points),
        name,
        _parameters(source, num_points),
        functools.partial(_KINDS[kind].write, source, num_points),
        f"{num_points} points ({kind}) of {source_name}",
    )
    return _KINDS[kind].load(name, MetadataCatalog.get(name).as_dict())


def register_textured_shapes_points(
    instances_source: str = "textured_shapes_instances_train",
    semantic_source: str = "textured_shapes_sem_seg_train",
) -> list[str]:
    """
    Registers ``f"{instances_source}_points{P}"`` for P in :data:`INSTANCE_POINTS` and
    ``f"{semantic_source}_points{N}"`` for N in :data:`SEMANTIC_POINTS`, from the registered
    source splits' metadata (the sources are generated when a points split is first loaded).
    Idempotent, as the sources' registrations.

    Returns:
        The registered names.
    """
    names = []
    for kind, source_name, counts in (
        ("instance", instances_source, INSTANCE_POINTS),
        ("semantic", semantic_source, SEMANTIC_POINTS),
    ):
        source = MetadataCatalog.get(source_name).as_dict()
        for num_points in counts:
            name = f"{source_name}_points{num_points}"
            metadata = {key: source[key] for key in _KINDS[kind].metadata_keys}
            metadata.update(_KINDS[kind].paths(_points_dir(source, kind, num_points)))
            names.append(
                register_dataset(
                    name,
                    functools.partial(_load_points, kind, source_name, name, num_points),
                    metadata,
                    identity=("json_file", "sem_seg_root"),
                )
            )
    return names
