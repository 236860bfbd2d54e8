"""
The dataset mapper for instance segmentation: detectron2's ``DatasetMapper`` (augmentations,
annotations to ``Instances``, precomputed proposals), with the image read by pointrend_d2's one
reader (:class:`pointrend_d2.data.image_io.ImageReader`): a missing, truncated or corrupt image
is named, and its size is checked as displayed, EXIF orientation applied, with advice. Point
annotations (:mod:`pointrend_d2.data.point_annotations`) follow the image's augmentations into
the ``gt_point_coords`` and ``gt_point_labels`` fields of the instances.
"""

import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import ImageReader
from .point_annotations import has_point_annotations, point_instance_fields

__all__ = ["InstanceDatasetMapper"]


class InstanceDatasetMapper(DatasetMapper):
    """
    detectron2's ``DatasetMapper`` for COCO-style instance records (``file_name``, ``height``,
    ``width``, ``annotations``), built from a config as it is (``InstanceDatasetMapper(cfg,
    is_train)``), reading images through :class:`~pointrend_d2.data.image_io.ImageReader`.
    Records with a ``sem_seg_file_name`` (panoptic data) are not instance records: their label
    file is not read. Annotations with points (``point_coords``, ``point_labels``) give the
    instances ``gt_point_coords`` (R, P, 2) and ``gt_point_labels`` (R, P) too, moved with the
    image (resize, flip, crop; -1 labels for padding and for points cropped away).
    """

    @configurable
    def __init__(self, is_train: bool, **kwargs):
        """Arguments as detectron2's ``DatasetMapper``."""
        super().__init__(is_train, **kwargs)
        self.image_reader = ImageReader(self.image_format)

    def __call__(self, dataset_dict: dict) -> dict:
        """
        Args:
            dataset_dict: a record in detectron2's dataset format.

        Returns:
            as detectron2's ``DatasetMapper``: a copy of the record with ``image`` and, in
            training, ``instances`` instead of ``annotations``.

        Raises:
            FileNotFoundError, ValueError: naming the image file (detectron2's SizeMismatchError,
                a ValueError, for a size other than the record's).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self.image_reader.read_record(dataset_dict)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.proposal_topk is not None:
            utils.transform_proposals(
                dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk
            )
        if not self.is_train:
            dataset_dict.pop("annotations", None)
        elif "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict

    def _transform_annotations(self, dataset_dict: dict, transforms, image_shape) -> None:
        """
        detectron2's steps, and for annotations with points also the point fields. detectron2's
        method drops the emptied instances at its end, so with points its steps are taken here
        and the point fields set before that; boxes are recomputed from masks after a crop only
        where there are masks.
        """
        if not has_point_annotations(dataset_dict["annotations"]):
            super()._transform_annotations(dataset_dict, transforms, image_shape)
            return
        annotations = [a for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        for annotation in annotations:
            if not self.use_instance_mask:
                annotation.pop("segmentation", None)
            if not self.use_keypoint:
                annotation.pop("keypoints", None)
        transformed = [
            utils.transform_instance_annotations(
                annotation,
                transforms,
                image_shape,
                keypoint_hflip_indices=self.keypoint_hflip_indices,
            )
            for annotation in annotations
        ]
        instances = utils.annotations_to_instances(
            transformed, image_shape, mask_format=self.instance_mask_format
        )
        if self.recompute_boxes and instances.has("gt_masks"):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        instances.gt_point_coords, instances.gt_point_labels = point_instance_fields(
            annotations, transforms, image_shape
        )
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
