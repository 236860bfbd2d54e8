"""
The dataset mapper for semantic segmentation: reads a record's image and label file, checks them
(errors name the file), applies the augmentations and returns tensors for the model.

Images are read by :class:`pointrend_d2.data.image_io.ImageReader` (modes, EXIF orientation).
Labels: single-channel integer images (PIL modes L, P, I;16, I, 1) of the image's size as
displayed (both files' EXIF orientation applied), whose values are class indices ``0..K-1``
(``0..1`` for a single foreground logit, K = 1) or the ignore value. Colour-coded labels (RGB)
are refused: they must be converted to indices first. Sparse point labels (records marked by a
dataset registered with ``sparse_labels``) follow the augmentations as points, see
:mod:`pointrend_d2.data.sparse_labels`.
"""

import copy

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentation import build_semantic_train_augmentation
from .image_io import ImageReader, label_size_error, read_image_file, read_image_geometry
from .sparse_labels import SPARSE_LABELS_KEY, transform_sparse_labels

__all__ = ["SemanticDatasetMapper", "read_label_file"]


def read_label_file(file_name: str) -> np.ndarray:
    """
    The (H, W) integer labels of a label file, as displayed (see the module docstring).

    Raises:
        FileNotFoundError, ValueError: naming the file; a ValueError for colour (not
            single-channel integer) labels.
    """
    label_image = read_image_file(file_name, "Label")
    if len(label_image.getbands()) != 1 or label_image.mode == "F":
        raise ValueError(
            f"Label file {file_name} has PIL mode {label_image.mode}; labels must be "
            "single-channel integer class indices (mode L, P, I;16 or I), not colours"
        )
    labels = np.asarray(label_image)
    return labels.astype(np.uint8) if labels.dtype == np.bool_ else labels  # mode "1"


class SemanticDatasetMapper(DatasetMapper):
    """
    Maps a semantic-segmentation record (``file_name``, optionally ``sem_seg_file_name``,
    ``height``, ``width``) to the model's input: ``image`` (3, H, W) uint8 in ``image_format`` and
    ``sem_seg`` (H, W) int64 labels, after the augmentations. Checks each record (see the module
    docstring), with errors that name the file.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list[T.Augmentation | T.Transform],
        image_format: str,
        num_classes: int,
        ignore_value: int,
    ):
        """
        Args:
            is_train: whether the records are for training (only the log differs).
            augmentations: applied to the image and its labels, in order.
            image_format: an image format of :func:`detectron2.data.detection_utils.read_image`.
            num_classes: K, MODEL.SEM_SEG_HEAD.NUM_CLASSES (1 for a sigmoid foreground logit).
            ignore_value: the label value of ignored pixels.
        """
        super().__init__(is_train, augmentations=augmentations, image_format=image_format)
        self.image_reader = ImageReader(image_format)
        self.num_classes = num_classes
        # A single foreground logit is trained on labels 0 (background) and 1 (foreground).
        self.num_label_values = max(num_classes, 2)
        self.ignore_value = ignore_value
        # Valid labels are stored as uint8 when they fit, like detectron2's label PNGs.
        fits_uint8 = self.num_label_values <= 256 and 0 <= ignore_value <= 255
        self.label_dtype = np.uint8 if fits_uint8 else np.int32

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True):
        if is_train:
            augmentations = build_semantic_train_augmentation(cfg)
        else:
            augmentations = utils.build_augmentation(cfg, is_train=False)
        return {
            "is_train": is_train,
            "augmentations": augmentations,
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        """
        Args:
            dataset_dict: a record in detectron2's dataset format.

        Returns:
            a copy of the record with ``image`` and, for a labelled record, ``sem_seg`` instead of
            ``sem_seg_file_name``.

        Raises:
            FileNotFoundError, ValueError: naming the file (see the module docstring).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self.image_reader.read_record(dataset_dict)
        label_file = dataset_dict.pop("sem_seg_file_name", None)
        sparse_labels = dataset_dict.pop(SPARSE_LABELS_KEY, False)
        labels = (
            None
            if label_file is None
            else self.read_labels(label_file, dataset_dict["file_name"], image)
        )

        aug_input = T.AugInput(image, sem_seg=labels)
        transforms = self.augmentations(aug_input)
        dataset_dict["image"] = torch.as_tensor(
            np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))
        )
        if labels is not None and sparse_labels:
            # The crop's category-area constraint saw the resampled map: it counts the labelled
            # pixels that a resize kept, not areas.
            aug_input.sem_seg = transform_sparse_labels(
                labels, transforms, aug_input.image.shape[:2], self.ignore_value
            )
        if labels is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        return dataset_dict

    def read_labels(self, file_name: str, image_file: str, image: np.ndarray) -> np.ndarray:
        """
        (H, W) labels of ``image_file``, checked: single-channel integers of the image's size,
        each a class index or the ignore value.

        Args:
            file_name: the label file.
            image_file: the image file, for the error messages.
            image: (H, W, C) the decoded image.

        Returns:
            (H, W) labels, uint8 when the label values fit (else int32).
        """
        labels = read_label_file(file_name)
        if labels.shape != image.shape[:2]:
            raise label_size_error(
                read_image_geometry(file_name, "Label", exact=True),
                read_image_geometry(image_file, "Image", exact=True),
            )
        self.check_label_values(labels, file_name)
        return labels.astype(self.label_dtype, copy=False)

    def check_label_values(self, labels: np.ndarray, file_name: str) -> None:
        """Raise a ValueError naming ``file_name`` if a label is neither a class nor ignored."""
        if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
            # A histogram is cheaper than np.unique's sort on small unsigned types.
            present = np.flatnonzero(np.bincount(labels.ravel()))
        else:
            present = np.unique(labels)
        valid = ((present >= 0) & (present < self.num_label_values)) | (
            present == self.ignore_value
        )
        if not valid.all():
            invalid = present[~valid]
            raise ValueError(
                f"Label file {file_name} has values {invalid[:10].tolist()}"
                f"{' ...' if len(invalid) > 10 else ''} that are neither a class index "
                f"(0..{self.num_label_values - 1}, MODEL.SEM_SEG_HEAD.NUM_CLASSES="
                f"{self.num_classes}) nor the ignore value {self.ignore_value} "
                "(MODEL.SEM_SEG_HEAD.IGNORE_VALUE)"
            )
