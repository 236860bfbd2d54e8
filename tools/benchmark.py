#!/usr/bin/env python
"""
Side-by-side inference benchmark of PointRend semantic segmentation, in one process:

  (a) plain SemanticFPN: detectron2's SemanticSegmentor + SemSegFPNHead (4x bilinear upsampling)
  (b) detectron2's reference PointRend (detectron2.projects.point_rend), when importable
  (c) pointrend_d2's PointRend, subdivision selection "bounded"
  (d) pointrend_d2's PointRend, subdivision selection "topk" (dense top-k, exportable)

All share the same backbone, coarse-head and point-head weights (random, R-50-FPN by default).
Timings are interleaved (a, b, c, d, a, b, c, d, ...) after a warm-up, so that the machine's
drift hits all alike; ratios are taken between medians of the same run. On a GPU (--device cuda)
every timed run is bracketed by torch.cuda.synchronize(). Peak memory is measured in fresh
subprocesses, one per variant: the growth of the peak resident set size on the CPU, of the peak
allocated GPU memory on a GPU. The script also checks that (c)'s and (d)'s outputs equal (b)'s,
and each other's.

--case instance benchmarks PointRend's instance mask head instead: mask-head inference (coarse head,
subdivision, pasting into the image) for 100 detections of 80 classes in an 800x1333 image, on
R-50-FPN-shaped p2-p5 features of random values (no backbone, no box head), for

  (a) Mask R-CNN's standard mask head: MaskRCNNConvUpsampleHead on ROIAlignV2 features, 28x28 masks
  (b) detectron2's reference PointRendMaskHead (refines every class's logit)
  (c) pointrend_d2's PointRendInstanceMaskHead, subdivision selection "bounded"
  (d) pointrend_d2's PointRendInstanceMaskHead, subdivision selection "topk"

(b), (c) and (d) with the same (random) weights, (a) with its own. Timed as above, interleaved,
head alone and head + paste (detectron2's detector_postprocess); peak memory as above, one fresh
process per variant; the pasted masks of (c) and (d) are compared with (b)'s pixel by pixel.

    python tools/benchmark.py                       # full run, about 15 minutes on 2 cores
    python tools/benchmark.py --case instance       # instance mask heads, a few minutes
    python tools/benchmark.py --case instance --detections 50 --size 512 768 --repeats 3
    python tools/benchmark.py --json out.json       # also write the results as JSON
    python tools/benchmark.py --quick               # small sizes, for a smoke test
    python tools/benchmark.py --variants ours ours_topk --no-memory --no-training
                                                    # only the two selections, timings only
"""

import argparse
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import StandardROIHeads, build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from pointrend_d2.config import setup_cfg

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("semantic_fpn", "reference", "ours", "ours_topk")
LABELS = {
    "semantic_fpn": "(a) SemanticFPN",
    "reference": "(b) d2 PointRend",
    "ours": "(c) ours, bounded",
    "ours_topk": "(d) ours, top-k",
}
# The subdivision selection of our variants.
SELECTION = {"ours": "bounded", "ours_topk": "topk"}


def reference_point_rend():
    """detectron2's reference PointRend module, or None if this detectron2 lacks it."""
    try:
        from detectron2.projects import point_rend
    except ImportError:
        return None
    return point_rend


def build_variant(variant: str, num_classes: int, depth: int, device: str):
    """Build one variant (eval mode, on ``device``) from the repo's base config."""
    cfg = setup_cfg(
        str(REPO / "configs" / "SemanticSegmentation" / "Base-PointRend-Semantic-FPN.yaml")
    )
    cfg.merge_from_list(
        ["MODEL.DEVICE", device, "MODEL.RESNETS.DEPTH", depth,
         "MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes]
    )  # fmt: skip
    if variant in SELECTION:
        cfg.MODEL.POINT_HEAD.SUBDIVISION_SELECTION = SELECTION[variant]
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    if variant == "semantic_fpn":
        cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
        cfg.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"
    elif variant == "reference":
        point_rend = reference_point_rend()
        cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
        point_cfg = cfg.MODEL.pop("POINT_HEAD")
        point_rend.add_pointrend_config(cfg)
        for key, value in point_cfg.items():
            if key != "NAME":
                cfg.MODEL.POINT_HEAD[key] = value
        cfg.MODEL.POINT_HEAD.NUM_CLASSES = num_classes
        cfg.MODEL.SEM_SEG_HEAD.NAME = "PointRendSemSegHead"
    return build_model(cfg).eval()


def share_weights(models: dict) -> None:
    """
    Give the PointRend variants (a)'s backbone and coarse head, and ours the point head of (b)
    (or of (c) when (b) is left out).
    """
    plain = models["semantic_fpn"]
    pointrend = [v for v in ("reference", "ours", "ours_topk") if v in models]
    for variant in pointrend:
        models[variant].backbone.load_state_dict(plain.backbone.state_dict())
        coarse = models[variant].sem_seg_head.coarse_sem_seg_head
        coarse.load_state_dict(plain.sem_seg_head.state_dict())
    if pointrend:
        point_head = models[pointrend[0]].sem_seg_head.point_head.state_dict()
        for variant in pointrend[1:]:
            models[variant].sem_seg_head.point_head.load_state_dict(point_head)


def refinement_fn(model, features, coarse_logits):
    """Everything a variant does after the coarse head's logits, as a closure."""
    head = model.sem_seg_head
    if hasattr(head, "subdivision_inference"):  # ours
        return lambda: head.subdivision_inference(features, coarse_logits)
    if hasattr(head, "coarse_sem_seg_head"):  # reference: its forward with the coarse logits given
        coarse_head = head.coarse_sem_seg_head

        def run():
            layers = coarse_head.layers
            coarse_head.layers = lambda _: coarse_logits
            try:
                return head(features)[0]
            finally:
                coarse_head.layers = layers

        return run
    return lambda: torch.nn.functional.interpolate(  # SemSegFPNHead.forward's upsampling
        coarse_logits, scale_factor=head.common_stride, mode="bilinear", align_corners=False
    )


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a timer measures it (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict, repeats: int, device: torch.device, warmup: int = 1) -> dict:
    """Run each closure ``warmup`` then ``repeats`` times, interleaved; times in ms."""
    times = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                fn()
            synchronize(device)
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return {
        name: {"median": statistics.median(t), "min": min(t), "max": max(t), "n": len(t)}
        for name, t in times.items()
    }


def random_image(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A (3, H, W) float image of random 0-255 integers, the same for a size on every device."""
    image = torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(0))
    return image.float().to(device)


def backbone_features(model, image: torch.Tensor) -> dict:
    """The backbone's features of one image, normalized and padded as the meta-architecture does."""
    normalized = (image.to(model.device) - model.pixel_mean) / model.pixel_std
    padded = ImageList.from_tensors([normalized], model.backbone.size_divisibility).tensor
    return model.backbone(padded)


# The output comparisons: (variant, the variant it is checked against).
OUTPUT_CHECKS = (("ours", "reference"), ("ours_topk", "reference"), ("ours_topk", "ours"))


def inference_case(models: dict, height: int, width: int, repeats: int) -> dict:
    """Refinement and whole-model timings of all variants at one size, and the output checks."""
    plain = models["semantic_fpn"]
    image = random_image(height, width, plain.device)
    with torch.no_grad():
        features = backbone_features(plain, image)
        coarse_logits = plain.sem_seg_head.layers(features)
    fns = {v: refinement_fn(m, features, coarse_logits) for v, m in models.items()}
    refinement = time_interleaved(fns, repeats, plain.device)
    fns = {v: (lambda m=m: m([{"image": image}])) for v, m in models.items()}
    whole = time_interleaved(fns, repeats, plain.device)
    case = {"height": height, "width": width, "refinement_ms": refinement, "whole_ms": whole}
    with torch.no_grad():
        outputs = {
            v: models[v]([{"image": image}])[0]["sem_seg"]
            for v in {v for check in OUTPUT_CHECKS for v in check} & models.keys()
        }
    case["output_checks"] = [
        {
            "variant": actual,
            "expected": expected,
            "max_abs_logit_diff": (outputs[actual] - outputs[expected]).abs().max().item(),
            "argmax_equal": bool(
                torch.equal(outputs[actual].argmax(0), outputs[expected].argmax(0))
            ),
        }
        for actual, expected in OUTPUT_CHECKS
        if actual in outputs and expected in outputs
    ]
    return case


def training_step_case(models: dict, height: int, width: int, batch: int, repeats: int) -> dict:
    """Forward + backward time of (a) and (c) on a batch with random labels."""
    generator = torch.Generator().manual_seed(0)
    num_classes = models["ours"].sem_seg_head.coarse_sem_seg_head.predictor.out_channels
    inputs = [
        {
            "image": random_image(height, width),
            "sem_seg": torch.randint(0, num_classes, (height, width), generator=generator),
        }
        for _ in range(batch)
    ]

    def step(model):
        def run():
            with torch.enable_grad(), EventStorage():
                losses = model(inputs)
                sum(losses.values()).backward()
            model.zero_grad(set_to_none=True)

        return run

    training = {v: models[v] for v in ("semantic_fpn", "ours")}
    for model in training.values():
        model.train()
    try:
        fns = {v: step(m) for v, m in training.items()}
        times = time_interleaved(fns, repeats, models["ours"].device)
    finally:
        for model in training.values():
            model.eval()
    return {"height": height, "width": width, "batch": batch, "step_ms": times}


def _proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory_growth_mib(run, device: torch.device) -> float:
    """
    How far the memory in use rises above its current value while ``run()`` runs, in MiB: the
    allocated memory on a GPU, the resident set size on the CPU. On the CPU the kernel's peak
    (VmHWM) is first reset to the current RSS (``/proc/self/clear_refs``), as ``getrusage``'s
    peak also counts what this process (and, across exec, its parent) held before.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kib("VmRSS")
    run()
    return (_proc_status_kib("VmHWM") - before) / 1024


def memory_probe(
    variant: str, part: str, case_file: str, num_classes: int, depth: int, device: str
) -> float:
    """
    In this (fresh) process: growth of the peak memory, in MiB, while running ``part`` once on
    the image and backbone features saved in ``case_file``: "head" (the semantic head on the
    features) or "whole" (the whole model on the image).
    """
    torch.manual_seed(0)
    model = build_variant(variant, num_classes, depth, device)
    case = torch.load(case_file, weights_only=True, map_location=model.device)
    with torch.no_grad():
        if part == "head":
            return peak_memory_growth_mib(
                lambda: model.sem_seg_head(case["features"]), model.device
            )
        del case["features"]
        return peak_memory_growth_mib(lambda: model([{"image": case["image"]}]), model.device)


def memory_case(
    variants, image, features, num_classes: int, depth: int, device: str, workdir: Path
) -> dict:
    """Peak memory growth of head and whole model for each variant, each in a fresh process."""
    case_file = workdir / f"case_{num_classes}_{image.shape[1]}x{image.shape[2]}.pth"
    torch.save({"image": image, "features": features}, case_file)
    result = {}
    for variant in variants:
        for part in ("head", "whole"):
            command = [
                sys.executable, __file__, "--memory-probe", variant, part, str(case_file),
                "--classes", str(num_classes), "--depth", str(depth), "--device", device,
                "--threads", str(torch.get_num_threads()),
            ]  # fmt: skip
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            result.setdefault(variant, {})[part] = float(output.strip().splitlines()[-1])
    return result


def ratio(value: float, reference: float) -> float:
    return value / reference if reference else float("nan")


# Ratio columns of the tables: (heading, the variant divided by).
RATIO_COLUMNS = (("/ (b)", "reference"), ("/ (a)", "semantic_fpn"), ("/ (c)", "ours"))


def print_time_table(
    title: str, times: dict, variants: list, labels: dict, ratio_columns, label_width: int
) -> None:
    """One table of timings: median, min and max per variant, and the median's ratio to each
    reference column's variant."""
    repeats = next(iter(times.values()))["n"]
    ratio_headings = "".join(f"{heading:>9}" for heading, _ in ratio_columns)
    print(f"\n{title} (ms, median [min-max] of {repeats})")
    print(f"{'variant':<{label_width}}{'median':>10}{'min':>10}{'max':>10}{ratio_headings}")
    for v in variants:
        t = times[v]
        ratios = "".join(
            f"{ratio(t['median'], times[ref]['median'] if ref in times else 0):>9.3f}"
            for _, ref in ratio_columns
        )
        print(
            f"{labels[v]:<{label_width}}{t['median']:>10.1f}{t['min']:>10.1f}{t['max']:>10.1f}"
            f"{ratios}"
        )


def print_report(results: dict) -> None:
    """Print the results as tables."""
    variants = results["variants"]
    print(
        f"\nMachine: {results['machine']}; torch {results['torch']}, "
        f"{results['threads']} threads; ResNet-{results['depth']}-FPN, random weights, batch 1"
    )
    for case in results["inference"]:
        title = f"{case['height']}x{case['width']}, {case['num_classes']} classes"
        for kind in ("refinement_ms", "whole_ms"):
            print_time_table(
                f"{title}: {kind[:-3]}", case[kind], variants, LABELS, RATIO_COLUMNS, 20
            )
        if "memory_mib" in case:
            print(f"\n{title}: peak memory growth (MiB, fresh process each)")
            print(f"{'variant':<20}{'head':>10}{'/ (b)':>9}{'whole':>10}{'/ (b)':>9}")
            memory = case["memory_mib"]
            for v in variants:
                ref = memory.get("reference", {})
                head, whole = memory[v]["head"], memory[v]["whole"]
                print(
                    f"{LABELS[v]:<20}{head:>10.0f}{ratio(head, ref.get('head', 0)):>9.3f}"
                    f"{whole:>10.0f}{ratio(whole, ref.get('whole', 0)):>9.3f}"
                )
        if case["output_checks"]:
            print()
        for check in case["output_checks"]:
            print(
                f"{LABELS[check['variant']][:3]} vs {LABELS[check['expected']][:3]} output: "
                f"max |logit difference| {check['max_abs_logit_diff']:.2e}, "
                f"argmax equal: {check['argmax_equal']}"
            )
    if "training" not in results:
        return
    training = results["training"]
    times = training["step_ms"]
    print(
        f"\nTraining step, batch {training['batch']} of {training['height']}x{training['width']}, "
        "forward + backward (ms)"
    )
    for v, t in times.items():
        print(
            f"{LABELS[v]:<20}{t['median']:>10.1f}{t['min']:>10.1f}{t['max']:>10.1f}"
            f"{ratio(t['median'], times['semantic_fpn']['median']):>9.3f}"
        )


# ---------------------------------------------------------------------------------------------
# --case instance: PointRend's instance mask head against detectron2's and Mask R-CNN's.

INSTANCE_VARIANTS = ("mask_rcnn", "reference", "ours", "ours_topk")
INSTANCE_LABELS = {
    "mask_rcnn": "(a) Mask R-CNN 28x28",
    "reference": "(b) d2 PointRend",
    "ours": "(c) ours, bounded",
    "ours_topk": "(d) ours, top-k",
}
# R-50-FPN's maps for the ROI heads: 256 channels at strides 4 to 32.
FPN_LEVELS = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
FPN_CHANNELS = 256
# The mask comparisons: (variant, the variant it is checked against).
INSTANCE_OUTPUT_CHECKS = (("ours", "reference"), ("ours_topk", "reference"), ("ours_topk", "ours"))


def instance_cfg(variant: str, num_classes: int, device: str):
    """
    The config of one instance variant's ROI mask branch: ours from the repo's
    Base-PointRend-RCNN-FPN.yaml (Mask R-CNN: its mask head swapped for detectron2's standard one),
    the reference from detectron2's defaults and the keys of its
    projects/PointRend/configs/InstanceSegmentation/Base-PointRend-RCNN-FPN.yaml.
    """
    if variant == "reference":
        cfg = get_cfg()
        reference_point_rend().add_pointrend_config(cfg)
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


def instance_memory_probe(variant: str, case_file: str, num_classes: int, device: str) -> float:
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


def instance_case(
    variants, height: int, width: int, num_detections: int, num_classes: int, device: str,
    repeats: int, memory: bool,
) -> dict:  # fmt: skip
    """Timings, memory and mask checks of the instance variants at one size."""
    branches = build_mask_branches(variants, num_classes, device)
    case = random_instance_case(height, width, num_detections, num_classes, torch.device(device))
    arguments = (case["features"], case["boxes"], case["classes"], case["image_size"])
    result = {
        "height": height,
        "width": width,
        "detections": num_detections,
        "num_classes": num_classes,
    }
    for kind, paste in (("head_ms", False), ("head_paste_ms", True)):
        fns = {v: (lambda b=b, p=paste: b(*arguments, paste=p)) for v, b in branches.items()}
        result[kind] = time_interleaved(fns, repeats, torch.device(device))
    with torch.no_grad():
        masks = {v: b(*arguments, paste=True) for v, b in branches.items() if v != "mask_rcnn"}
    result["output_checks"] = [
        {
            "variant": actual,
            "expected": expected,
            "shape": list(masks[actual].shape),
            "differing_pixels": int((masks[actual] != masks[expected]).sum()),
            "masks_equal": bool(torch.equal(masks[actual], masks[expected])),
        }
        for actual, expected in INSTANCE_OUTPUT_CHECKS
        if actual in masks and expected in masks
    ]
    if memory:
        result["memory_mib"] = instance_memory_case(branches, case, num_classes, device)
    return result


def instance_memory_case(branches: dict, case: dict, num_classes: int, device: str) -> dict:
    """Peak memory growth of each variant's mask branch with pasting, each in a fresh process."""
    workdir = Path(tempfile.mkdtemp(prefix="pointrend_benchmark_"))
    try:
        case_file = workdir / "instance_case.pth"
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
        result = {}
        for variant in branches:
            command = [
                sys.executable, __file__, "--case", "instance", "--memory-probe", variant,
                "instance", str(case_file), "--classes", str(num_classes), "--device", device,
                "--threads", str(torch.get_num_threads()),
            ]  # fmt: skip
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            result[variant] = float(output.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(workdir)


INSTANCE_RATIO_COLUMNS = (("/ (b)", "reference"), ("/ (a)", "mask_rcnn"), ("/ (c)", "ours"))


def memory_method(device: str) -> str:
    if torch.device(device).type == "cuda":
        return "growth of torch.cuda.max_memory_allocated over the run"
    return "growth of the peak RSS (VmHWM, reset through /proc/self/clear_refs) over the run"


def print_instance_report(results: dict) -> None:
    """Print the instance results as tables."""
    variants = results["variants"]
    print(
        f"\nMachine: {results['machine']}; torch {results['torch']}, "
        f"{results['threads']} threads, device {results['device']}"
    )
    for case in results["instance"]:
        title = (
            f"{case['detections']} detections, {case['num_classes']} classes, "
            f"{case['height']}x{case['width']} image, random R-50-FPN-shaped p2-p5"
        )
        for kind, what in (("head_ms", "mask head"), ("head_paste_ms", "mask head + paste")):
            print_time_table(
                f"{title}: {what}",
                case[kind],
                variants,
                INSTANCE_LABELS,
                INSTANCE_RATIO_COLUMNS,
                22,
            )
        if "memory_mib" in case:
            memory = case["memory_mib"]
            print(
                f"\n{title}: peak memory of mask head + paste (MiB; fresh process each; "
                f"{memory_method(results['device'])})"
            )
            print(f"{'variant':<22}{'MiB':>10}{'/ (b)':>9}{'/ (a)':>9}")
            for v in variants:
                print(
                    f"{INSTANCE_LABELS[v]:<22}{memory[v]:>10.0f}"
                    f"{ratio(memory[v], memory.get('reference', 0)):>9.3f}"
                    f"{ratio(memory[v], memory.get('mask_rcnn', 0)):>9.3f}"
                )
        if case["output_checks"]:
            print()
        for check in case["output_checks"]:
            pixels = math.prod(check["shape"])
            print(
                f"{INSTANCE_LABELS[check['variant']][:3]} vs "
                f"{INSTANCE_LABELS[check['expected']][:3]} pasted masks "
                f"({' x '.join(map(str, check['shape']))}): "
                f"{'identical' if check['masks_equal'] else 'DIFFER'}, "
                f"{check['differing_pixels']} of {pixels} pixels differ"
            )


def instance_main(args: argparse.Namespace) -> None:
    """--case instance."""
    if args.quick:
        height, width, num_detections, num_classes, repeats = 96, 160, 6, 8, 1
    else:
        height, width = args.size
        num_detections, repeats = args.detections, args.repeats
        num_classes = args.classes or 80
    variants = [
        v
        for v in INSTANCE_VARIANTS
        if v in args.variants and (v != "reference" or reference_point_rend() is not None)
    ]
    device = torch.device(args.device)
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}"
    if device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(device)}"
    print(f"timing {num_detections} detections at {height}x{width} ...", file=sys.stderr)
    case = instance_case(
        variants, height, width, num_detections, num_classes, args.device, repeats,
        memory=not args.no_memory,
    )  # fmt: skip
    results = {
        "case": "instance",
        "machine": machine,
        "torch": torch.__version__,
        "threads": args.threads,
        "device": args.device,
        "memory_method": memory_method(args.device),
        "variants": variants,
        "instance": [case],
    }
    print_instance_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and 2 repeats (smoke test)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant and case")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (synchronized timings)")
    parser.add_argument("--depth", type=int, default=50, help="ResNet depth of the backbone")
    parser.add_argument(
        "--classes",
        type=int,
        default=None,
        help="classes: of the 19-class semantic cases (default 19), of the instance case (80)",
    )
    parser.add_argument(
        "--case",
        choices=("semantic", "instance"),
        default="semantic",
        help="semantic segmentation models, or instance mask heads (see above)",
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=(800, 1333),
        metavar=("H", "W"),
        help="instance case: image size",
    )
    parser.add_argument(
        "--detections", type=int, default=100, help="instance case: detections in the image"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(set(VARIANTS) | set(INSTANCE_VARIANTS)),
        default=None,
        help="variants to run (semantic: (a) always runs, it gives the others its weights)",
    )
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--no-training", action="store_true", help="skip the training step")
    parser.add_argument(
        "--memory-probe", nargs=3, metavar=("VARIANT", "PART", "CASE_FILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    case_variants = INSTANCE_VARIANTS if args.case == "instance" else VARIANTS
    if args.variants and not set(args.variants) <= set(case_variants):
        parser.error(f"--case {args.case} has the variants {', '.join(case_variants)}")
    args.variants = args.variants or list(case_variants)
    if args.case == "instance":
        if args.memory_probe:
            variant, _, case_file = args.memory_probe
            print(instance_memory_probe(variant, case_file, args.classes, args.device))
            return
        instance_main(args)
        return
    args.classes = args.classes or 19
    if args.memory_probe:
        print(
            memory_probe(
                *args.memory_probe, num_classes=args.classes, depth=args.depth, device=args.device
            )
        )
        return

    if args.quick:
        cases = [(64, 96, 19)]
        training_size, repeats, depth = (64, 96), 1, 18
    else:
        cases = [(512, 1024, 19), (1024, 2048, 19), (1024, 2048, 150)]
        training_size, repeats, depth = (512, 1024), args.repeats, args.depth
    variants = [
        v
        for v in VARIANTS
        if (v == "semantic_fpn" or v in args.variants)
        and (v != "reference" or reference_point_rend() is not None)
    ]
    device = torch.device(args.device)
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}"
    if device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(device)}"
    results = {
        "machine": machine,
        "torch": torch.__version__,
        "threads": args.threads,
        "device": args.device,
        "depth": depth,
        "variants": variants,
        "inference": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="pointrend_benchmark_"))
    models, models_classes = None, None
    for height, width, num_classes in cases:
        if num_classes != models_classes:
            models = None  # one set of models alive at a time
            torch.manual_seed(0)
            models = {v: build_variant(v, num_classes, depth, args.device) for v in variants}
            share_weights(models)
            models_classes = num_classes
        print(f"timing {height}x{width}, {num_classes} classes ...", file=sys.stderr)
        case = inference_case(models, height, width, repeats)
        case["num_classes"] = num_classes
        if not args.no_memory:
            print("  memory probes ...", file=sys.stderr)
            image = random_image(height, width, device)
            with torch.no_grad():
                features = backbone_features(models["semantic_fpn"], image)
            case["memory_mib"] = memory_case(
                variants, image, features, num_classes, depth, args.device, workdir
            )
        results["inference"].append(case)
    if not args.no_training and "ours" in variants:
        print("timing training steps ...", file=sys.stderr)
        models = None
        torch.manual_seed(0)
        models = {
            v: build_variant(v, args.classes, depth, args.device) for v in ("semantic_fpn", "ours")
        }
        share_weights(models)
        results["training"] = training_step_case(
            models, *training_size, batch=2, repeats=max(2, repeats // 2)
        )
    shutil.rmtree(workdir)
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
