"""
tools/benchmark.py's semantic case (the default): whole semantic segmentation models, in one
process,

  (a) plain SemanticFPN: detectron2's SemanticSegmentor + SemSegFPNHead (4x bilinear upsampling)
  (b) detectron2's reference PointRend (detectron2.projects.point_rend), when importable
  (c) pointrend_d2's PointRend, subdivision selection "bounded"
  (d) pointrend_d2's PointRend, subdivision selection "topk" (dense top-k, exportable)

sharing the same backbone, coarse-head and point-head weights (random, R-50-FPN by default):
refinement (everything after the coarse head's logits) and whole-model timings, peak memory of
the head and of the whole model, (c)'s and (d)'s outputs against (b)'s and each other's, and a
training step of (a) and (c).
"""

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
from detectron2.modeling import build_model
from detectron2.structures import ImageList
from detectron2.utils.events import EventStorage

from pointrend_d2.config import setup_cfg

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = Path(__file__).with_name("benchmark.py")
VARIANTS = ("semantic_fpn", "reference", "ours", "ours_topk")
LABELS = {
    "semantic_fpn": "(a) SemanticFPN",
    "reference": "(b) d2 PointRend",
    "ours": "(c) ours, bounded",
    "ours_topk": "(d) ours, top-k",
}
# Ratio columns of the timing tables: (heading, the variant divided by).
RATIO_COLUMNS = (("/ (b)", "reference"), ("/ (a)", "semantic_fpn"), ("/ (c)", "ours"))
# The output comparisons: (variant, the variant it is checked against).
OUTPUT_CHECKS = (("ours", "reference"), ("ours_topk", "reference"), ("ours_topk", "ours"))
# --quick: one small size on a ResNet-18, one repeat.
QUICK_CASES, QUICK_TRAINING_SIZE, QUICK_DEPTH = [(64, 96, 19)], (64, 96), 18
CASES, TRAINING_SIZE = [(512, 1024, 19), (1024, 2048, 19), (1024, 2048, 150)], (512, 1024)


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
        cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
        point_cfg = cfg.MODEL.pop("POINT_HEAD")
        REFERENCE_POINT_REND.add_pointrend_config(cfg)
        for key, value in point_cfg.items():
            if key != "NAME":
                cfg.MODEL.POINT_HEAD[key] = value
        cfg.MODEL.POINT_HEAD.NUM_CLASSES = num_classes
        cfg.MODEL.SEM_SEG_HEAD.NAME = "PointRendSemSegHead"
    return build_model(cfg).eval()


def build_models(variants, num_classes: int, depth: int, device: str) -> dict:
    """
    The variants (seed 0), the PointRend ones with (a)'s backbone and coarse head, and ours with
    the point head of (b) (or of (c) when (b) is left out).
    """
    torch.manual_seed(0)
    models = {v: build_variant(v, num_classes, depth, device) for v in variants}
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
    return models


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


def random_image(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A (3, H, W) float image of random 0-255 integers, the same for a size on every device."""
    image = torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(0))
    return image.float().to(device)


def backbone_features(model, image: torch.Tensor) -> dict:
    """The backbone's features of one image, normalized and padded as the meta-architecture does."""
    normalized = (image.to(model.device) - model.pixel_mean) / model.pixel_std
    padded = ImageList.from_tensors([normalized], model.backbone.size_divisibility).tensor
    return model.backbone(padded)


def output_checks(models: dict, image: torch.Tensor) -> list:
    """(c)'s and (d)'s outputs against (b)'s and each other's, under each TF32 setting."""
    checked = {v for check in OUTPUT_CHECKS for v in check} & models.keys()
    results = []
    for enabled in tf32_settings(image.device):
        with tf32(enabled), torch.no_grad():
            outputs = {v: models[v]([{"image": image}])[0]["sem_seg"] for v in checked}
        results += [
            {
                "variant": actual,
                "expected": expected,
                "tf32": enabled,
                "max_abs_logit_diff": (outputs[actual] - outputs[expected]).abs().max().item(),
                "argmax_equal": bool(
                    torch.equal(outputs[actual].argmax(0), outputs[expected].argmax(0))
                ),
            }
            for actual, expected in OUTPUT_CHECKS
            if actual in outputs and expected in outputs
        ]
    return results


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


def memory_case(models: dict, image: torch.Tensor, features: dict, depth: int) -> dict:
    """
    Peak memory growth of head and whole model for each variant: on a GPU in this process (the
    peak is reset before each run), on the CPU in a fresh process each (the RSS peak would count
    what this process's allocator kept).
    """
    device = image.device
    if device.type == "cuda":
        with torch.no_grad():
            return {
                v: {
                    "head": peak_memory_growth_mib(lambda m=m: m.sem_seg_head(features), device),
                    "whole": peak_memory_growth_mib(lambda m=m: m([{"image": image}]), device),
                }
                for v, m in models.items()
            }
    num_classes = models["semantic_fpn"].sem_seg_head.predictor.out_channels
    result = {}
    with tempfile.TemporaryDirectory(prefix="pointrend_benchmark_") as workdir:
        case_file = Path(workdir) / "case.pth"
        torch.save({"image": image, "features": features}, case_file)
        for variant in models:
            for part in ("head", "whole"):
                command = [
                    sys.executable, str(BENCHMARK), "--memory-probe", variant, part,
                    str(case_file), "--classes", str(num_classes), "--depth", str(depth),
                    "--device", str(device), "--threads", str(torch.get_num_threads()),
                ]  # fmt: skip
                output = subprocess.run(command, capture_output=True, text=True, check=True)
                result.setdefault(variant, {})[part] = float(output.stdout.splitlines()[-1])
    return result


def inference_case(
    models: dict, height: int, width: int, repeats: int, depth: int, memory: bool
) -> dict:
    """Refinement and whole-model timings of all variants at one size, peak memory, and the
    output checks."""
    plain = models["semantic_fpn"]
    image = random_image(height, width, plain.device)
    with torch.no_grad():
        features = backbone_features(plain, image)
        coarse_logits = plain.sem_seg_head.layers(features)
    fns = {v: refinement_fn(m, features, coarse_logits) for v, m in models.items()}
    refinement = time_interleaved(fns, repeats, plain.device)
    fns = {v: (lambda m=m: m([{"image": image}])) for v, m in models.items()}
    whole = time_interleaved(fns, repeats, plain.device)
    case = {
        "height": height,
        "width": width,
        "num_classes": coarse_logits.shape[1],
        "refinement_ms": refinement,
        "whole_ms": whole,
        "output_checks": output_checks(models, image),
    }
    if memory:
        print("  peak memory ...", file=sys.stderr, flush=True)
        case["memory_mib"] = memory_case(models, image, features, depth)
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

    for model in models.values():
        model.train()
    fns = {v: step(m) for v, m in models.items()}
    times = time_interleaved(fns, repeats, models["ours"].device)
    return {"height": height, "width": width, "batch": batch, "step_ms": times}


def case_tables(case: dict) -> list:
    """The report of one inference case: timing tables, peak memory, output checks."""
    title = f"{case['height']}x{case['width']}, {case['num_classes']} classes"
    blocks = [
        timing_table(f"{title}: {kind[:-3]}", case[kind], LABELS, RATIO_COLUMNS)
        for kind in ("refinement_ms", "whole_ms")
    ]
    if "memory_mib" in case:
        memory = case["memory_mib"]
        reference = memory.get("reference", {})
        rows = [
            [
                LABELS[v],
                f"{memory[v]['head']:.0f}",
                f"{ratio(memory[v]['head'], reference.get('head', 0)):.3f}",
                f"{memory[v]['whole']:.0f}",
                f"{ratio(memory[v]['whole'], reference.get('whole', 0)):.3f}",
            ]
            for v in memory
        ]
        blocks.append(
            Table(
                f"{title}: peak memory growth (MiB)",
                ["variant", "head", "/ (b)", "whole", "/ (b)"],
                rows,
            )
        )
    if case["output_checks"]:
        rows = [
            [
                f"{LABELS[c['variant']][:3]} vs {LABELS[c['expected']][:3]}",
                tf32_label(c["tf32"]),
                f"{c['max_abs_logit_diff']:.2e}",
                "yes" if c["argmax_equal"] else "NO",
            ]
            for c in case["output_checks"]
        ]
        blocks.append(
            Table(
                f"{title}: outputs compared",
                ["outputs", "TF32", "max |logit difference|", "argmax equal"],
                rows,
            )
        )
    return blocks


def training_table(training: dict) -> Table:
    return timing_table(
        f"Training step, batch {training['batch']} of {training['height']}x{training['width']}, "
        "forward + backward",
        training["step_ms"],
        LABELS,
        (("/ (a)", "semantic_fpn"),),
    )


def run(args, device: torch.device, report: Report) -> dict:
    """The semantic benchmark of ``args`` (tools/benchmark.py's), reported case by case."""
    if args.quick:
        cases, training_size, repeats, depth = QUICK_CASES, QUICK_TRAINING_SIZE, 1, QUICK_DEPTH
    else:
        cases, training_size, repeats, depth = CASES, TRAINING_SIZE, args.repeats, args.depth
    variants = [
        v
        for v in VARIANTS
        if (v == "semantic_fpn" or v in args.variants)
        and (v != "reference" or REFERENCE_POINT_REND is not None)
    ]
    results = {
        "case": "semantic",
        **report.header,
        "depth": depth,
        "memory_method": memory_method(device),
        "variants": variants,
        "inference": [],
    }
    report.add(
        f"ResNet-{depth}-FPN, random weights, batch 1; peak memory: {results['memory_method']}"
    )
    models, models_classes = None, None
    for height, width, case_classes in cases:
        if case_classes != models_classes:
            models = None  # one set of models alive at a time
            models = build_models(variants, case_classes, depth, str(device))
            models_classes = case_classes
        print(f"timing {height}x{width}, {case_classes} classes ...", file=sys.stderr, flush=True)
        case = inference_case(models, height, width, repeats, depth, memory=not args.no_memory)
        results["inference"].append(case)
        report.add(*case_tables(case))
        report.save(results)
    if not args.no_training and "ours" in variants:
        print("timing training steps ...", file=sys.stderr, flush=True)
        models = None
        models = build_models(("semantic_fpn", "ours"), args.classes, depth, str(device))
        results["training"] = training_step_case(
            models, *training_size, batch=2, repeats=max(2, repeats // 2)
        )
        report.add(training_table(results["training"]))
        report.save(results)
    return results
