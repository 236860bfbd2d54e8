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

    python tools/benchmark.py                       # full run, about 15 minutes on 2 cores
    python tools/benchmark.py --json out.json       # also write the results as JSON
    python tools/benchmark.py --quick               # small sizes, for a smoke test
    python tools/benchmark.py --variants ours ours_topk --no-memory --no-training
                                                    # only the two selections, timings only
"""

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from detectron2.modeling import build_model
from detectron2.structures import ImageList
from detectron2.utils.events import EventStorage

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
    cfg = setup_cfg(str(REPO / "configs" / "Base-PointRend-Semantic-FPN.yaml"))
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


def print_report(results: dict) -> None:
    """Print the results as tables."""
    variants = results["variants"]
    print(
        f"\nMachine: {results['machine']}; torch {results['torch']}, "
        f"{results['threads']} threads; ResNet-{results['depth']}-FPN, random weights, batch 1"
    )
    ratio_headings = "".join(f"{heading:>9}" for heading, _ in RATIO_COLUMNS)
    for case in results["inference"]:
        title = f"{case['height']}x{case['width']}, {case['num_classes']} classes"
        for kind in ("refinement_ms", "whole_ms"):
            times = case[kind]
            repeats = next(iter(times.values()))["n"]
            print(f"\n{title}: {kind[:-3]} (ms, median [min-max] of {repeats})")
            print(f"{'variant':<20}{'median':>10}{'min':>10}{'max':>10}{ratio_headings}")
            for v in variants:
                t = times[v]
                ratios = "".join(
                    f"{ratio(t['median'], times[ref]['median'] if ref in times else 0):>9.3f}"
                    for _, ref in RATIO_COLUMNS
                )
                print(
                    f"{LABELS[v]:<20}{t['median']:>10.1f}{t['min']:>10.1f}{t['max']:>10.1f}"
                    f"{ratios}"
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
    parser.add_argument("--classes", type=int, default=19, help="classes of the 19-class cases")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="variants to run ((a) always runs: it gives the others its weights)",
    )
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--no-training", action="store_true", help="skip the training step")
    parser.add_argument(
        "--memory-probe", nargs=3, metavar=("VARIANT", "PART", "CASE_FILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
