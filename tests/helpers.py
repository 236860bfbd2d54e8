"""
Shared test helpers (one module; test modules import from here, never from each other): small
configs and models built on the CPU, tools/train_net.py runs, the reference's config, image files
with an EXIF orientation, and the comparisons of the instance parity tests.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.projects import point_rend
from detectron2.structures import BitMasks, Boxes, Instances
from PIL import Image

from pointrend_d2.config import setup_cfg

REPO = Path(__file__).resolve().parents[1]


def config_path(name: str) -> Path:
    """The shipped config named ``name``, wherever it lies under configs/ (names are unique)."""
    (path,) = (REPO / "configs").rglob(name)
    return path


def _small_cfg(base_config: str, num_classes: int, options: list, overrides: dict) -> CfgNode:
    """``base_config`` shrunk for fast CPU tests by ``options``, then ``overrides`` (KEY=VALUE)."""
    cfg = setup_cfg(str(config_path(base_config)))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.RESNETS.DEPTH", 18,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes,
            "MODEL.POINT_HEAD.FC_DIM", 32,
            "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 256,
            "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 600,
            *options,
        ]
    )  # fmt: skip
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


def small_fpn_cfg(num_classes: int = 5, **overrides) -> CfgNode:
    """A tiny ResNet-18 FPN PointRend config (random weights) for fast CPU tests."""
    options = [
        "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "SemanticFPNCoarseHead",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.FPN.OUT_CHANNELS", 32,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
    ]  # fmt: skip
    return _small_cfg("Base-PointRend-Semantic-FPN.yaml", num_classes, options, overrides)


def small_deeplab_cfg(num_classes: int = 5, output_stride: int = 16, **overrides) -> CfgNode:
    """A tiny dilated ResNet-18 DeepLabV3 + PointRend config (random weights) for CPU tests."""
    res4_dilation, res5_dilation, aspp_dilations = {
        16: (1, 2, [6, 12, 18]),
        8: (2, 4, [12, 24, 36]),
    }[output_stride]
    options = [
        "MODEL.RESNETS.NORM", "GN",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", 32,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 32,
        "MODEL.RESNETS.RES4_DILATION", res4_dilation,
        "MODEL.RESNETS.RES5_DILATION", res5_dilation,
        "MODEL.DEEPLAB_V3.ASPP_CHANNELS", 32,
        "MODEL.DEEPLAB_V3.ASPP_DILATIONS", aspp_dilations,
        "MODEL.DEEPLAB_V3.NORM", "GN",
        "MODEL.DEEPLAB_V3.DROPOUT", 0.0,
    ]  # fmt: skip
    return _small_cfg("Base-DeepLabV3-PointRend.yaml", num_classes, options, overrides)


def small_rcnn_cfg(num_classes: int = 5, **overrides) -> CfgNode:
    """A tiny ResNet-18 FPN PointRend Mask R-CNN config (random weights) for fast CPU tests."""
    cfg = setup_cfg(str(config_path("Base-PointRend-RCNN-FPN.yaml")))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.RESNETS.DEPTH", 18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
            "MODEL.FPN.OUT_CHANNELS", 32,
            "MODEL.ROI_HEADS.NUM_CLASSES", num_classes,
            "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
            "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
            "MODEL.ROI_MASK_HEAD.FC_DIM", 64,
            "MODEL.POINT_HEAD.FC_DIM", 32,
        ]
    )  # fmt: skip
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


# Small and fast, but the real config, data and tools.
FAST_OPTS = [
    "SOLVER.IMS_PER_BATCH", "2",
    "INPUT.CROP.SIZE", "(128, 128)",
    "SOLVER.WARMUP_ITERS", "5",
    "SOLVER.STEPS", "()",
    "SOLVER.CHECKPOINT_PERIOD", "20",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip

# The instance quickstarts' model, data and tools, smaller and shorter.
INSTANCE_FAST_OPTS = [
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "5",
    "SOLVER.STEPS", "()",
    "SOLVER.CHECKPOINT_PERIOD", "20",
    "INPUT.MIN_SIZE_TRAIN", "(160,)",
    "INPUT.MAX_SIZE_TRAIN", "240",
    "INPUT.MIN_SIZE_TEST", "160",
    "INPUT.MAX_SIZE_TEST", "240",
    "TEST.DETECTIONS_PER_IMAGE", "20",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


def run_train_net(*args: str) -> str:
    """Run tools/train_net.py; return its combined output, failing the test on a non-zero exit."""
    command = [sys.executable, str(REPO / "tools" / "train_net.py"), *args]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return output


def read_metrics(output_dir) -> list:
    with open(output_dir / "metrics.json") as f:
        return [json.loads(line) for line in f if line.strip()]


def _copy_keys(source: CfgNode, target: CfgNode, keys) -> None:
    """Set each dotted key of ``target`` to its value in ``source``."""
    for key in keys:
        node, value = target, source
        *path, leaf = key.split(".")
        for part in path:
            node, value = node[part], value[part]
        node[leaf] = value[leaf]


def reference_cfg(our_cfg: CfgNode, recipe: str = "coco") -> CfgNode:
    """
    The config of detectron2's reference PointRend (a test oracle), from detectron2's own
    settings: its get_cfg() and add_pointrend_config defaults, then the model values of its
    published semantic configs, written out here (as in tests/test_model_zoo_configs.py):
    projects/PointRend/configs/SemanticSegmentation/Base-PointRend-Semantic-FPN.yaml, with what it
    takes from configs/Base-RCNN-FPN.yaml, and for ``recipe="cityscapes"``
    pointrend_semantic_R_101_FPN_1x_cityscapes.yaml. Only sizes come from ``our_cfg``, those a
    test shrinks for the CPU: device, backbone depth and widths, class count, point-head width and
    point counts. Everything that shapes the model otherwise (layers, inputs, flags) is
    detectron2's, so that ours loading its checkpoint shows that the two agree.
    """
    from detectron2.config import get_cfg

    cfg = get_cfg()
    point_rend.add_pointrend_config(cfg)
    published = [
        # configs/Base-RCNN-FPN.yaml
        "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
        "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
        "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
        # Base-PointRend-Semantic-FPN.yaml
        "MODEL.META_ARCHITECTURE", "SemanticSegmentor",
        "MODEL.BACKBONE.FREEZE_AT", 0,
        "MODEL.SEM_SEG_HEAD.NAME", "PointRendSemSegHead",
        "MODEL.POINT_HEAD.NUM_CLASSES", 54,
        "MODEL.POINT_HEAD.FC_DIM", 256,
        "MODEL.POINT_HEAD.NUM_FC", 3,
        "MODEL.POINT_HEAD.IN_FEATURES", ["p2"],
        "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 1024,
        "MODEL.POINT_HEAD.SUBDIVISION_STEPS", 2,
        "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 8192,
        "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "SemSegFPNHead",
        "MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER", False,
    ]  # fmt: skip
    if recipe == "cityscapes":
        published += [
            "MODEL.RESNETS.DEPTH", 101,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 19,
            "MODEL.POINT_HEAD.NUM_CLASSES", 19,
            "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 2048,
            "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 8192,
        ]  # fmt: skip
    else:
        assert recipe == "coco", recipe
    cfg.merge_from_list(published)
    sizes = (
        "MODEL.DEVICE",
        "MODEL.RESNETS.DEPTH",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "MODEL.FPN.OUT_CHANNELS",
        "MODEL.SEM_SEG_HEAD.CONVS_DIM",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "MODEL.POINT_HEAD.FC_DIM",
        "MODEL.POINT_HEAD.TRAIN_NUM_POINTS",
        "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS",
    )
    _copy_keys(our_cfg, cfg, sizes)
    # One class count for both heads, as detectron2 requires.
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    return cfg


def reference_instance_cfg(our_cfg: CfgNode) -> CfgNode:
    """
    The config of detectron2's reference PointRend Mask R-CNN (a test oracle), from detectron2's
    own settings: its get_cfg() and add_pointrend_config defaults, then the values of
    projects/PointRend/configs/InstanceSegmentation/Base-PointRend-RCNN-FPN.yaml (with what it
    takes from configs/Base-RCNN-FPN.yaml), written out here. Only sizes come from ``our_cfg``
    (device, backbone depth and widths, class count, head widths).
    """
    from detectron2.config import get_cfg

    cfg = get_cfg()
    point_rend.add_pointrend_config(cfg)
    cfg.merge_from_list(
        [
            # configs/Base-RCNN-FPN.yaml
            "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
            "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
            "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]],
            "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]],
            "MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"],
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000,
            "MODEL.RPN.PRE_NMS_TOPK_TEST", 1000,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000,
            "MODEL.RPN.POST_NMS_TOPK_TEST", 1000,
            "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
            "MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"],
            "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_FC", 2,
            "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
            "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead",
            "MODEL.ROI_MASK_HEAD.NUM_CONV", 4,
            "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14,
            "MODEL.MASK_ON", True,
            # projects/PointRend/configs/InstanceSegmentation/Base-PointRend-RCNN-FPN.yaml
            "MODEL.ROI_HEADS.NAME", "PointRendROIHeads",
            "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", True,
            "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "",
            "MODEL.ROI_MASK_HEAD.NAME", "PointRendMaskHead",
            "MODEL.ROI_MASK_HEAD.FC_DIM", 1024,
            "MODEL.ROI_MASK_HEAD.NUM_FC", 2,
            "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION", 7,
            "MODEL.ROI_MASK_HEAD.IN_FEATURES", ["p2"],
            "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", True,
            "MODEL.POINT_HEAD.FC_DIM", 256,
            "MODEL.POINT_HEAD.NUM_FC", 3,
            "MODEL.POINT_HEAD.IN_FEATURES", ["p2"],
            "INPUT.MASK_FORMAT", "bitmask",
        ]
    )  # fmt: skip
    sizes = (
        "MODEL.DEVICE",
        "MODEL.RESNETS.DEPTH",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "MODEL.FPN.OUT_CHANNELS",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        "MODEL.ROI_MASK_HEAD.CONV_DIM",
        "MODEL.ROI_MASK_HEAD.FC_DIM",
        "MODEL.POINT_HEAD.FC_DIM",
    )
    _copy_keys(our_cfg, cfg, sizes)
    # One class count for both heads, as detectron2 requires.
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    return cfg


def write_exif_image(path, orientation: int | None, stored_size: tuple[int, int]) -> str:
    """
    Writes a random RGB image of ``stored_size`` (height, width of the pixels as stored) with
    the EXIF Orientation tag ``orientation`` (none if None), as phones do; returns the path.
    Orientations 5-8 display it with height and width swapped.
    """
    rng = np.random.default_rng(orientation or 0)
    image = Image.fromarray(rng.integers(0, 256, (*stored_size, 3), dtype=np.uint8))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, exif=exif)
    return str(path)


def foreground_proposals(image_size, num_classes: int, generator) -> Instances:
    """Six hand-made foreground proposals on integer pixel edges, with block-shaped bit masks."""
    height, width = image_size
    boxes, classes, masks = [], [], []
    for _ in range(6):
        x0 = int(torch.randint(0, width // 2, (1,), generator=generator))
        y0 = int(torch.randint(0, height // 2, (1,), generator=generator))
        box_width = int(torch.randint(8, width // 2, (1,), generator=generator))
        box_height = int(torch.randint(8, height // 2, (1,), generator=generator))
        boxes.append([x0, y0, x0 + box_width, y0 + box_height])
        classes.append(int(torch.randint(0, num_classes, (1,), generator=generator)))
        masks.append(torch.rand(height // 4, width // 4, generator=generator) > 0.5)
    gt_masks = torch.stack(masks).repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    return Instances(
        image_size,
        proposal_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
        gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
        gt_classes=torch.tensor(classes),
        gt_masks=BitMasks(gt_masks),
    )


def pixel_centre_points(proposals: list[Instances], num_points: int, generator):
    """
    (R, P, 2) box-normalized pixel centres of each proposal box (integer edges), at which the
    reference's bilinear reading of bit masks equals ours (the pixel that contains the point):
    column k of a box from x0 of width w is at u = (k + 0.5) / w.
    """
    point_coords = []
    for image_proposals in proposals:
        for x0, y0, x1, y1 in image_proposals.proposal_boxes.tensor.tolist():
            columns = torch.randint(0, int(x1 - x0), (num_points,), generator=generator)
            rows = torch.randint(0, int(y1 - y0), (num_points,), generator=generator)
            point_coords.append(
                torch.stack([(columns + 0.5) / (x1 - x0), (rows + 0.5) / (y1 - y0)], dim=1)
            )
    return torch.stack(point_coords)


def record_mask_logits(monkeypatch, module) -> list:
    """Record the mask logits that ``module`` passes to detectron2's mask_rcnn_inference."""
    recorded = []
    original = module.mask_rcnn_inference

    def record(mask_logits, instances):
        recorded.append(mask_logits)
        return original(mask_logits, instances)

    monkeypatch.setattr(module, "mask_rcnn_inference", record)
    return recorded


def assert_inference_matches(monkeypatch, models, modules, inputs: list[dict]) -> torch.Tensor:
    """
    Instance inference of ``models`` (reference, ours) on ``inputs`` (one image): the same boxes,
    scores, classes and pasted masks, and mask logits that agree to float rounding (rtol 1e-5,
    atol 1e-6 for logits near 0), the reference's of every class (recorded where ``modules``,
    reference first, call mask_rcnn_inference) against ours of the predicted class.

    Returns:
        (R, 1, M, M) the reference's mask logits of the predicted classes.
    """
    reference_model, ours = models
    reference_logits = record_mask_logits(monkeypatch, modules[0])
    our_logits = record_mask_logits(monkeypatch, modules[1])
    with torch.no_grad():
        expected = reference_model(inputs)[0]["instances"]
        actual = ours(inputs)[0]["instances"]
    assert len(actual) > 10, "random weights should give many detections"
    assert torch.equal(actual.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(actual.scores, expected.scores)
    assert torch.equal(actual.pred_classes, expected.pred_classes)
    classes = expected.pred_classes
    expected_logits = reference_logits[0][torch.arange(len(classes)), classes].unsqueeze(1)
    assert our_logits[0].shape == expected_logits.shape == (len(classes), 1, 224, 224)
    torch.testing.assert_close(our_logits[0], expected_logits, rtol=1e-5, atol=1e-6)
    assert actual.pred_masks.shape == (len(actual), inputs[0]["height"], inputs[0]["width"])
    assert torch.equal(actual.pred_masks, expected.pred_masks)
    return expected_logits


def assert_steps_differ_only_at_ties(our_steps, reference_steps, rounding_allowance: float):
    """
    Two instance subdivisions of the same boxes, step records (``SubdivisionStep``) of ours and of
    the reference's arithmetic and selection (a dense top-k): until a selection differs, the maps
    agree to ``rounding_allowance`` relative to the largest logit; at the first step where one
    differs, every differing cell is within twice that box's measured rounding of the N-th
    uncertainty (exactly at it where the rounding is 0: a tie broken the other way). Where no
    selection differs, the final maps agree to the allowance.
    """
    for our_step, reference_step in zip(our_steps, reference_steps, strict=True):
        scale = reference_step.upsampled.abs().max()
        rounding = (our_step.upsampled - reference_step.upsampled).abs().amax(dim=(1, 2, 3))
        assert (rounding <= rounding_allowance * scale).all(), (rounding.max(), scale)
        same = [
            set(a.tolist()) == set(b.tolist())
            for a, b in zip(our_step.point_indices, reference_step.point_indices, strict=True)
        ]
        if all(same):
            continue
        num_points = reference_step.point_indices.shape[1]
        reference_uncertainty = -reference_step.upsampled.abs().flatten(1)
        nth = reference_uncertainty.topk(num_points, dim=1).values[:, -1]
        for box, box_same in enumerate(same):
            if box_same:
                continue
            ours_set = set(our_step.point_indices[box].tolist())
            reference_set = set(reference_step.point_indices[box].tolist())
            cells = torch.tensor(sorted(ours_set ^ reference_set))
            distance = (reference_uncertainty[box, cells] - nth[box]).abs()
            assert (distance <= 2 * rounding[box]).all(), (box, distance.max(), rounding[box])
        return
    final_scale = reference_steps[-1].refined.abs().max()
    difference = (our_steps[-1].refined - reference_steps[-1].refined).abs().max()
    assert difference <= rounding_allowance * final_scale
