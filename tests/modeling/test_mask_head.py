"""
PointRend's instance mask head and its ROI point utilities, on small tensors with fixed seeds:
box-normalized points, labels from bit masks and polygons at known points, the training sampler's
points per box, and the edge cases of inference (no, one, border-crossing and degenerate boxes;
one class; class-agnostic masks).
"""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from pointrend_d2.modeling.mask_head import PointRendInstanceMaskHead, instance_point_labels
from pointrend_d2.modeling.point_features import (
    bitmask_point_labels,
    box_points_to_image,
    polygon_point_labels,
    regular_grid_points,
    roi_point_features,
    sample_uncertain_points,
)
from tests.helpers import small_rcnn_cfg


def test_box_points_to_image():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 4.0, 2.0]])
    points = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.5, 0.25]], [[0.25, 0.5]] * 3])
    expected = torch.tensor([[[10.0, 20.0], [30.0, 60.0], [20.0, 30.0]], [[1.0, 1.0]] * 3])
    assert torch.equal(box_points_to_image(boxes, points), expected)


def test_regular_grid_points_are_cell_centres_in_row_major_order():
    grid = regular_grid_points(3, 4, "cpu")
    assert grid.shape == (3, 16, 2)
    torch.testing.assert_close(grid[1, 6], torch.tensor([2.5 / 4, 1.5 / 4]))  # row 1, column 2


def test_roi_point_features_read_the_map_at_image_points():
    # A stride-4 map whose value is the x coordinate of each cell centre in image pixels.
    height, width, stride = 6, 8, 4
    centres = (torch.arange(width, dtype=torch.float32) + 0.5) * stride
    feature = centres.expand(height, width)[None, None].repeat(2, 1, 1, 1)
    feature[1] += 100  # the second image's map
    boxes = [torch.tensor([[2.0, 2.0, 18.0, 10.0]]), torch.tensor([[6.0, 6.0, 14.0, 22.0]])]
    # Points at cell centres inside each box: x = 6 and 10 in the first, x = 10 in the second.
    points = torch.tensor([[[0.25, 0.5], [0.5, 0.5]], [[0.5, 0.25], [0.5, 0.75]]])
    values = roi_point_features([feature], [stride], boxes, points)
    assert values.shape == (2, 1, 2)
    torch.testing.assert_close(values[:, 0], torch.tensor([[6.0, 10.0], [110.0, 110.0]]))


def test_bitmask_labels_are_the_pixel_that_contains_the_point():
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[0, 1, 2] = True  # pixel (row 1, column 2) covers [2, 3) x [1, 2)
    points = torch.tensor([[[2.0, 1.0], [2.99, 1.99], [3.0, 1.5], [2.5, 0.99], [-1, 1.5], [7, 1]]])
    assert bitmask_point_labels(mask, points).tolist() == [[1, 1, 0, 0, 0, 0]]


def test_polygon_labels_even_odd_and_union():
    square = torch.tensor([0.0, 0, 10, 0, 10, 10, 0, 10])
    hole = torch.tensor([3.0, 3, 7, 3, 7, 7, 3, 7])
    far = torch.tensor([20.0, 20, 24, 20, 22, 24])
    points = torch.tensor([[[1.0, 1.0], [5.0, 5.0], [9.5, 5.0], [11.0, 5.0], [22.0, 21.0]]])
    # A ring drawn as one polygon, outer then inner outline: by the even-odd rule the hole (5, 5)
    # is outside; a second polygon of the instance (the far triangle) adds to it.
    ring = torch.cat([square, hole])
    assert polygon_point_labels([[ring, far]], points).tolist() == [[1, 0, 1, 0, 1]]
    # Separate polygons are a union: the hole's square inside the outer one is still inside.
    assert polygon_point_labels([[square, hole]], points).tolist() == [[1, 1, 1, 0, 0]]


def test_instance_point_labels_from_polygons_and_bitmasks_agree():
    polygon = [[2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]]
    bitmask = torch.zeros(1, 16, 16, dtype=torch.bool)
    bitmask[0, 2:8, 2:12] = True
    boxes = Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    points = torch.rand(1, 200, 2, generator=torch.Generator().manual_seed(0))
    labels = []
    for gt_masks in (PolygonMasks([polygon]), BitMasks(bitmask)):
        instances = Instances((16, 16), proposal_boxes=boxes, gt_masks=gt_masks)
        labels.append(instance_point_labels([instances], points))
    assert torch.equal(labels[0], labels[1]) and 0 < labels[0].sum() < 200


def test_training_sampler_counts_per_box():
    torch.manual_seed(0)
    logits = torch.randn(5, 1, 7, 7)
    points = sample_uncertain_points(logits, 196, 3, 0.75)
    assert points.shape == (5, 196, 2)
    # The 147 importance points are the most uncertain of the 588 candidates: on average far
    # more uncertain than the 49 uniform coverage points.
    from pointrend_d2.modeling.point_features import point_sample

    uncertainty = -point_sample(logits, points)[:, 0].abs()
    assert (uncertainty[:, :147].mean(dim=1) > uncertainty[:, 147:].mean(dim=1)).all()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(small_rcnn_cfg(num_classes=3)).eval()


def _detections(image_size, boxes, classes):
    return Instances(
        image_size,
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        pred_classes=torch.tensor(classes, dtype=torch.int64),
    )


@pytest.mark.parametrize(
    "boxes",
    [
        [],
        [[10, 12, 40, 50]],
        # Crossing and touching the border, and degenerate (zero width, zero area, sub-pixel).
        [[-20, -10, 30, 20], [50, 40, 80, 64], [5, 5, 5, 30], [7, 7, 7, 7], [3, 3, 3.4, 3.2]],
    ],
    ids=["zero", "one", "border-and-degenerate"],
)
def test_inference_on_edge_case_boxes(model, boxes):
    image_size = (64, 80)
    detections = _detections(image_size, boxes, [i % 3 for i in range(len(boxes))])
    features = model.backbone(torch.rand(1, 3, 64, 96))
    with torch.no_grad():
        result = model.roi_heads.mask_head(features, [detections])[0]
    assert result.pred_masks.shape == (len(boxes), 1, 224, 224)
    assert torch.isfinite(result.pred_masks).all()


def test_one_class_and_class_agnostic_train_and_predict():
    image = torch.rand(3, 64, 80) * 255
    masks = torch.zeros(2, 64, 80, dtype=torch.bool)
    masks[0, 10:30, 5:40], masks[1, 35:60, 40:75] = True, True
    gt = Instances(
        (64, 80),
        gt_boxes=Boxes(torch.tensor([[5.0, 10, 40, 30], [40, 35, 75, 60]])),
        gt_classes=torch.zeros(2, dtype=torch.int64),
        gt_masks=BitMasks(masks),
    )
    for overrides in ({}, {"MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": True}):
        torch.manual_seed(0)
        cfg = small_rcnn_cfg(num_classes=1, **overrides)
        model = build_model(cfg)
        mask_head = model.roi_heads.mask_head
        assert isinstance(mask_head, PointRendInstanceMaskHead)
        assert mask_head.coarse_head.num_classes == 1
        with EventStorage():
            losses = model([{"image": image, "instances": gt}])
        assert torch.isfinite(losses["loss_mask_point"]) and losses["loss_mask_point"] > 0
        sum(losses.values()).backward()
        assert mask_head.point_head.predictor.weight.grad.abs().sum() > 0
        model.eval()
        with torch.no_grad():
            instances = model([{"image": image, "height": 64, "width": 80}])[0]["instances"]
        assert instances.pred_masks.shape[1:] == (64, 80)
        assert (instances.pred_classes == 0).all()


def test_training_without_foreground_boxes_gives_zero_losses_with_gradients(model):
    empty = Instances(
        (64, 80),
        proposal_boxes=Boxes(torch.zeros(0, 4)),
        gt_classes=torch.zeros(0, dtype=torch.int64),
        gt_masks=BitMasks(torch.zeros(0, 64, 80, dtype=torch.bool)),
    )
    features = model.backbone(torch.rand(1, 3, 64, 96))
    mask_head = model.roi_heads.mask_head
    mask_head.train()
    try:
        with EventStorage():
            losses = mask_head(features, [empty])
    finally:
        mask_head.eval()
    assert set(losses) == {"loss_mask", "loss_mask_point"}
    assert all(float(loss.detach()) == 0 for loss in losses.values())
    sum(losses.values()).backward()  # every head parameter is in the graph (DDP needs it)
    assert mask_head.point_head.predictor.weight.grad is not None
