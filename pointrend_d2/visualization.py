"""
Pictures of semantic segmentation and of PointRend's adaptive subdivision: coloured overlays,
per-step panels of the refined points and the uncertainty map, and side-by-side crops.

Images here are (H, W, 3) uint8 RGB numpy arrays; label maps are (H, W) integer arrays.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.modeling import SemanticSegmentor
from detectron2.structures import ImageList
from detectron2.utils.visualizer import ColorMode, Visualizer

from . import subdivision
from .coarse_head import expand_foreground_logit
from .point_features import calculate_uncertainty
from .semantic_seg import PointRendSemanticHead

__all__ = [
    "SubdivisionStep",
    "colorize_labels",
    "draw_subdivision_step",
    "overlay_sem_seg",
    "trace_subdivision",
]


@dataclass
class SubdivisionStep:
    """
    One adaptive-subdivision step of PointRend inference, in the frame of the output image.

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
def trace_subdivision(model: SemanticSegmentor, batched_input: dict) -> list[SubdivisionStep]:
    """
    Runs PointRend's subdivision inference for one image, the head's own implementation and
    settings, and records every step: the final labels are the model's (tested).

    Args:
        model: a SemanticSegmentor whose ``sem_seg_head`` is a :class:`PointRendSemanticHead`.
        batched_input: one model input: ``image`` (C, H, W) in the model's input format and size,
            ``height`` and ``width`` of the output image.

    Returns:
        One :class:`SubdivisionStep` per subdivision step.
    """
    head = model.sem_seg_head
    if not isinstance(head, PointRendSemanticHead):
        raise TypeError(
            f"Tracing the subdivision needs a PointRendSemanticHead, not {type(head).__name__}"
        )
    image = (batched_input["image"].to(model.device) - model.pixel_mean) / model.pixel_std
    images = ImageList.from_tensors(
        [image],
        model.backbone.size_divisibility,
        padding_constraints=model.backbone.padding_constraints,
    )
    features = model.backbone(images.tensor)
    coarse_logits = head.coarse_sem_seg_head.layers(features)

    input_height, input_width = images.image_sizes[0]
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
            SubdivisionStep(
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
    image: np.ndarray, step: SubdivisionStep, step_index: int, point_color=(255, 40, 40)
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
    points_view = (image.astype(np.float32) * 0.6).astype(np.uint8)
    pixels = np.floor(step.points).astype(int)
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0)
    inside &= pixels[:, 1] < height
    # One pixel per point plus its 4-neighbours, so that points stay visible when scaled down.
    for dy, dx in ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)):
        rows = np.clip(pixels[inside, 1] + dy, 0, height - 1)
        cols = np.clip(pixels[inside, 0] + dx, 0, width - 1)
        points_view[rows, cols] = point_color
    uncertainty_view = _uncertainty_heatmap(step.uncertainty, height, width)
    step_height, step_width = step.uncertainty.shape
    for view, caption in (
        (points_view, f"step {step_index}: {int(inside.sum())} points refined"),
        (uncertainty_view, f"uncertainty at {step_height}x{step_width}"),
    ):
        scale = max(height / 512, 0.4)
        origin = (5, int(20 * scale) + 2)
        cv2.putText(view, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), 3)
        cv2.putText(view, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255,) * 3, 1)
    return np.concatenate([points_view, uncertainty_view], axis=1)
