"""
COCO instance evaluation of ground-truth json files as labelling tools write them. pycocotools
2.0.10's evaluation reads keys that such files often lack and that detectron2's training does
not need: without them a model trains for its whole schedule, then fails at evaluation with a
bare KeyError ('info', 'iscrowd' or 'area'). :class:`COCOInstanceEvaluator` completes the
ground truth it loads instead, so every json that the dataset checks
(:mod:`pointrend_d2.data.coco_json`) pass can be evaluated.
"""

import pycocotools.mask as mask_util
from detectron2.evaluation import COCOEvaluator
from pycocotools.coco import COCO

__all__ = ["COCOInstanceEvaluator", "complete_coco_ground_truth"]


def complete_coco_ground_truth(coco: COCO) -> None:
    """
    Adds, in place, what pycocotools' evaluation reads but a loaded ground truth lacks: an empty
    ``info`` (``loadRes`` copies it), ``iscrowd`` 0 (as detectron2's training reads a missing
    one) and ``area``, the pixels of the segmentation (COCO's definition), or of the box for an
    annotation without one. Keys present are left as they are.
    """
    coco.dataset.setdefault("info", {})
    for annotation in coco.dataset.get("annotations", []):
        annotation.setdefault("iscrowd", 0)
        if "area" not in annotation:
            if annotation.get("segmentation"):
                area = mask_util.area(coco.annToRLE(annotation))
            else:
                area = annotation["bbox"][2] * annotation["bbox"][3]
            annotation["area"] = float(area)


class COCOInstanceEvaluator(COCOEvaluator):
    """
    detectron2's ``COCOEvaluator`` (same arguments) whose ground truth is completed by
    :func:`complete_coco_ground_truth`, so that json files without ``info``, ``iscrowd`` or
    ``area`` are evaluated.
    """

    def __init__(self, dataset_name: str, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        complete_coco_ground_truth(self._coco_api)
