"""Instance masks pasted when read (pointrend_d2.modeling.paste.BoxMasks) against detectron2's
paste_masks_in_image, and through the consumers of masks: the Predictor, evaluation, drawing."""

import numpy as np
import pytest
import torch
from detectron2.data import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.layers import paste_masks_in_image
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import GenericMask

from pointrend_d2.modeling.paste import BoxMasks
from pointrend_d2.predictor import Predictor
from pointrend_d2.visualization import (
    InstanceSubdivisionStep,
    draw_instance_subdivision_step,
    instance_colors,
    mask_polygons,
    overlay_instances,
)
from tests.helpers import small_rcnn_cfg


def random_boxes(generator, count: int, height: int, width: int) -> torch.Tensor:
    """Boxes of every kind within an image: fractional corners, tiny and image-sized boxes, and
    boxes on the image's borders."""
    corners = torch.rand(count, 2, 2, generator=generator) * torch.tensor([width, height])
    boxes = torch.cat([corners.amin(dim=1), corners.amax(dim=1)], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, width, height])  # the whole image
    boxes[1] = torch.tensor([0.0, 0.5, 3.25, height])  # left and bottom borders
    boxes[2] = torch.tensor([width - 0.3, 1.7, width, 2.0])  # thin, on the right border
    boxes[3] = torch.tensor([5.0, 6.0, 9.0, 12.0])  # integer corners
    return boxes


@pytest.mark.parametrize(
    "height, width, side, threshold",
    [(37, 53, 28, 0.5), (64, 48, 7, 0.3), (3000, 4000, 224, 0.5)],
)
def test_box_masks_paste_exactly_as_detectron2(height, width, side, threshold):
    """Pixel for pixel, also at a huge image's coordinates (float32 spacing 2**-12 there)."""
    generator = torch.Generator().manual_seed(0)
    count = 6 if height > 1000 else 24
    probabilities = torch.rand(count, side, side, generator=generator)
    boxes = random_boxes(generator, count, height, width)
    expected = paste_masks_in_image(probabilities, boxes, (height, width), threshold)
    masks = BoxMasks(probabilities, boxes, (height, width), threshold)
    assert len(masks) == count
    for index, mask in enumerate(masks):
        assert mask.dtype == torch.bool and torch.equal(mask, expected[index])
        # The crop covers the box widened by a pixel, and every pixel of the mask.
        crop, (rows, columns) = masks.crop(index)
        assert crop.shape == (rows.stop - rows.start, columns.stop - columns.start)
        assert crop.shape[0] < boxes[index, 3] - boxes[index, 1] + 4
        assert expected[index].sum() == crop.sum()
    assert torch.equal(masks[3], expected[3]) and torch.equal(masks[np.int64(4)], expected[4])
    assert expected.flatten(1).any(dim=1).float().mean() > 0.5  # not vacuous


def test_box_masks_indexing_and_devices():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(5, 14, 14, generator=generator)
    masks = BoxMasks(probabilities, random_boxes(generator, 5, 20, 30), (20, 30))
    instances = Instances((20, 30), pred_masks=masks, scores=torch.arange(5.0))
    kept = instances[instances.scores >= 2]
    assert isinstance(kept.pred_masks, BoxMasks) and len(kept.pred_masks) == 3
    assert torch.equal(kept.pred_masks[0], masks[2])
    assert torch.equal(instances[1].pred_masks[0], masks[1])
    moved = instances.to("cpu").pred_masks
    assert torch.equal(torch.stack(list(moved)), torch.stack(list(masks)))
    with pytest.raises(ValueError, match=r"\(R, M, M\) probabilities and \(R, 4\) boxes"):
        BoxMasks(probabilities, torch.zeros(4, 4), (20, 30))


@pytest.fixture(scope="module")
def detections():
    """A random-weight PointRend Mask R-CNN's detections in a 150x250 image (resized to 96x160
    for the model): detectron2's (pasted by ``model(...)``) and the Predictor's."""
    torch.manual_seed(0)
    cfg = small_rcnn_cfg(
        num_classes=4,
        **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0, "TEST.DETECTIONS_PER_IMAGE": 40,
           "INPUT.MIN_SIZE_TEST": 96, "INPUT.MAX_SIZE_TEST": 160},
    )  # fmt: skip
    predictor = Predictor(cfg, model=build_model(cfg))
    image = np.random.default_rng(0).integers(0, 256, (150, 250, 3), dtype=np.uint8)
    model_input = predictor.model_input(image)
    assert model_input["image"].shape[-2:] == (96, 160)
    with torch.no_grad():
        expected = predictor.model([model_input])[0]["instances"]
    return expected, predictor(image)["instances"]


def test_predictor_gives_detectron2_detections_with_masks_pasted_when_read(detections):
    expected, actual = detections
    assert len(actual) == len(expected) == 40
    assert torch.equal(actual.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(actual.scores, expected.scores)
    assert torch.equal(actual.pred_classes, expected.pred_classes)
    assert isinstance(actual.pred_masks, BoxMasks) and actual.pred_masks.image_size == (150, 250)
    assert torch.equal(torch.stack(list(actual.pred_masks)), expected.pred_masks)
    assert expected.pred_masks.any()


def test_coco_results_are_unchanged(detections):
    """The COCO evaluator's conversion (masks to RLE, read one at a time) gives the same JSON."""
    expected, actual = detections
    assert instances_to_coco_json(actual, 7) == instances_to_coco_json(expected, 7)


def test_drawn_from_polygons_of_the_box_regions_as_from_full_masks(detections):
    """The Visualizer's outlines of each mask, and so the overlay, are those of the pasted
    full-image masks: the same polygons, traced in the box region only."""
    expected, actual = detections
    for polygons, mask in zip(mask_polygons(actual.pred_masks), expected.pred_masks, strict=True):
        reference = GenericMask(mask.numpy(), 150, 250).polygons
        assert len(polygons) == len(reference)
        for polygon, wanted in zip(polygons, reference, strict=True):
            np.testing.assert_array_equal(polygon, wanted)
    image = np.random.default_rng(0).integers(0, 256, (150, 250, 3), dtype=np.uint8)
    classes = ["a", "b", "c", "d"]
    for metadata in (
        Metadata(name="plain").set(thing_classes=classes),
        Metadata(name="coloured").set(thing_classes=classes, thing_colors=[[200, 0, 0]] * 4),
    ):
        pictures = []
        for instances in (actual, expected):
            np.random.seed(0)  # the Visualizer's random colours and jitter
            pictures.append(overlay_instances(image, instances, metadata))
        np.testing.assert_array_equal(pictures[0], pictures[1])
    # Not vacuous: the masks change the picture.
    np.random.seed(0)
    boxes_only = Instances((150, 250), pred_boxes=Boxes(expected.pred_boxes.tensor))
    boxes_only.scores, boxes_only.pred_classes = expected.scores, expected.pred_classes
    assert not np.array_equal(overlay_instances(image, boxes_only, metadata), pictures[0])


def test_subdivision_panel_paints_box_masks_as_full_masks(detections):
    expected, actual = detections
    image = np.random.default_rng(1).integers(0, 256, (150, 250, 3), dtype=np.uint8)
    # Points off the image: the panel's right half shows the masks only.
    points = np.full((len(actual), 1, 2), -10.0, dtype=np.float32)
    panel = draw_instance_subdivision_step(
        image, InstanceSubdivisionStep(points, actual.pred_masks, 224), 1
    )
    wanted = (image.astype(np.float32) * 0.6).astype(np.uint8)
    colors = instance_colors(len(actual))
    for mask, color in zip(expected.pred_masks.numpy()[::-1], colors[::-1], strict=True):
        wanted[mask] = (0.4 * wanted[mask] + 0.6 * color).astype(np.uint8)
    # Below the caption.
    np.testing.assert_array_equal(panel[20:, 250:], wanted[20:])
