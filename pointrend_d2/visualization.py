"""
Pictures of semantic and instance segmentation and of PointRend's adaptive subdivision: coloured
overlays, per-step panels of the refined points (with the uncertainty map for semantic models, the
masks so far for instance models), and side-by-side crops.

Images here are (H, W, 3) uint8 RGB numpy arrays; label maps are (H, W) integer arrays.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.modeling import GeneralizedRCNN, SemanticSegmentor
from detectron2.structures import ImageList, Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, GenericMask, Visualizer

from .modeling import subdivision
from .modeling.coarse_head import expand_foreground_logit
from .modeling.mask_head import PointRendInstanceMaskHead
from .modeling.meta_arch import ExactSizeSemanticSegmentor
from .modeling.paste import BoxMasks, postprocess_detections
from .modeling.point_features import box_points_to_image, calculate_uncertainty
from .modeling.semantic_seg import PointRendSemanticHead

__all__ = [
    "InstanceSubdivisionStep",
    "SemanticSubdivisionStep",
    "colorize_labels",
    "draw_instance_subdivision_step",
    "draw_subdivision_step",
    "mask_polygons",
    "overlay_instances",
    "overlay_sem_seg",
    "trace_instance_subdivision",
    "trace_subdivision",
]


@dataclass
class SemanticSubdivisionStep:
    """
    One adaptive-subdivision step of semantic PointRend inference, as drawn: in the frame of the
    output image.

    Attributes:
        uncertainty: (h, w) float32 uncertainty of the 2x-upsampled logits that chose this step's
            points (higher is more uncertain), at the step's resolution, padding cropped off.
        points: (P, 2) float32 ``(x, y)`` centres of the re-predicted cells, in output-image pixels.
        labels: (h, w) int64 argmax of the logits after this step, padding cropped off.
    """

    uncertainty: np.ndarray
    points: np.ndarray
    labels: np.ndarray


@torch.no_grad()
def trace_subdivision(
    model: SemanticSegmentor, batched_input: dict
) -> list[SemanticSubdivisionStep]:
    """
    Runs PointRend's subdivision inference for one image, the head's own implementation and
    settings, and records every step: the final labels are the model's (tested).

    Args:
        model: a SemanticSegmentor whose ``sem_seg_head`` is a :class:`PointRendSemanticHead`.
        batched_input: one model input: ``image`` (C, H, W) in the model's input format and size,
            ``height`` and ``width`` of the output image.

    Returns:
        One :class:`SemanticSubdivisionStep` per subdivision step.
    """
    head = model.sem_seg_head
    if not isinstance(head, PointRendSemanticHead):
        raise TypeError(
            f"Tracing the subdivision needs a PointRendSemanticHead, not {type(head).__name__}"
        )
    input_height, input_width = batched_input["image"].shape[-2:]
    tile_size = model.tile_size if isinstance(model, ExactSizeSemanticSegmentor) else 0
    if 0 < tile_size < max(input_height, input_width):
        raise ValueError(
            "Tracing the subdivision runs whole-image inference, but this model segments a "
            f"{input_height}x{input_width} input in tiles (TEST.TILE.SIZE {tile_size}): trace a "
            "smaller image, or set TEST.TILE.SIZE 0"
        )
    image = (batched_input["image"].to(model.device) - model.pixel_mean) / model.pixel_std
    images = ImageList.from_tensors(
        [image],
        model.backbone.size_divisibility,
        padding_constraints=model.backbone.padding_constraints,
    )
    features = model.backbone(images.tensor)
    coarse_logits = head.coarse_sem_seg_head.layers(features)

    padded_height, padded_width = images.tensor.shape[-2:]
    output_height = batched_input.get("height", input_height)
    output_width = batched_input.get("width", input_width)
    # Points are in [0, 1] of the padded input; the output image covers its unpadded part.
    to_output = np.array(
        [
            padded_width * output_width / input_width,
            padded_height * output_height / input_height,
        ],
        dtype=np.float32,
    )

    steps = []

    def record(step: subdivision.SubdivisionStep) -> None:
        height, width = step.refined.shape[-2:]
        # The cells of this step's grid that lie on the unpadded image.
        valid_rows = -(-input_height * height // padded_height)
        valid_cols = -(-input_width * width // padded_width)
        uncertainty = calculate_uncertainty(step.upsampled)[0, 0, :valid_rows, :valid_cols]
        # A single foreground logit labels as the model's output does: [0, logit].
        labels = expand_foreground_logit(step.refined)[0, :, :valid_rows, :valid_cols].argmax(0)
        steps.append(
            SemanticSubdivisionStep(
                uncertainty=uncertainty.float().cpu().numpy(),
                points=step.point_coords[0].cpu().numpy() * to_output,
                labels=labels.cpu().numpy(),
            )
        )

    # The head's own subdivision, with its settings; on_step records each step.
    head.subdivision_inference(features, coarse_logits, on_step=record)
    return steps


def colorize_labels(labels: np.ndarray, colors: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 RGB; labels without a colour (ignore) are black."""
    palette = np.zeros((256 if labels.max(initial=0) < 256 else labels.max() + 1, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    return palette[labels]


def overlay_sem_seg(image: np.ndarray, labels: np.ndarray, metadata: Metadata) -> np.ndarray:
    """The labels drawn over the image in ``metadata.stuff_colors``, with class names."""
    visualizer = Visualizer(image, metadata, instance_mode=ColorMode.IMAGE)
    return visualizer.draw_sem_seg(labels, alpha=0.5).get_image()


def _uncertainty_heatmap(uncertainty: np.ndarray, height: int, width: int) -> np.ndarray:
    """Uncertainty scaled to [0, 255] per image and drawn with the inferno colour map, RGB."""
    low, high = float(uncertainty.min()), float(uncertainty.max())
    scaled = (uncertainty - low) / max(high - low, 1e-6)
    resized = cv2.resize(scaled, (width, height), interpolation=cv2.INTER_NEAREST)
    heatmap = cv2.applyColorMap(np.uint8(resized * 255), cv2.COLORMAP_INFERNO)
    return cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)


def draw_subdivision_step(
    image: np.ndarray, step: SemanticSubdivisionStep, step_index: int, point_color=(255, 40, 40)
) -> np.ndarray:
    """
    A panel for one subdivision step: left, the image (dimmed) with the step's refined points;
    right, the uncertainty map that selected them (bright = uncertain).

    Args:
        image: (H, W, 3) uint8 RGB output image.
        step: the step, as returned by :func:`trace_subdivision`.
        step_index: 1-based step number, for the caption.

    Returns:
        (H, 2 W, 3) uint8 RGB panel.
    """
    height, width = image.shape[:2]
    points_view = _dim(image)
    num_drawn = _draw_points(points_view, step.points, np.asarray(point_color, np.uint8))
    uncertainty_view = _uncertainty_heatmap(step.uncertainty, height, width)
    step_height, step_width = step.uncertainty.shape
    _caption(points_view, f"step {step_index}: {num_drawn} points refined")
    _caption(uncertainty_view, f"uncertainty at {step_height}x{step_width}")
    return np.concatenate([points_view, uncertainty_view], axis=1)


def _dim(image: np.ndarray) -> np.ndarray:
    """The image darkened to 60%, a background on which points stand out."""
    return (image.astype(np.float32) * 0.6).astype(np.uint8)


def _draw_points(view: np.ndarray, points: np.ndarray, colors: np.ndarray) -> int:
    """
    Draw (P, 2) ``(x, y)`` pixel points into ``view`` in place, in one (3,) colour or (P, 3)
    colours; returns how many lie on the image.
    """
    height, width = view.shape[:2]
    pixels = np.floor(points).astype(int)
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0)
    inside &= pixels[:, 1] < height
    if colors.ndim == 2:
        colors = colors[inside]
    # One pixel per point plus its 4-neighbours, so that points stay visible when scaled down.
    for dy, dx in ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)):
        rows = np.clip(pixels[inside, 1] + dy, 0, height - 1)
        cols = np.clip(pixels[inside, 0] + dx, 0, width - 1)
        view[rows, cols] = colors
    return int(inside.sum())


def _caption(view: np.ndarray, caption: str) -> None:
    """Write a caption at the top left of ``view`` in place, white on a black outline."""
    scale = max(view.shape[0] / 512, 0.4)
    origin = (5, int(20 * scale) + 2)
    cv2.putText(view, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), 3)
    cv2.putText(view, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255,) * 3, 1)


@dataclass
class InstanceSubdivisionStep:
    """
    One adaptive-subdivision step of PointRend's instance mask head, for the detections of one
    image, in the frame of the output image (the order of the detections of
    :func:`trace_instance_subdivision`).

    Attributes:
        points: (R, P, 2) float32 ``(x, y)`` centres of each detection's re-predicted cells, in
            output-image pixels (box-normalized points mapped through the detection's box).
        masks: the R masks after this step: the step's logits of each detection's class pasted
            into its box (probability >= 0.5) when read, as detectron2 pastes the final masks.
        resolution: side of the per-box logit grid after this step.
    """

    points: np.ndarray
    masks: BoxMasks
    resolution: int


@torch.no_grad()
def trace_instance_subdivision(
    model: GeneralizedRCNN, batched_input: dict
) -> tuple[Instances, list[InstanceSubdivisionStep]]:
    """
    Runs a PointRend Mask R-CNN on one image and records every subdivision step of its mask head
    (the head's own ``subdivision_inference``, with its settings, on the detected boxes).

    Args:
        model: a GeneralizedRCNN whose ``roi_heads.mask_head`` is a
            :class:`~pointrend_d2.mask_head.PointRendInstanceMaskHead`.
        batched_input: one model input: ``image`` (C, H, W) in the model's input format and size,
            ``height`` and ``width`` of the output image.

    Returns:
        The model's detections at the output size, on the CPU (what ``model([batched_input])``
        returns as ``instances``, with its ``pred_masks`` as :class:`BoxMasks`: the last step's
        masks, tested), and one
        :class:`InstanceSubdivisionStep` per subdivision step, its detections in that order.
    """
    mask_head = getattr(getattr(model, "roi_heads", None), "mask_head", None)
    if not isinstance(mask_head, PointRendInstanceMaskHead):
        raise TypeError(
            "Tracing the instance subdivision needs ROI_MASK_HEAD.NAME PointRendInstanceMaskHead, "
            f"not {type(mask_head).__name__}"
        )
    if model.proposal_generator is None:
        raise TypeError("Tracing the instance subdivision needs a model with a proposal generator")
    images = model.preprocess_image([batched_input])
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    detections = model.roi_heads(images, features, proposals, None)[0][0]
    input_height, input_width = images.image_sizes[0]
    output_height = batched_input.get("height", input_height)
    output_width = batched_input.get("width", input_width)
    # The postprocessing scales the boxes in place and drops empty ones: keep the input-frame
    # boxes for the points and an index to follow the detections it keeps.
    input_boxes = detections.pred_boxes.tensor.clone()
    detections.trace_index = torch.arange(len(detections), device=input_boxes.device)
    results = postprocess_detections(detections, output_height, output_width)
    keep = results.trace_index
    results.remove("trace_index")
    to_output = input_boxes.new_tensor([output_width / input_width, output_height / input_height])

    steps = []

    def record(step: subdivision.SubdivisionStep) -> None:
        points = box_points_to_image(input_boxes, step.point_coords)[keep] * to_output
        probabilities = step.refined[keep, 0].sigmoid()
        masks = BoxMasks(probabilities, results.pred_boxes.tensor, (output_height, output_width))
        steps.append(
            InstanceSubdivisionStep(
                points=points.float().cpu().numpy(),
                masks=masks.to("cpu"),
                resolution=step.refined.shape[-1],
            )
        )

    mask_features = {name: features[name] for name in model.roi_heads.mask_in_features}
    mask_head.subdivision_inference(
        mask_features, [input_boxes], detections.pred_classes, on_step=record
    )
    return results.to("cpu"), steps


def instance_colors(num_instances: int) -> np.ndarray:
    """(R, 3) uint8 RGB colours, one per detection, from detectron2's fixed colour map."""
    palette = colormap(rgb=True, maximum=255).astype(np.uint8)
    return palette[np.arange(num_instances) % len(palette)]


def mask_polygons(masks: BoxMasks) -> np.ndarray:
    """
    The outlines that detectron2's Visualizer draws for each mask (``GenericMask.polygons``: a
    list of flat ``[x, y, x, y, ...]`` arrays in image pixels), traced within each mask's box
    region only: the same polygons as from the whole-image mask, whose pixels outside the region
    are all 0.

    Returns:
        (R,) object array of the R polygon lists.
    """
    polygons = np.empty(len(masks), dtype=object)
    for index in range(len(masks)):
        crop, (rows, columns) = masks.crop(index)
        height, width = crop.shape
        outlines = GenericMask(crop.cpu().numpy(), height, width).polygons
        offset = np.array([columns.start, rows.start])
        polygons[index] = [outline + np.resize(offset, len(outline)) for outline in outlines]
    return polygons


def overlay_instances(image: np.ndarray, instances: Instances, metadata: Metadata) -> np.ndarray:
    """
    Detections drawn over the image by detectron2's ``Visualizer.draw_instance_predictions``:
    masks, boxes, ``metadata.thing_classes`` names and scores (the classes' ``thing_colors``,
    jittered, where the metadata has them). :class:`BoxMasks` are drawn from their
    :func:`mask_polygons`, without a full-image mask.
    """
    mode = ColorMode.SEGMENTATION if metadata.get("thing_colors") else ColorMode.IMAGE
    visualizer = Visualizer(image, metadata, instance_mode=mode)
    instances = instances.to("cpu")
    if instances.has("pred_masks") and isinstance(instances.pred_masks, BoxMasks):
        # The Visualizer reads pred_masks as an array of masks, each of which may be a list of
        # polygons: an object array of the polygon lists passes through as they are.
        fields = {**instances.get_fields(), "pred_masks": mask_polygons(instances.pred_masks)}
        instances = Instances(instances.image_size, **fields)
    return visualizer.draw_instance_predictions(instances).get_image()


def draw_instance_subdivision_step(
    image: np.ndarray, step: InstanceSubdivisionStep, step_index: int
) -> np.ndarray:
    """
    A panel for one instance subdivision step: left, the image (dimmed) with each detection's
    refined points in its colour (:func:`instance_colors`); right, the masks after this step in
    the same colours.

    Args:
        image: (H, W, 3) uint8 RGB output image.
        step: the step, as returned by :func:`trace_instance_subdivision` (possibly of a subset
            of the detections: index its arrays alike).
        step_index: 1-based step number, for the caption.

    Returns:
        (H, 2 W, 3) uint8 RGB panel.
    """
    num_instances, num_points = step.points.shape[:2]
    colors = instance_colors(num_instances)
    points_view = _dim(image)
    num_drawn = _draw_points(
        points_view, step.points.reshape(-1, 2), np.repeat(colors, num_points, axis=0)
    )
    masks_view = _dim(image)
    # The first detections (highest scores) on top: paint in reverse order, each mask within its
    # box region (a view of masks_view).
    for index in reversed(range(num_instances)):
        crop, region = step.masks.crop(index)
        mask, view = crop.cpu().numpy(), masks_view[region]
        view[mask] = (0.4 * view[mask] + 0.6 * colors[index]).astype(np.uint8)
    _caption(points_view, f"step {step_index}: {num_drawn} points")
    _caption(masks_view, f"masks at {step.resolution}x{step.resolution}")
    return np.concatenate([points_view, masks_view], axis=1)
