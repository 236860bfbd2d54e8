"""
Point supervision in the models: objects' labelled points in their proposals' boxes, the mask
loss at those points (Mask R-CNN, PointRend's coarse and point losses), PointRend's semantic point
loss at the labelled pixels of sparse label maps, and the config checks of the heads.
"""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from pointrend_d2.modeling.losses import point_loss
from pointrend_d2.modeling.point_features import point_sample
from pointrend_d2.modeling.point_supervised_mask_rcnn import PointSupervisedMaskRCNNHead
from pointrend_d2.modeling.point_supervision import (
    box_point_targets,
    labelled_pixel_points,
    mask_point_loss,
    point_supervision_from_config,
)
from tests.helpers import small_deeplab_cfg, small_fpn_cfg, small_rcnn_cfg

POINTS_ON = {"MODEL.POINT_SUPERVISION.ENABLED": True}
ENABLED_BUT = r"MODEL.POINT_SUPERVISION.ENABLED is True, but "
MASK_RCNN_NOT = (
    r"MODEL.ROI_MASK_HEAD.NAME='MaskRCNNConvUpsampleHead' cannot be trained from labelled points; "
    r"heads that can: \[.*'PointRendInstanceMaskHead', 'PointSupervisedMaskRCNNHead'"
)
# detectron2's standard mask head, as configs/quickstart/mask_rcnn_instance.yaml sets it.
MASK_RCNN = {
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 2,
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": False,
}


def proposals(boxes, classes, coords, labels, image_size=(64, 80)) -> Instances:
    """Foreground proposals of one image with their objects' points."""
    return Instances(
        image_size,
        proposal_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        gt_classes=torch.tensor(classes, dtype=torch.int64),
        gt_point_coords=torch.as_tensor(coords, dtype=torch.float32),
        gt_point_labels=torch.as_tensor(labels, dtype=torch.int64),
    )


def test_points_are_normalized_in_their_proposal_and_ignored_outside_it():
    first = proposals(
        [[10, 20, 30, 60], [0, 0, 8, 8]],
        [0, 1],
        [[[10, 20], [20, 50], [31, 40]], [[4, 2], [8, 8], [9, 0]]],
        [[1, 0, 1], [0, 1, 1]],
    )
    second = proposals([[2, 2, 6, 6]], [2], [[[4, 4]]], [[1]])
    empty = proposals([], [], torch.zeros(0, 5, 2), torch.zeros(0, 5))
    coords, labels = box_point_targets([first, empty, second])
    expected = torch.tensor(
        [
            [[0.0, 0.0], [0.5, 0.75], [1.05, 0.5]],
            [[0.5, 0.25], [1.0, 1.0], [1.125, 0.0]],
            [[0.5, 0.5], [0.0, 0.0], [0.0, 0.0]],  # padded to the first image's 3 points
        ]
    )
    torch.testing.assert_close(coords, expected)
    # Outside the proposal's box (x 31 > 30, x 9 > 8) and padding: ignored.
    assert labels.tolist() == [[1, 0, -1], [0, 1, -1], [1, -1, -1]]


def test_no_foreground_proposal_gives_no_points():
    coords, labels = box_point_targets([proposals([], [], torch.zeros(0, 0, 2), torch.zeros(0, 0))])
    assert coords.shape == (0, 1, 2) and labels.shape == (0, 1)


def test_instances_without_points_name_the_key_and_the_tool():
    masks_only = Instances(
        (8, 8),
        proposal_boxes=Boxes(torch.tensor([[0.0, 0, 4, 4]])),
        gt_classes=torch.tensor([0]),
        gt_masks=BitMasks(torch.ones(1, 8, 8, dtype=torch.bool)),
    )
    with pytest.raises(ValueError, match=r"POINT_SUPERVISION.ENABLED is True, .*no point annot"):
        box_point_targets([masks_only])


def test_mask_point_loss_is_the_classes_logit_at_the_points():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7, 7, requires_grad=True)
    coords = torch.rand(2, 4, 2)
    labels = torch.tensor([[1, 0, -1, 1], [0, 0, 1, -1]])
    classes = torch.tensor([2, 0])
    loss = mask_point_loss(logits, classes, coords, labels)
    sampled = point_sample(logits, coords)[torch.arange(2), classes]  # (2, 4)
    valid = labels >= 0
    expected = F.binary_cross_entropy_with_logits(sampled[valid], labels[valid].float())
    torch.testing.assert_close(loss, expected)
    # One logit (class-agnostic masks): no class selection.
    agnostic = mask_point_loss(logits[:, :1], classes, coords, labels)
    expected = F.binary_cross_entropy_with_logits(
        point_sample(logits[:, :1], coords)[:, 0][valid], labels[valid].float()
    )
    torch.testing.assert_close(agnostic, expected)


def test_mask_point_loss_is_zero_with_gradients_without_counted_points():
    logits = torch.randn(2, 3, 7, 7, requires_grad=True)
    loss = mask_point_loss(
        logits, torch.tensor([0, 1]), torch.rand(2, 3, 2), torch.full((2, 3), -1)
    )
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and not logits.grad.any()


def test_labelled_pixels_are_the_points_and_padding_is_ignored():
    targets = torch.full((2, 4, 6), 255)
    targets[0, 1, 2], targets[0, 3, 5], targets[1, 0, 0] = 3, 0, 1
    coords, labels = labelled_pixel_points(targets, 255, max_points=100)
    assert coords.shape == (2, 2, 2)
    found = {
        (round(x * 6 - 0.5), round(y * 4 - 0.5), label)  # pixel centres back to column, row
        for (x, y), label in zip(coords[0].tolist(), labels[0].tolist(), strict=True)
    }
    assert found == {(2, 1, 3), (5, 3, 0)}
    assert sorted(labels[1].tolist()) == [1, 255]  # one point, padded with an ignored pixel
    torch.testing.assert_close(coords[1][labels[1] == 1], torch.tensor([[0.5 / 6, 0.5 / 4]]))


def test_labelled_pixels_beyond_the_cap_are_a_subset_and_none_is_one_ignored_point():
    targets = torch.full((1, 10, 10), 255)
    targets[0, :5] = 2  # 50 labelled pixels
    coords, labels = labelled_pixel_points(targets, 255, max_points=8)
    assert coords.shape == (1, 8, 2) and (labels == 2).all()
    assert (
        len({tuple(point) for point in coords[0].tolist()}) == 8 and (coords[0, :, 1] < 0.5).all()
    )
    coords, labels = labelled_pixel_points(torch.full((2, 3, 3), 255), 255, max_points=8)
    assert coords.shape == (2, 1, 2) and (labels == 255).all()


def image_with_points(num_classes: int = 3) -> dict:
    """A 64x80 training image with two objects, each with points inside and outside it."""
    instances = Instances(
        (64, 80),
        gt_boxes=Boxes(torch.tensor([[4.0, 4, 40, 30], [30, 20, 70, 60]])),
        gt_classes=torch.tensor([0, num_classes - 1]),
        gt_point_coords=torch.tensor(
            [[[10.0, 10], [35, 25], [20, 15]], [[40, 30], [60, 50], [32, 58]]]
        ),
        gt_point_labels=torch.tensor([[1, 0, 1], [1, 1, 0]]),
    )
    image = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    return {"image": image, "instances": instances}


@pytest.mark.parametrize(
    "overrides",
    [{}, {"MODEL.ROI_MASK_HEAD.NAME": "PointSupervisedMaskRCNNHead", **MASK_RCNN}],
    ids=["pointrend", "mask-rcnn"],
)
def test_instance_models_train_from_points(overrides):
    torch.manual_seed(0)
    model = build_model(small_rcnn_cfg(num_classes=3, **POINTS_ON, **overrides))
    with EventStorage():
        losses = model([image_with_points()])
    assert all(torch.isfinite(loss) for loss in losses.values()), losses
    assert losses["loss_mask"] > 0
    sum(losses.values()).backward()
    mask_head = model.roi_heads.mask_head
    predictor = getattr(mask_head, "predictor", None) or mask_head.coarse_head.prediction
    assert predictor.weight.grad.abs().sum() > 0


def test_pointrend_losses_are_the_coarse_and_point_logits_at_the_points():
    torch.manual_seed(0)
    model = build_model(small_rcnn_cfg(num_classes=3, **POINTS_ON))
    mask_head = model.roi_heads.mask_head.train()
    features = model.backbone(torch.rand(1, 3, 64, 96))
    instances = proposals(
        [[4, 4, 40, 30], [30, 20, 70, 60]],
        [0, 2],
        [[[10, 10], [35, 25], [45, 5]], [[40, 30], [60, 50], [32, 58]]],
        [[1, 0, 1], [1, 1, 0]],
    )
    with EventStorage():
        losses = mask_head(features, [instances])
    boxes = [instances.proposal_boxes.tensor]
    coords, labels = box_point_targets([instances])
    assert labels[0, 2] == -1  # (45, 5) lies outside the first box
    coarse = mask_head.coarse_logits(features, boxes)
    classes = instances.gt_classes
    torch.testing.assert_close(
        losses["loss_mask"], mask_point_loss(coarse, classes, coords, labels)
    )
    point_logits = mask_head.predict_points(features, boxes, coarse, coords, classes)
    torch.testing.assert_close(losses["loss_mask_point"], point_loss(point_logits, labels, -1))


def test_implicit_pointrend_takes_its_point_loss_at_the_points():
    torch.manual_seed(0)
    cfg = small_rcnn_cfg(
        num_classes=3,
        **POINTS_ON,
        **{
            "MODEL.ROI_MASK_HEAD.NAME": "ImplicitPointRendInstanceMaskHead",
            "MODEL.POINT_HEAD.SUBDIVISION_STEPS": 3,
        },
    )
    model = build_model(cfg)
    mask_head = model.roi_heads.mask_head.train()
    features = model.backbone(torch.rand(1, 3, 64, 96))
    instances = proposals(
        [[4, 4, 40, 30], [30, 20, 70, 60]],
        [0, 2],
        [[[10, 10], [35, 25], [45, 5]], [[40, 30], [60, 50], [32, 58]]],
        [[1, 0, 1], [1, 1, 0]],
    )
    with EventStorage():
        losses = mask_head(features, [instances])
    assert set(losses) == {"loss_l2", "loss_mask_point"}
    boxes = [instances.proposal_boxes.tensor]
    coords, labels = box_point_targets([instances])
    parameters = mask_head.predict_parameters(features, boxes)
    point_logits = mask_head.predict_points(
        features, boxes, parameters, coords, instances.gt_classes
    )
    torch.testing.assert_close(losses["loss_mask_point"], point_loss(point_logits, labels, -1))
    sum(losses.values()).backward()
    assert mask_head.parameter_head.prediction.weight.grad.abs().sum() > 0


def test_pointrend_without_foreground_boxes_gives_zero_losses_with_gradients():
    torch.manual_seed(0)
    model = build_model(small_rcnn_cfg(num_classes=3, **POINTS_ON))
    mask_head = model.roi_heads.mask_head.train()
    features = model.backbone(torch.rand(1, 3, 64, 96))
    with EventStorage():
        losses = mask_head(features, [proposals([], [], torch.zeros(0, 0, 2), torch.zeros(0, 0))])
    assert all(loss.item() == 0 for loss in losses.values())
    sum(losses.values()).backward()
    assert mask_head.point_head.predictor.weight.grad is not None


def test_point_supervised_mask_rcnn_head_is_detectron2s_head():
    """The same parameters (its checkpoints load), the same masks at inference, and Mask
    R-CNN's loss when point supervision is off."""
    cfg = small_rcnn_cfg(num_classes=3, **MASK_RCNN)
    shape = ShapeSpec(channels=32, height=14, width=14)
    torch.manual_seed(0)
    theirs = MaskRCNNConvUpsampleHead(cfg, shape)
    ours = PointSupervisedMaskRCNNHead(cfg, shape)
    assert ours.state_dict().keys() == theirs.state_dict().keys() and not ours.point_supervision
    ours.load_state_dict(theirs.state_dict())
    features = torch.randn(2, 32, 14, 14)
    boxes = Boxes(torch.tensor([[0.0, 0, 9, 9]] * 2))
    gt_masks = BitMasks(torch.rand(2, 64, 80) > 0.5)
    training = Instances((64, 80), proposal_boxes=boxes, gt_classes=torch.tensor([1, 2]))
    training.gt_masks = gt_masks
    with EventStorage():
        torch.testing.assert_close(ours(features, [training]), theirs(features, [training]))
    ours.eval(), theirs.eval()
    masks = []
    for head in (ours, theirs):
        detections = Instances((64, 80), pred_boxes=boxes, pred_classes=torch.tensor([1, 2]))
        with torch.no_grad():
            (result,) = head(features, [detections])
        masks.append(result.pred_masks)
    assert torch.equal(masks[0], masks[1])


def test_points_only_data_without_point_supervision_names_the_key():
    torch.manual_seed(0)
    model = build_model(small_rcnn_cfg(num_classes=3))
    message = r"point annotations .* and no masks: set MODEL.POINT_SUPERVISION.ENABLED True"
    with pytest.raises(ValueError, match=message), EventStorage():
        model([image_with_points()])


def test_heads_that_cannot_train_from_points_are_named():
    """At startup (the Trainer reads the key), and when PointRend's head is built."""
    mask_rcnn = small_rcnn_cfg(num_classes=3, **POINTS_ON, **MASK_RCNN)
    mask_rcnn.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    with pytest.raises(ValueError, match=ENABLED_BUT + MASK_RCNN_NOT):
        point_supervision_from_config(mask_rcnn)
    semantic = small_fpn_cfg(**POINTS_ON, **{"MODEL.SEM_SEG_HEAD.NAME": "SemSegFPNHead"})
    with pytest.raises(ValueError, match=ENABLED_BUT + r"MODEL.SEM_SEG_HEAD.NAME='SemSegFPNHead'"):
        point_supervision_from_config(semantic)
    # detectron2's SemSegFPNHead as PointRend's coarse head: NaN on a crop without points.
    coarse = small_fpn_cfg(
        **POINTS_ON, **{"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME": "SemSegFPNHead"}
    )
    with pytest.raises(
        ValueError, match=ENABLED_BUT + r"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME"
    ):
        build_model(coarse)


@pytest.mark.parametrize("coarse_head", ["SemanticFPNCoarseHead", "DeepLabV3CoarseHead"])
def test_semantic_point_loss_is_taken_at_the_labelled_pixels(coarse_head):
    torch.manual_seed(0)
    small_cfg = small_fpn_cfg if coarse_head == "SemanticFPNCoarseHead" else small_deeplab_cfg
    model = build_model(small_cfg(**POINTS_ON))
    head = model.sem_seg_head
    assert type(head.coarse_sem_seg_head).__name__ == coarse_head and head.point_supervision
    targets = torch.full((2, 64, 64), 255)
    targets[0, 5, 7], targets[0, 40, 30], targets[1, 63, 0] = 1, 4, 2
    features = model.backbone(torch.rand(2, 3, 64, 64))
    coarse_logits = head.coarse_sem_seg_head.layers(features)
    coords, labels = head.training_points(coarse_logits, targets)
    # Every labelled pixel, at its centre, padded with an ignored one.
    assert sorted(labels[0].tolist()) == [1, 4] and sorted(labels[1].tolist()) == [2, 255]
    labelled = coords[0][labels[0] == 4]
    torch.testing.assert_close(labelled, torch.tensor([[30.5 / 64, 40.5 / 64]]))
    head.train()
    with EventStorage():
        _, losses = head(features, targets)
    point_logits = head.predict_points(features, coarse_logits, coords)
    torch.testing.assert_close(losses["loss_sem_seg_point"], point_loss(point_logits, labels, 255))


def test_semantic_training_from_sparse_labels_and_from_none():
    torch.manual_seed(0)
    model = build_model(small_fpn_cfg(**POINTS_ON, **{"MODEL.SEM_SEG_HEAD.CONVS_DIM": 32}))
    sparse = torch.full((64, 64), 255)
    sparse[10, 10], sparse[50, 20], sparse[30, 60] = 0, 3, 4
    for labels, positive in ((sparse, True), (torch.full((64, 64), 255), False)):
        batch = [{"image": torch.rand(3, 64, 64) * 255, "sem_seg": labels}] * 2
        with EventStorage():
            losses = model(batch)
        assert losses.keys() == {"loss_sem_seg", "loss_sem_seg_point"}
        # No labelled pixel: 0, not NaN (a crop may miss every point).
        assert all(torch.isfinite(loss) and (loss > 0) == positive for loss in losses.values())
        sum(losses.values()).backward()
        model.zero_grad()
