"""
Custom semantic-segmentation datasets from two folders: images and single-channel label PNGs
(label value = class index, ``ignore_label`` not scored), paired by file stem. COCO-Stuff's
detectron2 layout (``stuffthingmaps_detectron2``), ADE20K's and most others are of this kind.

From Python::

    register_folder_dataset("my_train", "data/images/train", "data/labels/train", ["sky", "road"])

From a config, without Python: list spec files in ``DATASETS.FOLDER_SPECS`` and call
:func:`register_datasets_from_config` before building the trainer. A spec file (YAML or JSON;
relative paths are relative to the spec file)::

    classes: [sky, road, car]          # or  classes_file: classes.txt  (one name per line)
    colors: [[70, 130, 180], [128, 64, 128], [0, 0, 142]]   # optional, RGB
    ignore_label: 255                  # optional
    image_ext: .jpg                    # optional, default: .jpg, .jpeg, .png
    label_ext: .png                    # optional
    datasets:
      my_train: {image_dir: images/train, label_dir: labels/train}
      my_val: {image_dir: images/val, label_dir: labels/val}

A folder entry with ``sparse_labels: true`` holds sparse point labels (only clicked pixels carry
a class, the ignore label elsewhere; :mod:`pointrend_d2.data.sparse_labels`), for training with
MODEL.POINT_SUPERVISION.ENABLED::

      my_train_points: {image_dir: images/train, label_dir: point_labels/train, sparse_labels: true}

A dataset entry with ``json_file`` and ``image_root`` instead is a COCO-format instance dataset,
registered by :func:`pointrend_d2.data.coco_json.register_coco_instances` (checked when loaded);
``thing_classes`` (must match the json's categories) and ``thing_colors`` are optional, and the
top-level keys above apply to folder entries only (``classes`` is needed only with one)::

    datasets:
      shapes_train: {json_file: annotations/train.json, image_root: images/train}
      shapes_val:
        json_file: annotations/val.json
        image_root: images/val
        thing_classes: [blob, ring]
        thing_colors: [[230, 25, 75], [60, 180, 75]]
"""

import functools
import json
import logging
import os
import re
from collections.abc import Sequence

import yaml
from detectron2.config import CfgNode
from detectron2.utils.colormap import colormap

from .coco_json import register_coco_instances
from .image_io import label_size_error, read_image_geometry
from .registration import register_dataset
from .sparse_labels import SPARSE_LABELS_KEY

__all__ = [
    "load_folder_dataset",
    "register_datasets_from_config",
    "register_folder_dataset",
    "register_folder_datasets_from_spec",
]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_SPEC_KEYS = {"classes", "classes_file", "colors", "ignore_label", "image_ext", "label_ext"}
_COCO_ENTRY_KEYS = {"json_file", "image_root"}
_COCO_ENTRY_OPTIONS = {"thing_classes", "thing_colors"}
_FOLDER_ENTRY_KEYS = {"image_dir", "label_dir"}


def _files_by_stem(directory: str, extensions: tuple[str, ...]) -> dict[str, str]:
    """Files under ``directory`` (recursively) with one of ``extensions``, keyed by their path
    relative to ``directory`` without the extension."""
    files = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            stem, extension = os.path.splitext(name)
            if extension.lower() not in extensions:
                continue
            key = os.path.normpath(os.path.join(os.path.relpath(parent, directory), stem))
            if key in files:
                duplicate = os.path.join(parent, name)
                raise ValueError(f"Two files share the stem {key!r}: {files[key]} and {duplicate}")
            files[key] = os.path.join(parent, name)
    return files


def _raise_for_unpaired(files: dict, partners: dict, describe, kind: str) -> None:
    """FileNotFoundError naming the first of ``files`` (by stem) without a partner, if any."""
    unpaired = sorted(set(files) - set(partners))
    if unpaired:
        more = f" (and {len(unpaired) - 1} more {kind})" if len(unpaired) > 1 else ""
        raise FileNotFoundError(describe(unpaired[0]) + more)


def load_folder_dataset(
    image_dir: str,
    label_dir: str,
    *,
    image_ext: str | Sequence[str] = DEFAULT_IMAGE_EXTS,
    label_ext: str = ".png",
    check_sizes: bool = True,
    sparse_labels: bool = False,
) -> list[dict]:
    """
    Pairs every image with the label of the same stem (relative path without extension).

    Args:
        image_dir, label_dir: the two folders; subfolders are searched too and must match.
        image_ext: extension(s) of the images (case-insensitive).
        label_ext: extension of the labels.
        check_sizes: compare each image's size with its label's, both as displayed (their EXIF
            orientation applied, see :mod:`pointrend_d2.data.image_io`; reads the file headers).
        sparse_labels: the labels are sparse point labels: each record gets
            ``sparse_labels: True`` (see :mod:`pointrend_d2.data.sparse_labels`).

    Returns:
        detectron2 dataset dicts, sorted by stem, with ``file_name``, ``sem_seg_file_name``,
        ``height``, ``width`` (as displayed) and ``image_id`` (the stem).

    Raises:
        FileNotFoundError: a folder is missing or empty, or an image has no label or a label no
            image (the message names the file).
        ValueError: an image and its label differ in size (the message says which orientation
            each has), or a file is not an image.
    """
    image_exts = (image_ext,) if isinstance(image_ext, str) else tuple(image_ext)
    images = _files_by_stem(image_dir, tuple(e.lower() for e in image_exts))
    labels = _files_by_stem(label_dir, (label_ext.lower(),))
    if not images:
        raise FileNotFoundError(f"No {'/'.join(image_exts)} images found in {image_dir}")
    _raise_for_unpaired(
        images,
        labels,
        lambda stem: f"Image {images[stem]} has no label "
        f"{os.path.join(label_dir, stem + label_ext)}",
        "images",
    )
    _raise_for_unpaired(
        labels,
        images,
        lambda stem: f"Label {labels[stem]} has no image with stem {stem!r} in {image_dir}",
        "labels",
    )

    dataset_dicts = []
    for stem in sorted(images):
        record = {
            "file_name": images[stem],
            "sem_seg_file_name": labels[stem],
            "image_id": stem,
        }
        if sparse_labels:
            record[SPARSE_LABELS_KEY] = True
        if check_sizes:
            image = read_image_geometry(images[stem], "Image")
            label = read_image_geometry(labels[stem], "Label")
            if label.size != image.size:
                image = read_image_geometry(images[stem], "Image", exact=True)
                label = read_image_geometry(labels[stem], "Label", exact=True)
                if label.size != image.size:
                    raise label_size_error(label, image)
            record["height"], record["width"] = image.size
        dataset_dicts.append(record)
    return dataset_dicts


def register_folder_dataset(
    name: str,
    image_dir: str,
    label_dir: str,
    classes: Sequence[str],
    colors: Sequence[Sequence[int]] | None = None,
    ignore_label: int = 255,
    image_ext: str | Sequence[str] = DEFAULT_IMAGE_EXTS,
    label_ext: str = ".png",
    check_sizes: bool = True,
    sparse_labels: bool = False,
) -> str:
    """
    Registers a folder dataset (see :func:`load_folder_dataset`) in detectron2's DatasetCatalog,
    evaluated by SemSegEvaluator (``evaluator_type="sem_seg"``). The folders are listed when the
    dataset is first used. Registering the same name with the same folders again does nothing.

    Args:
        name: dataset name, e.g. ``"my_data_train"``.
        image_dir, label_dir: the image and label folders.
        classes: class names; label value i is ``classes[i]``.
        colors: RGB colour per class for visualisation; detectron2's colormap if None.
        ignore_label: label value not trained on nor scored.
        image_ext, label_ext, check_sizes: see :func:`load_folder_dataset`.
        sparse_labels: the labels are sparse point labels (metadata ``sparse_labels: True``),
            to train with MODEL.POINT_SUPERVISION.ENABLED.

    Returns:
        ``name``.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: bad classes or colours, or ``name`` is registered with other folders.
    """
    image_dir, label_dir = os.path.abspath(image_dir), os.path.abspath(label_dir)
    for directory in (image_dir, label_dir):
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"Dataset {name!r}: folder {directory} does not exist")
    classes = [str(c) for c in classes]
    if not classes:
        raise ValueError(f"Dataset {name!r}: no classes given")
    if 0 <= ignore_label < len(classes):
        raise ValueError(f"Dataset {name!r}: ignore_label {ignore_label} is a class index")
    if colors is None:
        palette = colormap(rgb=True, maximum=255).astype(int).tolist()
        colors = [palette[i % len(palette)] for i in range(len(classes))]
    colors = [[int(v) for v in color] for color in colors]
    if len(colors) != len(classes) or any(len(color) != 3 for color in colors):
        raise ValueError(
            f"Dataset {name!r}: need one RGB colour per class ({len(classes)}), got {colors}"
        )

    load = functools.partial(
        load_folder_dataset,
        image_dir,
        label_dir,
        image_ext=image_ext,
        label_ext=label_ext,
        check_sizes=check_sizes,
        sparse_labels=sparse_labels,
    )
    metadata = {
        "stuff_classes": classes,
        "stuff_colors": colors,
        "ignore_label": ignore_label,
        "evaluator_type": "sem_seg",
        "image_root": image_dir,
        "sem_seg_root": label_dir,
    }
    if sparse_labels:
        metadata[SPARSE_LABELS_KEY] = True
    return register_dataset(
        name, load, metadata, identity=("image_root", "sem_seg_root", SPARSE_LABELS_KEY)
    )


def _read_spec(path: str) -> dict:
    with open(path) as f:
        spec = json.load(f) if path.lower().endswith(".json") else yaml.safe_load(f)
    if not isinstance(spec, dict):
        raise TypeError(f"Dataset spec {path}: expected a mapping at the top level")
    return spec


def _spec_folder(spec_path: str, base_dir: str, name: str, key: str, value: str) -> str:
    """
    Folder (or file) ``value`` of dataset ``name`` in a spec: environment variables (``$VAR``,
    ``${VAR}``)
    and ``~`` expanded, so that a spec kept with the code can point at the data (e.g.
    ``$DETECTRON2_DATASETS/ADEChallengeData2016``); then, if still relative, relative to the spec.

    Raises:
        FileNotFoundError: the folder does not exist and ``value`` names an unset variable.
    """
    folder = os.path.join(base_dir, os.path.expanduser(os.path.expandvars(value)))
    # expandvars leaves an unset variable in place, which would surface as a puzzling missing
    # folder named "$VAR/..." under the spec's folder: name the variable instead.
    referenced = (braced or bare for braced, bare in re.findall(r"\$(?:\{(\w+)\}|(\w+))", value))
    unset = [variable for variable in referenced if variable not in os.environ]
    if unset and not os.path.exists(folder):
        raise FileNotFoundError(
            f"Dataset spec {spec_path}: {key} {value!r} of dataset {name!r} uses the environment "
            f"variable {', '.join(unset)}, which is not set: set it to the folder that holds the "
            "data"
        )
    return folder


def _is_coco_entry(entry) -> bool:
    """Whether a spec's dataset entry is a COCO-format one (it names a json file)."""
    return isinstance(entry, dict) and bool(_COCO_ENTRY_KEYS & set(entry))


def _register_coco_entry(spec_path: str, base_dir: str, name: str, entry: dict) -> str:
    """Registers a spec's COCO-format dataset entry with register_coco_instances."""
    missing = _COCO_ENTRY_KEYS - set(entry)
    unknown = set(entry) - _COCO_ENTRY_KEYS - _COCO_ENTRY_OPTIONS
    if missing or unknown:
        problem = f"lacks {sorted(missing)}" if missing else f"has unknown keys {sorted(unknown)}"
        raise ValueError(
            f"Dataset spec {spec_path}: COCO dataset {name!r} {problem}; it takes 'json_file' and "
            f"'image_root', optionally {sorted(_COCO_ENTRY_OPTIONS)}"
        )
    metadata = {}
    if "thing_classes" in entry:
        metadata["thing_classes"] = [str(c) for c in entry["thing_classes"]]
    if "thing_colors" in entry:
        colors = entry["thing_colors"]
        if not isinstance(colors, list) or any(
            not isinstance(color, list) or len(color) != 3 for color in colors
        ):
            raise ValueError(
                f"Dataset spec {spec_path}: thing_colors of {name!r} must be a list of RGB "
                f"triples, got {colors!r}"
            )
        if "thing_classes" in metadata and len(colors) != len(metadata["thing_classes"]):
            raise ValueError(
                f"Dataset spec {spec_path}: {name!r} has {len(colors)} thing_colors for "
                f"{len(metadata['thing_classes'])} thing_classes"
            )
        metadata["thing_colors"] = [[int(v) for v in color] for color in colors]
    return register_coco_instances(
        name,
        metadata,
        _spec_folder(spec_path, base_dir, name, "json_file", entry["json_file"]),
        _spec_folder(spec_path, base_dir, name, "image_root", entry["image_root"]),
    )


def register_folder_datasets_from_spec(path: str) -> list[str]:
    """
    Registers the datasets of one spec file (format in the module docstring): folder datasets,
    and COCO-format ones. In ``image_dir``, ``label_dir``, ``json_file`` and ``image_root``,
    environment variables and ``~`` are expanded first.

    Returns:
        The registered dataset names.
    """
    spec = _read_spec(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    unknown = set(spec) - _SPEC_KEYS - {"datasets"}
    if unknown:
        raise ValueError(f"Dataset spec {path}: unknown keys {sorted(unknown)}")
    datasets = spec.get("datasets")
    if not datasets or not isinstance(datasets, dict):
        raise ValueError(f"Dataset spec {path}: 'datasets' must map names to folders")
    if any(not _is_coco_entry(entry) for entry in datasets.values()):
        if ("classes" in spec) == ("classes_file" in spec):
            raise ValueError(
                f"Dataset spec {path}: give exactly one of 'classes' and 'classes_file'"
            )
        if "classes_file" in spec:
            with open(os.path.join(base_dir, spec["classes_file"])) as f:
                classes = [line.strip() for line in f if line.strip()]
        else:
            classes = spec["classes"]
    options = {key: spec[key] for key in _SPEC_KEYS - {"classes", "classes_file"} if key in spec}
    names = []
    for name, folders in datasets.items():
        if _is_coco_entry(folders):
            names.append(_register_coco_entry(path, base_dir, name, folders))
            continue
        if not isinstance(folders, dict) or not (
            _FOLDER_ENTRY_KEYS <= set(folders) <= _FOLDER_ENTRY_KEYS | {SPARSE_LABELS_KEY}
        ):
            raise ValueError(
                f"Dataset spec {path}: {name!r} needs exactly 'image_dir' and 'label_dir', "
                f"optionally {SPARSE_LABELS_KEY!r} (a folder dataset), or 'json_file' and "
                "'image_root' (COCO format)"
            )
        sparse_labels = folders.get(SPARSE_LABELS_KEY, False)
        if not isinstance(sparse_labels, bool):
            raise ValueError(
                f"Dataset spec {path}: {SPARSE_LABELS_KEY} of {name!r} must be true or false, "
                f"got {sparse_labels!r}"
            )
        names.append(
            register_folder_dataset(
                name,
                _spec_folder(path, base_dir, name, "image_dir", folders["image_dir"]),
                _spec_folder(path, base_dir, name, "label_dir", folders["label_dir"]),
                classes,
                sparse_labels=sparse_labels,
                **options,
            )
        )
    return names


def register_datasets_from_config(cfg: CfgNode) -> list[str]:
    """
    Registers the datasets of every spec file in ``cfg.DATASETS.FOLDER_SPECS`` (paths relative
    to the working directory). Call it before building the model's data loaders and evaluators.

    Their classes are checked against MODEL.SEM_SEG_HEAD.NUM_CLASSES where the datasets are used,
    by :func:`pointrend_d2.data.catalog.validate_dataset_classes` (the Trainer calls it).

    Returns:
        The registered dataset names.
    """
    names = []
    for path in cfg.DATASETS.FOLDER_SPECS:
        names.extend(register_folder_datasets_from_spec(path))
    if names:
        logger.info("Registered folder datasets: %s", ", ".join(names))
    return names
