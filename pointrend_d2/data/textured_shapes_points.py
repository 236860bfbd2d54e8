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

_METADATA_KEYS = {
    "instance": (
        "thing_classes",
        "thing_colors",
        "thing_dataset_id_to_contiguous_id",
        "evaluator_type",
        "dataset_root",
        "image_root",
    ),
    "semantic": (
        "stuff_classes",
        "stuff_colors",
        "ignore_label",
        "evaluator_type",
        "dataset_root",
        "image_root",
    ),
}


def _points_dir(source: dict, kind: str, num_points: int) -> str:
    """The folder of a source split's points: keyed by the source's folder, count and seed."""
    return keyed_split_dir(
        source["dataset_root"], f"points_{kind}", _parameters(source, num_points)
    )


def _parameters(source: dict, num_points: int) -> dict:
    return {
        "version": POINTS_VERSION,
        "source": source["image_root"],
        "num_points": num_points,
        "seed": POINT_SEED,
    }


def _load_instance_points(source_name: str, name: str, num_points: int) -> list[dict]:
    DatasetCatalog.get(source_name)  # generates the source split on first use
    source = MetadataCatalog.get(source_name).as_dict()
    points_dir = _points_dir(source, "instance", num_points)

    def write(folder: str) -> None:
        write_point_annotations(
            source["json_file"],
            source["image_root"],
            os.path.join(folder, "instances.json"),
            num_points,
            POINT_SEED,
        )

    write_split_once(
        source["dataset_root"],
        points_dir,
        name,
        _parameters(source, num_points),
        write,
        f"{num_points} points per object of {source_name}",
    )
    return load_checked_coco_json(
        os.path.join(points_dir, "instances.json"), source["image_root"], name
    )


def _load_semantic_points(source_name: str, name: str, num_points: int) -> list[dict]:
    DatasetCatalog.get(source_name)  # generates the source split on first use
    source = MetadataCatalog.get(source_name).as_dict()
    points_dir = _points_dir(source, "semantic", num_points)

    def write(folder: str) -> None:
        write_sparse_label_folder(
            source["sem_seg_root"],
            os.path.join(folder, "labels"),
            num_points,
            POINT_SEED,
            source["ignore_label"],
        )

    write_split_once(
        source["dataset_root"],
        points_dir,
        name,
        _parameters(source, num_points),
        write,
        f"{num_points} labelled pixels per class and image of {source_name}",
    )
    return load_folder_dataset(
        source["image_root"],
        os.path.join(points_dir, "labels"),
        image_ext=".png",
        sparse_labels=True,
    )


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
    for kind, source_name, counts, load in (
        ("instance", instances_source, INSTANCE_POINTS, _load_instance_points),
        ("semantic", semantic_source, SEMANTIC_POINTS, _load_semantic_points),
    ):
        source = MetadataCatalog.get(source_name).as_dict()
        for num_points in counts:
            name = f"{source_name}_points{num_points}"
            points_dir = _points_dir(source, kind, num_points)
            metadata = {key: source[key] for key in _METADATA_KEYS[kind]}
            if kind == "instance":
                metadata["json_file"] = os.path.join(points_dir, "instances.json")
            else:
                metadata["sem_seg_root"] = os.path.join(points_dir, "labels")
                metadata[SPARSE_LABELS_KEY] = True
            names.append(
                register_dataset(
                    name,
                    functools.partial(load, source_name, name, num_points),
                    metadata,
                    identity=("json_file", "sem_seg_root"),
                )
            )
    return names
