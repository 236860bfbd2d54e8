"""The coarse and refined stages of tiny random-weight PointRend models, from one run of the
unchanged model: the refined stage is the model's output, the coarse one what the coarse head
predicts on its own."""

import pytest
import torch
from detectron2.modeling import build_model

from pointrend_d2.evaluation import instance_stage_outputs, semantic_stage_outputs
from pointrend_d2.evaluation.stage_outputs import INSTANCE_STAGES, instance_stage_sides
from tests.helpers import small_fpn_cfg, small_rcnn_cfg


def random_inputs(sizes, output_sizes) -> list[dict]:
    """Model inputs: random images of ``sizes`` whose outputs are asked at ``output_sizes``."""
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator),
            "height": output_size[0],
            "width": output_size[1],
        }
        for size, output_size in zip(sizes, output_sizes, strict=True)
    ]


# Two images of different sizes (one padded in the batch), outputs at other sizes.
SEMANTIC_INPUTS = {"sizes": [(64, 96), (48, 80)], "output_sizes": [(80, 120), (48, 80)]}


@pytest.mark.parametrize("num_classes", [5, 1])
def test_semantic_stages_are_the_model_and_its_coarse_head_alone(num_classes):
    model = build_model(small_fpn_cfg(num_classes)).eval()
    # The same backbone and coarse head without PointRend: the coarse stage is its output.
    baseline_cfg = small_fpn_cfg(
        num_classes, **{"MODEL.SEM_SEG_HEAD.NAME": "SemanticFPNCoarseHead"}
    )
    baseline = build_model(baseline_cfg).eval()
    baseline.backbone.load_state_dict(model.backbone.state_dict())
    baseline.sem_seg_head.load_state_dict(model.sem_seg_head.coarse_sem_seg_head.state_dict())
    inputs = random_inputs(**SEMANTIC_INPUTS)
    outputs = semantic_stage_outputs(model, inputs)
    with torch.no_grad():
        expected_refined, expected_coarse = model(inputs), baseline(inputs)
    for output, refined, coarse in zip(outputs, expected_refined, expected_coarse, strict=True):
        assert torch.equal(output["sem_seg"], refined["sem_seg"])
        assert torch.equal(output["coarse_sem_seg"], coarse["sem_seg"])
        assert output["coarse_sem_seg"].shape == (
            max(num_classes, 2),
            *refined["sem_seg"].shape[1:],
        )
    # The hook is gone: the backbone runs as before.
    assert not model.backbone._forward_hooks


def tiny_rcnn(**overrides):
    cfg = small_rcnn_cfg(5, **{"TEST.DETECTIONS_PER_IMAGE": 8, **overrides})
    return build_model(cfg).eval()


def test_instance_refined_stage_is_the_models_output():
    model = tiny_rcnn()
    inputs = random_inputs([(64, 96)], [(80, 120)])
    (output,) = instance_stage_outputs(model, inputs)
    with torch.no_grad():
        (expected,) = model(inputs)
    instances, expected = output["instances"], expected["instances"]
    assert len(expected) > 0  # random weights still detect: scores ~1/6 above 0.05
    assert torch.equal(instances.pred_masks, expected.pred_masks)
    assert torch.equal(instances.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(instances.scores, expected.scores)
    for field in INSTANCE_STAGES:
        assert instances.get(field).shape == expected.pred_masks.shape
        assert instances.get(field).dtype == torch.bool


def test_without_subdivision_the_initial_grid_is_the_models_output():
    model = tiny_rcnn(**{"MODEL.POINT_HEAD.SUBDIVISION_STEPS": 0})
    assert instance_stage_sides(model) == {
        "coarse_masks": 7,
        "initial_masks": 7,
        "pred_masks": 7,
    }
    (output,) = instance_stage_outputs(model, random_inputs([(64, 96)], [(64, 96)]))
    instances = output["instances"]
    assert len(instances) > 0
    assert torch.equal(instances.initial_masks, instances.pred_masks)


def test_instance_coarse_stage_takes_each_detections_class_logits_over_its_box():
    # Every detection is of class 3 (the box head's scores say so), whose coarse logits are
    # positive only in column 3 of the 7 x 7 grid, each other class k's only in column k: each
    # detection's coarse mask is the fourth seventh of its box.
    model = tiny_rcnn()
    class_scores = model.roi_heads.box_predictor.cls_score
    coarse_prediction = model.roi_heads.mask_head.coarse_head.prediction
    columns = torch.full((5, 7, 7), -10.0)
    for k in range(5):
        columns[k, :, k] = 10.0
    with torch.no_grad():
        class_scores.weight.zero_()
        class_scores.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0, 0.0]))
        coarse_prediction.weight.zero_()
        coarse_prediction.bias.copy_(columns.flatten())
    (output,) = instance_stage_outputs(model, random_inputs([(128, 192)], [(128, 192)]))
    instances = output["instances"]
    assert (instances.pred_classes == 3).all()
    stripes = 0
    for box, mask in zip(instances.pred_boxes.tensor, instances.coarse_masks, strict=True):
        x0, _, x1, _ = box.tolist()
        # The logits cross zero halfway between the centres of column 3 and its neighbours, at
        # the column's edges; pasting rounds to whole pixels: allow a pixel either side.
        low, high = x0 + (x1 - x0) * 3 / 7 - 1, x0 + (x1 - x0) * 4 / 7 + 1
        pixel_centres = torch.nonzero(mask.any(dim=0)).flatten() + 0.5
        assert ((pixel_centres >= low) & (pixel_centres <= high)).all()
        if (x1 - x0) / 7 >= 3:  # a stripe 3 px wide covers some pixel centre
            assert len(pixel_centres) > 0
            stripes += 1
    assert stripes > 0


def test_stage_outputs_need_point_rend_models():
    semantic = build_model(small_fpn_cfg(5)).eval()
    with pytest.raises(TypeError, match="need a GeneralizedRCNN with .* not NoneType"):
        instance_stage_outputs(semantic, random_inputs([(32, 32)], [(32, 32)]))
    with pytest.raises(TypeError, match="PointRendSemanticHead, not NoneType"):
        semantic_stage_outputs(tiny_rcnn(), random_inputs([(32, 32)], [(32, 32)]))
