"""
tools/benchmark.py --case instance: PointRend's instance mask head against detectron2's and
Mask R-CNN's. Mask-head inference (coarse head, subdivision, pasting into the image) for 100
detections of 80 classes in an 800x1333 image, on R-50-FPN-shaped p2-p5 features of random
values (no backbone, no box head), for

  (a) Mask R-CNN's standard mask head: MaskRCNNConvUpsampleHead on ROIAlignV2 features, 28x28 masks
  (b) detectron2's reference PointRendMaskHead (refines every class's logit)
  (c) pointrend_d2's PointRendInstanceMaskHead, subdivision selection "bounded"
  (d) pointrend_d2's PointRendInstanceMaskHead, subdivision selection "topk"

(b), (c) and (d) with the same (random) weights, (a) with its own: head alone and head + paste
(detectron2's detector_postprocess), peak memory, and the pasted masks of (c) and (d) compared
with (b)'s pixel by pixel.
"""

import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from benchmark_harness import (
    REFERENCE_POINT_REND,
    SELECTION,
    Report,
    Table,
    memory_method,
    peak_memory_growth_mib,
    ratio,
    tf32,
    tf32_label,
    tf32_settings,
    time_interleaved,
    timing_table,
)
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import StandardROIHeads
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import nn

from pointrend_d2.config import setup_cfg

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = Path(__file__).with_name("benchmark.py")
VARIANTS = ("mask_rcnn", "reference", "ours", "ours_topk", "implicit")
LABELS = {
    "mask_rcnn": "(a) Mask R-CNN 28x28",
    "reference": "(b) d2 PointRend",
    "ours": "(c) ours, bounded",
    "ours_topk": "(d) ours, top-k",
    "implicit": "(e) ours, Implicit PointRend",
}
RATIO_COLUMNS = (("/ (b)", "reference"), ("/ (a)", "mask_rcnn"), ("/ (c)", "ours"))
# R-50-FPN's maps for the ROI heads: 256 channels at strides 4 to 32.
FPN_LEVELS = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
FPN_CHANNELS = 256
# The mask comparisons: (variant, the variant it is checked against).
OUTPUT_CHECKS = (("ours", "reference"), ("ours_topk", "reference"), ("ours_topk", "ours"))
# --quick: (height, width, detections, classes, repeats).
QUICK = (96, 160, 6, 8, 1)


def instance_cfg(variant: str, num_classes: int, device: str):
    """
    The config of one instance variant's ROI mask branch: ours from the repo's
    Base-PointRend-RCNN-FPN.yaml (Mask R-CNN: its mask head swapped for detectron2's standard one),
    the reference from detectron2's defaults and the keys of its
    projects/PointRend/configs/InstanceSegmentation/Base-PointRend-RCNN-FPN.yaml.
    """
    if variant == "reference":
        cfg = get_cfg()
        REFERENCE_POINT_REND.add_pointrend_config(cfg)
        cfg.merge_from_list(
            [
                "MODEL.MASK_ON", True,
                "MODEL.ROI_HEADS.IN_FEATURES", list(FPN_LEVELS),
                "MODEL.ROI_MASK_HEAD.NAME", "PointRendMaskHead",
                "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "",
                "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14,
                "MODEL.ROI_MASK_HEAD.FC_DIM", 1024,
                "MODEL.ROI_MASK_HEAD.NUM_FC", 2,
                "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION", 7,
                "MODEL.ROI_MASK_HEAD.IN_FEATURES", ["p2"],
                "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", True,
                "MODEL.POINT_HEAD.FC_DIM", 256,
                "MODEL.POINT_HEAD.NUM_FC", 3,
                "MODEL.POINT_HEAD.IN_FEATURES", ["p2"],
                "MODEL.POINT_HEAD.NUM_CLASSES", num_classes,
            ]
        )  # fmt: skip
    else:
        cfg = setup_cfg(
            str(REPO / "configs" / "InstanceSegmentation" / "Base-PointRend-RCNN-FPN.yaml")
        )
        if variant in SELECTION:
            cfg.MODEL.POINT_HEAD.SUBDIVISION_SELECTION = SELECTION[variant]
        elif variant == "mask_rcnn":
            cfg.merge_from_list(
                ["MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead",
                 "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV2",
                 "MODEL.ROI_MASK_HEAD.NUM_CONV", 4]
            )  # fmt: skip
        elif variant == "implicit":
            # configs/InstanceSegmentation/implicit_pointrend_R_50_FPN_1x_coco.yaml's mask head:
            # a 28x28 grid (the root of 784 points), then 3 steps to 224x224.
            cfg.merge_from_list(
                ["MODEL.ROI_MASK_HEAD.NAME", "ImplicitPointRendInstanceMaskHead",
                 "MODEL.POINT_HEAD.SUBDIVISION_STEPS", 3]
            )  # fmt: skip
    cfg.MODEL.DEVICE = device
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    return cfg


class MaskBranch(nn.Module):
    """
    The mask branch of detectron2's StandardROIHeads at inference (its ``_forward_mask`` on
    detected boxes), then the pasting of the masks into the image (``detector_postprocess``).
    """

    def __init__(self, mask_in_features, mask_pooler, mask_head):
        super().__init__()
        self.mask_in_features = list(mask_in_features)
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head

    def forward(
        self, features: dict, boxes: torch.Tensor, classes: torch.Tensor, image_size, paste
    ):
        """Masks of the detections ``boxes`` (R, 4), ``classes`` (R,) in an image of
        ``image_size``: (R, 1, M, M) probabilities, or pasted (R, H, W) bool with ``paste``."""
        instances = Instances(image_size, pred_boxes=Boxes(boxes.clone()), pred_classes=classes)
        if self.mask_pooler is not None:
            maps = [features[f] for f in self.mask_in_features]
            mask_input = self.mask_pooler(maps, [instances.pred_boxes])
        else:
            mask_input = {f: features[f] for f in self.mask_in_features}
        instances = self.mask_head(mask_input, [instances])[0]
        if not paste:
            return instances.pred_masks
        return detector_postprocess(instances, *image_size).pred_masks


def build_mask_branch(variant: str, num_classes: int, device: str) -> MaskBranch:
    """One variant's mask branch (eval mode, on ``device``), for R-50-FPN's p2-p5."""
    cfg = instance_cfg(variant, num_classes, device)
    input_shape = {
        name: ShapeSpec(channels=FPN_CHANNELS, stride=stride) for name, stride in FPN_LEVELS.items()
    }
    return MaskBranch(**StandardROIHeads._init_mask_head(cfg, input_shape)).to(device).eval()


def random_instance_case(
    height: int, width: int, num_detections: int, num_classes: int, device: torch.device
) -> dict:
    """
    Random p2-p5 maps of an ``height x width`` image padded to a multiple of 32 (as R-50-FPN's),
    and ``num_detections`` valid boxes inside the image (sides log-uniform in 16-512 pixels, as
    COCO's objects, clipped to the image) with classes among ``num_classes``.
    """
    generator = torch.Generator().manual_seed(0)
    padded = (-(-height // 32) * 32, -(-width // 32) * 32)
    features = {
        name: torch.randn(1, FPN_CHANNELS, padded[0] // stride, padded[1] // stride,
                          generator=generator)  # fmt: skip
        for name, stride in FPN_LEVELS.items()
    }
    sides = torch.exp(
        torch.empty(num_detections, 2).uniform_(math.log(16), math.log(512), generator=generator)
    )
    sides = torch.minimum(sides, torch.tensor([width - 1.0, height - 1.0]))
    corners = torch.rand(num_detections, 2, generator=generator) * (
        torch.tensor([width, height]) - sides
    )
    boxes = torch.cat([corners, corners + sides], dim=1)
    classes = torch.randint(0, num_classes, (num_detections,), generator=generator)
    case = {"features": features, "boxes": boxes, "classes": classes}
    return {
        "image_size": (height, width),
        **{k: ({n: f.to(device) for n, f in v.items()} if k == "features" else v.to(device))
           for k, v in case.items()},
    }  # fmt: skip


def build_mask_branches(variants, num_classes: int, device: str) -> dict:
    """The variants' mask branches; (c) and (d) with the weights of (b) (or of (c) without (b))."""
    torch.manual_seed(0)
    branches = {v: build_mask_branch(v, num_classes, device) for v in variants}
    pointrend = [v for v in ("reference", "ours", "ours_topk") if v in branches]
    if pointrend:
        # The same parameter names (coarse_head.*, point_head.*): a strict load checks it.
        state = branches[pointrend[0]].mask_head.state_dict()
        for variant in pointrend[1:]:
            branches[variant].mask_head.load_state_dict(state, strict=True)
    return branches


def memory_probe(variant: str, case_file: str, num_classes: int, device: str) -> float:
    """
    In this (fresh) process: growth of the peak memory, in MiB, while one variant's mask branch
    runs once with pasting on the case and weights saved in ``case_file``.
    """
    branch = build_mask_branch(variant, num_classes, device)
    case = torch.load(case_file, weights_only=True, map_location=device)
    if variant in case["weights"]:
        branch.mask_head.load_state_dict(case["weights"][variant])
    image_size = tuple(case["image_size"].tolist())

    def run():
        branch(case["features"], case["boxes"], case["classes"], image_size, paste=True)

    with torch.no_grad():
        return peak_memory_growth_mib(run, torch.device(device))


def memory_case(branches: dict, case: dict, num_classes: int, device: torch.device) -> dict:
    """
    Peak memory growth of each variant's mask branch with pasting: on a GPU in this process (the
    peak is reset before each run), on the CPU in a fresh process each.
    """
    arguments = (case["features"], case["boxes"], case["classes"], case["image_size"])
    if device.type == "cuda":
        with torch.no_grad():
            return {
                v: peak_memory_growth_mib(lambda b=b: b(*arguments, paste=True), device)
                for v, b in branches.items()
            }
    result = {}
    with tempfile.TemporaryDirectory(prefix="pointrend_benchmark_") as workdir:
        case_file = Path(workdir) / "instance_case.pth"
        torch.save(
            {
                "features": case["features"],
                "boxes": case["boxes"],
                "classes": case["classes"],
                "image_size": torch.tensor(case["image_size"]),
                "weights": {v: b.mask_head.state_dict() for v, b in branches.items()},
            },
            case_file,
        )
        for variant in branches:
            command = [
                sys.executable, str(BENCHMARK), "--case", "instance", "--memory-probe", variant,
                "instance", str(case_file), "--classes", str(num_classes), "--device",
                str(device), "--threads", str(torch.get_num_threads()),
            ]  # fmt: skip
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            result[variant] = float(output.splitlines()[-1])
    return result


def mask_checks(branches: dict, arguments: tuple, device: torch.device) -> list:
    """The pasted masks of (c) and (d) against (b)'s and each other's, under each TF32 setting."""
    results = []
    for enabled in tf32_settings(device):
        with tf32(enabled), torch.no_grad():
            masks = {v: b(*arguments, paste=True) for v, b in branches.items() if v != "mask_rcnn"}
        results += [
            {
                "variant": actual,
                "expected": expected,
                "tf32": enabled,
                "shape": list(masks[actual].shape),
                "differing_pixels": int((masks[actual] != masks[expected]).sum()),
                "masks_equal": bool(torch.equal(masks[actual], masks[expected])),
            }
            for actual, expected in OUTPUT_CHECKS
            if actual in masks and expected in masks
        ]
    return results


def instance_case(
    variants, height: int, width: int, num_detections: int, num_classes: int,
    device: torch.device, repeats: int, memory: bool,
) -> dict:  # fmt: skip
    """Timings, memory and mask checks of the instance variants at one size."""
    branches = build_mask_branches(variants, num_classes, str(device))
    case = random_instance_case(height, width, num_detections, num_classes, device)
    arguments = (case["features"], case["boxes"], case["classes"], case["image_size"])
    result = {
        "height": height,
        "width": width,
        "detections": num_detections,
        "num_classes": num_classes,
    }
    for kind, paste in (("head_ms", False), ("head_paste_ms", True)):
        fns = {v: (lambda b=b, p=paste: b(*arguments, paste=p)) for v, b in branches.items()}
        result[kind] = time_interleaved(fns, repeats, device)
    result["output_checks"] = mask_checks(branches, arguments, device)
    if memory:
        print("  peak memory ...", file=sys.stderr, flush=True)
        result["memory_mib"] = memory_case(branches, case, num_classes, device)
    return result


def case_tables(case: dict) -> list:
    """The report of the case: timing tables, peak memory, mask comparisons."""
    title = (
        f"{case['detections']} detections, {case['num_classes']} classes, "
        f"{case['height']}x{case['width']} image, random R-50-FPN-shaped p2-p5"
    )
    blocks = [
        timing_table(f"{title}: {what}", case[kind], LABELS, RATIO_COLUMNS)
        for kind, what in (("head_ms", "mask head"), ("head_paste_ms", "mask head + paste"))
    ]
    if "memory_mib" in case:
        memory = case["memory_mib"]
        rows = [
            [
                LABELS[v],
                f"{mib:.0f}",
                f"{ratio(mib, memory.get('reference', 0)):.3f}",
                f"{ratio(mib, memory.get('mask_rcnn', 0)):.3f}",
            ]
            for v, mib in memory.items()
        ]
        blocks.append(
            Table(
                f"{title}: peak memory of mask head + paste (MiB)",
                ["variant", "MiB", "/ (b)", "/ (a)"],
                rows,
            )
        )
    if case["output_checks"]:
        rows = [
            [
                f"{LABELS[c['variant']][:3]} vs {LABELS[c['expected']][:3]}",
                tf32_label(c["tf32"]),
                " x ".join(map(str, c["shape"])),
                "identical" if c["masks_equal"] else "DIFFER",
                f"{c['differing_pixels']} of {math.prod(c['shape'])}",
            ]
            for c in case["output_checks"]
        ]
        blocks.append(
            Table(
                f"{title}: pasted masks compared",
                ["masks", "TF32", "shape", "result", "differing pixels"],
                rows,
            )
        )
    return blocks


def run(args, device: torch.device, report: Report) -> dict:
    """The instance benchmark of ``args`` (tools/benchmark.py's), reported as measured."""
    if args.quick:
        height, width, num_detections, num_classes, repeats = QUICK
    else:
        height, width = args.size
        num_detections, repeats = args.detections, args.repeats
        num_classes = args.classes or 80
    variants = [
        v
        for v in VARIANTS
        if v in args.variants and (v != "reference" or REFERENCE_POINT_REND is not None)
    ]
    results = {
        "case": "instance",
        **report.header,
        "memory_method": memory_method(device),
        "variants": variants,
        "instance": [],
    }
    report.add(f"Batch of one image; peak memory: {results['memory_method']}")
    print(f"timing {num_detections} detections at {height}x{width} ...", file=sys.stderr)
    case = instance_case(
        variants, height, width, num_detections, num_classes, device, repeats,
        memory=not args.no_memory,
    )  # fmt: skip
    results["instance"].append(case)
    report.add(*case_tables(case))
    report.save(results)
    return results
