"""
The embedded "textured shapes" instance-segmentation dataset, in COCO format: the images of
:mod:`pointrend_d2.data.textured_shapes` (the same generator, pixel for pixel), with one instance
per painted shape of the thing classes ``blob``, ``ring``, ``wire``, ``dot`` (json category ids
1-4, the semantic label values; detectron2 contiguous ids 0-3). Later shapes occlude earlier
ones: an instance's mask is its visible pixels, maybe in several pieces (still one instance, one
RLE); void patches remove their pixels from every instance. Instances of fewer than
:data:`MIN_INSTANCE_AREA` visible pixels are dropped. Rings keep their holes (use
``INPUT.MASK_FORMAT bitmask``), wires are 1-4 px wide, dots are small and many, and shapes touch
and overlap. Loaded through :func:`~pointrend_d2.data.coco_json.load_checked_coco_json`, as
users' COCO json files are.

On disk, one folder per split and set of generation parameters, cached and written atomically
like the semantic splits::

    <root>/instances_<split>-<key>/images/<split>_0000.png   RGB, uint8
    <root>/instances_<split>-<key>/instances.json            COCO json, masks as compressed RLE
    <root>/instances_<split>-<key>/parameters.json

``<key>`` hashes :data:`INSTANCES_VERSION`, the image generator's
:data:`~pointrend_d2.data.textured_shapes.DATASET_VERSION`, split, number of images, seed,
height and width.

:func:`register_textured_shapes_instances` registers ``textured_shapes_instances_train`` (64
images) and ``textured_shapes_instances_val`` (16 images) of 256 x 384 px (seed 0) when
``pointrend_d2`` is imported; they are generated on first use, in about 2.5 s and 0.6 s on one
CPU core. Their instances (measured)::

    split   images   blob   ring   wire   dot   total   per image (min-max)   dots per image
    train       64    564    657    258   726    2205   34.5 (28-42)          8-15
    val         16    142    161     70   188     561   35.1 (26-40)          8-14

Median areas (train): blob 2500 px, ring 861, wire 245, dot 149. In pieces (occluded across):
215 rings, 203 blobs, 53 wires, 12 dots of train; with a hole: 219 rings (the others are open
arcs, or cut open by a later shape or the image border), 132 blobs (a later shape inside).
"""

from __future__ import annotations

import json
import os

import numpy as np
from pycocotools import mask as mask_util

from . import textured_shapes
from .coco_json import load_checked_coco_json
from .generated_splits import (
    keyed_split_dir,
    register_generated_splits,
    split_file_stem,
    write_rgb_png,
    write_split_once,
)
from .textured_shapes import (
    CLASSES,
    COLORS,
    generate_textured_shapes_instances,
    resolve_dataset_root,
)

__all__ = [
    "INSTANCES_VERSION",
    "MIN_INSTANCE_AREA",
    "THING_CLASSES",
    "THING_COLORS",
    "generate_textured_shapes_instances_split",
    "register_textured_shapes_instances",
    "textured_shapes_instance_annotations",
    "textured_shapes_instances_json",
    "textured_shapes_instances_split_dir",
]

# Bump whenever the annotations written for the same images change; part of each folder's key.
INSTANCES_VERSION = "textured_shapes_instances_v1"
# Every class but background is a thing; its json category id is its semantic label value.
THING_CLASSES: tuple[str, ...] = CLASSES[1:]
THING_COLORS: tuple[tuple[int, int, int], ...] = COLORS[1:]
# Instances with fewer visible pixels than this are dropped.
MIN_INSTANCE_AREA = 4


def textured_shapes_instance_annotations(
    label: np.ndarray, instance_map: np.ndarray, *, min_area: int = MIN_INSTANCE_AREA
) -> list[dict]:
    """
    COCO annotations of one image from :func:`generate_textured_shapes_instances`'s label and
    instance map, in painting order: ``category_id`` (the semantic label value, 1-4),
    ``segmentation`` (compressed RLE, ``counts`` a str), ``area`` (pixels), ``bbox`` ([x, y, w,
    h] of the mask) and ``iscrowd`` 0; no ``id`` nor ``image_id``. Instances of fewer than
    ``min_area`` pixels are left out.
    """
    annotations = []
    instance_ids, areas = np.unique(instance_map, return_counts=True)
    for instance_id, area in zip(instance_ids.tolist(), areas.tolist(), strict=True):
        if instance_id == 0 or area < min_area:
            continue
        mask = instance_map == instance_id
        class_ids = np.unique(label[mask])
        if class_ids.size != 1 or not 1 <= class_ids[0] < len(CLASSES):
            raise AssertionError(f"Instance {instance_id} has the labels {class_ids.tolist()}")
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append(
            {
                "category_id": int(class_ids[0]),
                "segmentation": {
                    "size": [int(v) for v in rle["size"]],
                    "counts": rle["counts"].decode("ascii"),
                },
                "area": int(area),
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    return annotations


def _instances_parameters(split: str, num_images: int, seed: int, height: int, width: int) -> dict:
    """Every parameter the files of an instance split depend on."""
    return {
        "version": INSTANCES_VERSION,
        "image_version": textured_shapes.DATASET_VERSION,
        "split": split,
        "num_images": num_images,
        "seed": seed,
        "height": height,
        "width": width,
    }


def textured_shapes_instances_split_dir(
    root: str, split: str, num_images: int, *, seed: int = 0, height: int = 256, width: int = 384
) -> str:
    """
    The folder of an instance split generated with these parameters:
    ``<root>/instances_<split>-<key>``, ``<key>`` a hash of all of them, of
    :data:`INSTANCES_VERSION` and of the image generator's version. Nothing is read or written.
    """
    parameters = _instances_parameters(split, num_images, seed, height, width)
    return keyed_split_dir(root, f"instances_{split}", parameters)


def textured_shapes_instances_json(split_dir: str) -> str:
    """The COCO json of an instance split folder: ``<split_dir>/instances.json``."""
    return os.path.join(split_dir, "instances.json")


def generate_textured_shapes_instances_split(
    root: str,
    split: str,
    num_images: int,
    *,
    seed: int = 0,
    height: int = 256,
    width: int = 384,
) -> str:
    """
    Writes ``num_images`` images of ``split`` and their COCO json into
    :func:`textured_shapes_instances_split_dir` unless that folder exists: then it was generated
    with the same parameters and is returned as is. Written into a temporary sibling folder and
    renamed into place, so an existing folder is always complete (see
    :func:`~pointrend_d2.data.textured_shapes.generate_textured_shapes_split`).

    Returns:
        The split folder, with ``images/``, ``instances.json`` and ``parameters.json``.
    """
    split_dir = textured_shapes_instances_split_dir(
        root, split, num_images, seed=seed, height=height, width=width
    )
    parameters = _instances_parameters(split, num_images, seed, height, width)

    def write(folder: str) -> None:
        image_dir = os.path.join(folder, "images")
        os.makedirs(image_dir)
        images, annotations = [], []
        for index in range(num_images):
            image, label, instance_map = generate_textured_shapes_instances(
                seed, split, index, height, width
            )
            file_name = split_file_stem(split, index) + ".png"
            write_rgb_png(os.path.join(image_dir, file_name), image)
            image_id = index + 1
            images.append(
                {"id": image_id, "file_name": file_name, "height": height, "width": width}
            )
            for annotation in textured_shapes_instance_annotations(label, instance_map):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
        coco = {
            "info": {
                "description": f"Textured shapes instances, split {split!r}",
                "version": INSTANCES_VERSION,
                "parameters": parameters,
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [
                {"id": CLASSES.index(name), "name": name, "supercategory": "shape"}
                for name in THING_CLASSES
            ],
        }
        with open(textured_shapes_instances_json(folder), "w") as f:
            json.dump(coco, f)

    return write_split_once(
        root,
        split_dir,
        split,
        parameters,
        write,
        f"{num_images} {height}x{width} images of the textured-shapes instances '{split}' split",
    )


def _generate_and_load_instances(
    root: str, split: str, num_images: int, seed: int, height: int, width: int, name: str
) -> list[dict]:
    """The function registered in DatasetCatalog: generates the split on first use, loads it."""
    split_dir = generate_textured_shapes_instances_split(
        root, split, num_images, seed=seed, height=height, width=width
    )
    return load_checked_coco_json(
        textured_shapes_instances_json(split_dir), os.path.join(split_dir, "images"), name
    )


def register_textured_shapes_instances(
    root: str | None = None,
    *,
    num_train: int = 64,
    num_val: int = 16,
    seed: int = 0,
    height: int = 256,
    width: int = 384,
    prefix: str = "textured_shapes_instances",
) -> list[str]:
    """
    Registers ``f"{prefix}_train"`` and ``f"{prefix}_val"`` in detectron2's DatasetCatalog and
    MetadataCatalog (``thing_classes``, ``thing_colors``, ``evaluator_type="coco"``, ``json_file``,
    ``image_root``, ``thing_dataset_id_to_contiguous_id``, ``dataset_root``). Cheap: a split is
    generated when ``DatasetCatalog.get`` first asks for it, so ``json_file`` names the file it
    will be written to, and exists once the dataset has been loaded.

    Arguments, idempotence, return value and errors as
    :func:`~pointrend_d2.data.textured_shapes.register_textured_shapes`'s.
    """
    root = resolve_dataset_root(root)

    def split_dir(split: str, num_images: int) -> str:
        return textured_shapes_instances_split_dir(
            root, split, num_images, seed=seed, height=height, width=width
        )

    def metadata(split_dir: str) -> dict:
        return {
            "thing_classes": list(THING_CLASSES),
            "thing_colors": [list(color) for color in THING_COLORS],
            "thing_dataset_id_to_contiguous_id": {
                CLASSES.index(c): i for i, c in enumerate(THING_CLASSES)
            },
            "evaluator_type": "coco",
            "dataset_root": root,
            "json_file": textured_shapes_instances_json(split_dir),
            "image_root": os.path.join(split_dir, "images"),
        }

    return register_generated_splits(
        prefix,
        {"train": num_train, "val": num_val},
        split_dir,
        lambda split, num_images, name: _generate_and_load_instances(
            root, split, num_images, seed, height, width, name
        ),
        metadata,
    )
