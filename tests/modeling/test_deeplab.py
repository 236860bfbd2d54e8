"""DeepLabV3 + PointRend: dilated ResNet backbone, DeepLabV3 coarse head, configs, derivations."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.utils.events import EventStorage

import pointrend_d2
from pointrend_d2 import DeepLabV3CoarseHead, PointRendSemanticHead
from pointrend_d2.modeling import semantic_seg
from pointrend_d2.modeling.dilated_resnet import stage_strides_and_dilations
from pointrend_d2.modeling.point_settings import PointSettings
from tests.helpers import config_path, small_deeplab_cfg, small_fpn_cfg


def config_from_file(name: str):
    cfg = get_cfg()
    pointrend_d2.add_pointrend_config(cfg)
    cfg.merge_from_file(str(config_path(name)))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


# (config, PointRend?, res5 stride, training points, point head hidden layers)
NEW_CONFIGS = [
    ("Base-DeepLabV3-PointRend.yaml", True, 16, 2048, 3),
    ("deeplabv3_pointrend_R_101_os16_cityscapes.yaml", True, 16, 2048, 3),
    ("deeplabv3_pointrend_R_101_os8_cityscapes.yaml", True, 8, 2048, 3),
    ("deeplabv3_R_101_os16_cityscapes.yaml", False, 16, None, None),
    ("deeplabv3_pointrend_semseg.yaml", True, 16, 256, 3),
    ("deeplabv3_semseg.yaml", False, 16, None, None),
    ("deeplabv3_pointrend_linear_semseg.yaml", True, 16, 256, 0),
]


@pytest.mark.parametrize("name,pointrend,stride,train_num_points,num_fc", NEW_CONFIGS)
def test_config_builds(name, pointrend, stride, train_num_points, num_fc):
    # Building loads no weights: the Cityscapes configs build without network or data.
    model = build_model(config_from_file(name))
    shapes = model.backbone.output_shape()
    assert shapes["res2"].stride == 4
    assert shapes["res5"].stride == stride
    assert model.backbone.size_divisibility == stride
    head = model.sem_seg_head
    if not pointrend:
        assert isinstance(head, DeepLabV3CoarseHead)
        assert head.common_stride == stride
        return
    assert isinstance(head, PointRendSemanticHead)
    assert isinstance(head.coarse_sem_seg_head, DeepLabV3CoarseHead)
    assert head.coarse_sem_seg_head.common_stride == stride
    assert head.in_features == ["res2"]
    assert head.subdivision_steps == {16: 4, 8: 3}[stride]
    assert head.point_settings.train_num_points == train_num_points
    assert len(head.point_head.hidden_layers) == num_fc


@pytest.mark.parametrize(
    "depth,res4_dilation,res5_dilation,stride",
    [(18, 1, 2, 16), (18, 2, 4, 8), (50, 1, 2, 16), (50, 2, 4, 8), (18, 1, 1, 32)],
)
def test_dilated_backbone_maps_have_their_strides(depth, res4_dilation, res5_dilation, stride):
    cfg = small_deeplab_cfg()
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.DEPTH", depth,
            "MODEL.RESNETS.WIDTH_PER_GROUP", 32,
            "MODEL.RESNETS.RES4_DILATION", res4_dilation,
            "MODEL.RESNETS.RES5_DILATION", res5_dilation,
            "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
        ]
    )  # fmt: skip
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert backbone.size_divisibility == stride
    height, width = 3 * stride, 5 * stride
    features = backbone(torch.randn(1, 3, height, width))
    for name, shape in backbone.output_shape().items():
        assert features[name].shape[1:] == (
            shape.channels,
            height // shape.stride,
            width // shape.stride,
        )
    assert backbone.output_shape()["res5"].stride == stride
    conv = backbone.res5[-1].conv2  # the 3x3 conv of both block types
    assert conv.dilation == (res5_dilation, res5_dilation)
    assert conv.padding == (res5_dilation, res5_dilation)


@pytest.mark.parametrize("res4_dilation,res5_dilation", [(2, 2), (1, 4), (2, 1), (4, 8)])
def test_unsupported_dilations_raise(res4_dilation, res5_dilation):
    with pytest.raises(ValueError, match="MODEL.RESNETS.RES4_DILATION"):
        stage_strides_and_dilations(res4_dilation, res5_dilation)


def steps_to_input_resolution(subdivision_steps: int, coarse_stride: int) -> int:
    settings = PointSettings(
        train_num_points=1,
        oversample_ratio=3,
        importance_sample_ratio=0.75,
        train_boundary_ratio=0.0,
        image_patch_size=0,
        subdivision_steps=subdivision_steps,
        subdivision_num_points=1,
        subdivision_selection="auto",
    )
    return settings.steps_to_input_resolution(coarse_stride)


@pytest.mark.parametrize("coarse_stride,steps", [(4, 2), (8, 3), (16, 4), (32, 5)])
def test_subdivision_steps_derived_from_coarse_stride(coarse_stride, steps):
    assert steps_to_input_resolution(-1, coarse_stride) == steps
    assert steps_to_input_resolution(steps, coarse_stride) == steps


@pytest.mark.parametrize("output_stride,steps", [(16, 4), (8, 3)])
def test_built_model_derives_subdivision_steps(output_stride, steps):
    model = build_model(small_deeplab_cfg(output_stride=output_stride))
    assert model.sem_seg_head.subdivision_steps == steps
    # The FPN configs keep their explicit value, which matches their stride-4 coarse head.
    assert build_model(small_fpn_cfg()).sem_seg_head.subdivision_steps == 2


def test_wrong_subdivision_steps_raise():
    with pytest.raises(ValueError, match=r"SUBDIVISION_STEPS=2 .* coarse stride 16: it must be 4"):
        steps_to_input_resolution(2, 16)
    with pytest.raises(ValueError, match=r"MODEL.POINT_HEAD.SUBDIVISION_STEPS=4 .* must be 3"):
        build_model(small_deeplab_cfg(output_stride=8, **{"MODEL.POINT_HEAD.SUBDIVISION_STEPS": 4}))
    with pytest.raises(ValueError, match="power of 2"):
        steps_to_input_resolution(-1, 12)


def test_train_num_points_derived_from_crop():
    cfg = small_deeplab_cfg(**{"MODEL.POINT_HEAD.TRAIN_NUM_POINTS": -1})
    cfg.merge_from_list(["INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute"])
    cfg.INPUT.CROP.SIZE = (512, 1024)
    assert PointSettings.from_config(cfg).train_num_points == 32 * 64
    cfg.INPUT.CROP.SIZE = (100, 150)  # partial cells count: a stride-16 map of it is 7 x 10
    assert PointSettings.from_config(cfg).train_num_points == 7 * 10
    cfg.INPUT.CROP.TYPE = "relative_range"
    with pytest.raises(ValueError, match="MODEL.POINT_HEAD.TRAIN_NUM_POINTS=-1"):
        PointSettings.from_config(cfg)
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.ENABLED = False
    with pytest.raises(ValueError, match="INPUT.CROP.ENABLED"):
        build_model(cfg)
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 300
    assert PointSettings.from_config(cfg).train_num_points == 300


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("head_name", ["PointRendSemanticHead", "DeepLabV3CoarseHead"])
def test_output_at_input_resolution_for_indivisible_sizes(output_stride, head_name):
    cfg = small_deeplab_cfg(
        num_classes=3, output_stride=output_stride, **{"MODEL.SEM_SEG_HEAD.NAME": head_name}
    )
    model = build_model(cfg).eval()
    head_outputs = []
    model.sem_seg_head.register_forward_hook(lambda module, args, out: head_outputs.append(out[0]))
    images = [
        torch.randint(0, 256, (3, 100, 150)).float(),
        torch.randint(0, 256, (3, 90, 61)).float(),
    ]
    with torch.no_grad():
        results = model([{"image": image} for image in images])
    assert [r["sem_seg"].shape for r in results] == [(3, 100, 150), (3, 90, 61)]
    # Padded to a multiple of the output stride, where the head's output is exactly aligned.
    padded = [-(-size // output_stride) * output_stride for size in (100, 150)]
    assert head_outputs[0].shape == (2, 3, *padded)


def test_fine_grained_features_are_res2(monkeypatch):
    model = build_model(small_deeplab_cfg(num_classes=3))
    res2_maps = []
    model.backbone.res2.register_forward_hook(lambda module, args, out: res2_maps.append(out))
    sampled_maps = []
    original_point_sample = semantic_seg.point_sample

    def recording_point_sample(input, point_coords, **kwargs):
        sampled_maps.append(input)
        return original_point_sample(input, point_coords, **kwargs)

    monkeypatch.setattr(semantic_seg, "point_sample", recording_point_sample)
    assert model.backbone.output_shape()["res2"].stride == 4
    assert model.sem_seg_head.point_head.hidden_layers[0].in_channels == 32 + 3
    batch = [{"image": torch.rand(3, 64, 96) * 255, "sem_seg": torch.randint(0, 3, (64, 96))}]
    with EventStorage():
        model(batch)
    model.eval()
    with torch.no_grad():
        model([{"image": torch.rand(3, 64, 96) * 255}])
    # Training, then each of the 4 subdivision steps, samples the res2 map of that forward.
    fine_maps = [m for m in sampled_maps if any(m is res2 for res2 in res2_maps)]
    assert len(res2_maps) == 2 and len(fine_maps) == 1 + 4
    assert all(m.shape == (1, 32, 64 // 4, 96 // 4) for m in fine_maps)


def shapes_batch(num_images: int = 2, size: int = 64):
    """Images whose label is visible: a bright square (class 1) and a dark disc (class 2)."""
    generator = torch.Generator().manual_seed(0)
    batch = []
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for index in range(num_images):
        labels = torch.zeros(size, size, dtype=torch.long)
        labels[8 + 4 * index : 36 + 4 * index, 10:40] = 1
        labels[(ys - 44) ** 2 + (xs - 44 + 3 * index) ** 2 < 12**2] = 2
        image = torch.tensor([110.0, 120.0, 130.0]).view(3, 1, 1).expand(3, size, size).clone()
        image[:, labels == 1] = 230.0
        image[:, labels == 2] = 20.0
        image += 10 * torch.randn(3, size, size, generator=generator)
        batch.append({"image": image, "sem_seg": labels})
    return batch


@pytest.mark.parametrize("num_classes", [3, 1])
def test_training_lowers_the_loss(num_classes):
    model = build_model(small_deeplab_cfg(num_classes=num_classes)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = shapes_batch()
    if num_classes == 1:  # square and disc are both foreground
        for item in batch:
            item["sem_seg"] = item["sem_seg"].clamp(max=1)
    total_losses = []
    with EventStorage():
        for _ in range(10):
            losses = model(batch)
            assert losses.keys() == {"loss_sem_seg", "loss_sem_seg_point"}
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            total_losses.append(total.item())
    assert sum(total_losses[-3:]) / 3 < 0.75 * total_losses[0], total_losses
