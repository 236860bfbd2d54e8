"""
The stages of a PointRend model's prediction, from one inference run of the unchanged model: its
output, and what it would predict without (part of) the subdivision, for the size-and-thinness
evaluators (:class:`SemSegSizeThinnessEvaluator`, :class:`COCOSizeThinnessEvaluator`) to tell
"the coarse map missed it" from "refinement damaged it".

The backbone's feature maps are kept with a forward hook on ``model.backbone`` for the run; the
coarse predictions are computed from them with the heads' own methods.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn
from torch.nn import functional as F

from ..modeling.coarse_head import expand_foreground_logit
from ..modeling.mask_head import PointRendInstanceMaskHead
from ..modeling.meta_arch import crop_and_resize_logits
from ..modeling.point_features import regular_grid_points
from ..modeling.semantic_seg import PointRendSemanticHead

__all__ = [
    "INSTANCE_STAGES",
    "SEMANTIC_STAGES",
    "instance_stage_outputs",
    "instance_stage_sides",
    "semantic_stage_outputs",
]

#: The outputs of :func:`semantic_stage_outputs`, coarse first.
SEMANTIC_STAGES = ("coarse_sem_seg", "sem_seg")
#: The mask fields of the instances of :func:`instance_stage_outputs`, coarse first.
INSTANCE_STAGES = ("coarse_masks", "initial_masks", "pred_masks")


@contextmanager
def _backbone_features(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """A dict that holds the backbone's output maps of the last forward run in the block."""
    features: dict[str, Tensor] = {}
    handle = model.backbone.register_forward_hook(
        lambda _module, _inputs, output: features.update(output)
    )
    try:
        yield features
    finally:
        handle.remove()


@torch.no_grad()
def semantic_stage_outputs(model: nn.Module, batched_inputs: list[dict]) -> list[dict]:
    """
    Runs a semantic PointRend model (``sem_seg_head`` a :class:`PointRendSemanticHead`) once.

    Args:
        model: the model, in eval mode.
        batched_inputs: its inputs.

    Returns:
        Its outputs, each with ``"sem_seg"`` (the model's, refined by subdivision) and
        ``"coarse_sem_seg"``: the coarse head's logits upsampled bilinearly by its stride to the
        input (what the coarse head alone outputs, without subdivision), then cut to the image
        and resized to the output size exactly as the model's output is; (K', H, W) each.
    """
    head = getattr(model, "sem_seg_head", None)
    if not isinstance(head, PointRendSemanticHead):
        raise TypeError(
            "The coarse stage of a semantic model needs MODEL.SEM_SEG_HEAD.NAME "
            f"PointRendSemanticHead, not {type(head).__name__}"
        )
    with _backbone_features(model) as features:
        outputs = model(batched_inputs)
    coarse_head = head.coarse_sem_seg_head
    coarse_logits = F.interpolate(
        coarse_head.layers(features),
        scale_factor=coarse_head.common_stride,
        mode="bilinear",
        align_corners=False,
    )
    for output, logits, batched_input in zip(
        outputs, expand_foreground_logit(coarse_logits), batched_inputs, strict=True
    ):
        image_size = tuple(batched_input["image"].shape[-2:])
        height = batched_input.get("height", image_size[0])
        width = batched_input.get("width", image_size[1])
        output["coarse_sem_seg"] = crop_and_resize_logits(logits, image_size, height, width)
    return outputs


def _point_rend_mask_head(model: nn.Module) -> PointRendInstanceMaskHead:
    mask_head = getattr(getattr(model, "roi_heads", None), "mask_head", None)
    if not isinstance(model, GeneralizedRCNN) or not isinstance(
        mask_head, PointRendInstanceMaskHead
    ):
        raise TypeError(
            "The coarse stages of an instance model need a GeneralizedRCNN with "
            f"MODEL.ROI_MASK_HEAD.NAME PointRendInstanceMaskHead, not {type(mask_head).__name__}"
        )
    return mask_head


def instance_stage_sides(model: nn.Module) -> dict[str, int]:
    """The side of each stage's per-box mask grid of a PointRend Mask R-CNN, by mask field of
    :data:`INSTANCE_STAGES`."""
    mask_head = _point_rend_mask_head(model)
    initial = mask_head.initial_resolution
    return {
        "coarse_masks": mask_head.coarse_head.output_side_resolution,
        "initial_masks": initial,
        "pred_masks": initial * 2**mask_head.subdivision_steps,
    }


@torch.no_grad()
def instance_stage_outputs(model: nn.Module, batched_inputs: list[dict]) -> list[dict]:
    """
    Runs a PointRend Mask R-CNN (``roi_heads.mask_head`` a :class:`PointRendInstanceMaskHead`)
    once.

    Args:
        model: the model, in eval mode.
        batched_inputs: its inputs.

    Returns:
        Its outputs: each ``{"instances": ...}`` with the model's detections and masks
        (``pred_masks``, refined by subdivision), and for the same detections ``coarse_masks``
        (the coarse head's S x S logits) and ``initial_masks`` (the point head's logits at every
        cell of the grid subdivision starts from, 28 x 28 by default): (R, H, W) bool each. The
        logits of each stage are upsampled bilinearly to the side of the refined ones, then
        turned into probabilities and pasted into the image exactly as the model's are.
    """
    mask_head = _point_rend_mask_head(model)
    with _backbone_features(model) as features:
        detections = model.inference(batched_inputs, do_postprocess=False)
    boxes = [d.pred_boxes.tensor for d in detections]
    classes = torch.cat([d.pred_classes for d in detections])
    side = instance_stage_sides(model)["pred_masks"]
    stage_logits = {
        field: classes.new_zeros((0, 1, side, side), dtype=torch.float32)
        for field in INSTANCE_STAGES[:-1]
    }
    if len(classes):
        mask_features = {name: features[name] for name in model.roi_heads.mask_in_features}
        coarse_logits = mask_head.coarse_logits(mask_features, boxes)
        initial = mask_head.initial_resolution
        grid = regular_grid_points(len(classes), initial, coarse_logits.device)
        initial_logits = mask_head.predict_points(
            mask_features, boxes, coarse_logits, grid, classes
        ).view(-1, 1, initial, initial)
        if coarse_logits.shape[1] > 1:  # the logit of each box's class
            coarse_logits = coarse_logits[
                torch.arange(len(classes), device=classes.device), classes
            ].unsqueeze(1)
        for field, logits in (("coarse_masks", coarse_logits), ("initial_masks", initial_logits)):
            stage_logits[field] = F.interpolate(
                logits, size=(side, side), mode="bilinear", align_corners=False
            )
    counts = [len(d) for d in detections]
    stage_probabilities = {
        field: logits.sigmoid().split(counts) for field, logits in stage_logits.items()
    }
    outputs = []
    for index, (image_detections, batched_input) in enumerate(
        zip(detections, batched_inputs, strict=True)
    ):
        height = batched_input.get("height", image_detections.image_size[0])
        width = batched_input.get("width", image_detections.image_size[1])
        # detector_postprocess scales the boxes in place: each stage pastes into its own copy.
        instances = _postprocess(image_detections, image_detections.pred_masks, height, width)
        for field, probabilities in stage_probabilities.items():
            staged = _postprocess(image_detections, probabilities[index], height, width)
            instances.set(field, staged.pred_masks)
        outputs.append({"instances": instances})
    return outputs


def _postprocess(detections: Instances, masks: Tensor, height: int, width: int) -> Instances:
    """``detector_postprocess`` (the model's own) of the detections with (R, 1, M, M) mask
    probabilities ``masks``, on a copy of their boxes."""
    instances = Instances(
        detections.image_size,
        pred_boxes=Boxes(detections.pred_boxes.tensor.clone()),
        scores=detections.scores,
        pred_classes=detections.pred_classes,
        pred_masks=masks,
    )
    return detector_postprocess(instances, height, width)
