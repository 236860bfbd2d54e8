"""
What the generated datasets (the textured shapes, semantic and instances) share: file names,
cache folders keyed by every generation parameter, written once and atomically, and their
registration, split by split.
"""

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import cv2
import numpy as np

from .registration import register_dataset

__all__ = [
    "keyed_split_dir",
    "register_generated_splits",
    "split_file_stem",
    "write_rgb_png",
    "write_split_once",
]

logger = logging.getLogger(__name__)


def split_file_stem(split: str, index: int) -> str:
    """The file stem of image ``index`` of ``split``: ``"<split>_0007"``."""
    return f"{split}_{index:04d}"


def keyed_split_dir(root: str, stem: str, parameters: dict) -> str:
    """``<root>/<stem>-<key>``, ``<key>`` a hash of ``parameters`` (JSON-serialisable)."""
    key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode("utf-8")).hexdigest()
    return os.path.join(root, f"{stem}-{key[:16]}")


def write_rgb_png(path: str, image: np.ndarray) -> None:
    """Writes an RGB uint8 image as PNG; OSError naming the path if that fails."""
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write {path}")


def write_split_once(
    root: str,
    split_dir: str,
    split: str,
    parameters: dict,
    write: Callable[[str], None],
    description: str,
) -> str:
    """
    Creates ``split_dir`` (a folder in ``root``) with the files ``write(folder)`` writes into
    ``folder`` and ``parameters.json``, unless it exists: then it is returned as is.

    Safe against crashes and concurrent callers: the files are written into a temporary sibling
    directory that is renamed into place, so an existing ``split_dir`` is always complete. If
    another process finishes first, this call's copy is discarded.
    """
    if os.path.isdir(split_dir):
        return split_dir
    os.makedirs(root, exist_ok=True)
    logger.info("Generating %s into %s ...", description, split_dir)
    start_time = time.perf_counter()
    temporary_dir = tempfile.mkdtemp(prefix=f".{split}.incomplete-", dir=root)
    try:
        write(temporary_dir)
        # For whoever looks into the cache: the key itself cannot be read back.
        with open(os.path.join(temporary_dir, "parameters.json"), "w") as f:
            json.dump(parameters, f, indent=2)
        try:
            os.rename(temporary_dir, split_dir)
        except OSError:
            if not os.path.isdir(split_dir):
                raise
            logger.info("Another process generated %s first; discarding this copy.", split_dir)
        else:
            logger.info("Generated %s in %.1f s.", split_dir, time.perf_counter() - start_time)
    finally:
        # Still there only if the rename did not happen (error, or another process won).
        shutil.rmtree(temporary_dir, ignore_errors=True)
    return split_dir


def register_generated_splits(
    prefix: str,
    num_images_by_split: dict[str, int],
    split_dir: Callable[[str, int], str],
    load_split: Callable[[str, int, str], list[dict]],
    metadata: Callable[[str], dict],
) -> list[str]:
    """
    Registers ``f"{prefix}_{split}"`` for each split of a generated dataset with
    :func:`~pointrend_d2.data.registration.register_dataset` (lazily:
    ``load_split(split, num_images, name)`` generates and loads it on first use) and
    ``metadata(split_dir)``, which must set ``image_root`` to ``<split_dir>/images``: the split
    folder's name holds the root and every generation parameter, so a name registered again
    with the same ``image_root`` is the same dataset.

    Returns:
        The registered names, in the order of ``num_images_by_split``.

    Raises:
        ValueError: if a name is already registered with another split folder (another root or
            other generation parameters).
    """
    return [
        register_dataset(
            f"{prefix}_{split}",
            functools.partial(load_split, split, num_images, f"{prefix}_{split}"),
            metadata(split_dir(split, num_images)),
            identity=("image_root",),
        )
        for split, num_images in num_images_by_split.items()
    ]
