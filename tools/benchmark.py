#!/usr/bin/env python
"""
Side-by-side inference benchmark of PointRend, in one process: detectron2's baseline (a),
detectron2's reference PointRend (b, when importable) and pointrend_d2's with the "bounded" (c)
and "topk" (d) subdivision selections, sharing their weights.

  --case semantic (default)  whole semantic segmentation models (tools/benchmark_semantic.py):
                             refinement and whole-model timings at 512x1024 and 1024x2048, peak
                             memory, output parity, a training step; R-50-FPN, random weights
  --case instance            instance mask heads (tools/benchmark_instance.py): 100 detections
                             of 80 classes in an 800x1333 image, head and head + paste, peak
                             memory, pasted-mask parity

Timings are interleaved (a, b, c, d, a, b, c, d, ...) after a warm-up, so that the machine's
drift hits all alike; ratios are taken between medians of the same run. On a GPU (--device cuda)
every timed run is bracketed by torch.cuda.synchronize(), peak memory is measured in this process
(torch.cuda.max_memory_allocated after a reset), and the parity checks run with TF32 off and on
(reported both); on the CPU peak memory is the growth of the peak RSS in a fresh process per
variant, and TF32 does not apply. Each case is printed, and written to --json and --markdown,
as soon as it is measured, so a run cut short keeps what it measured.

    python tools/benchmark.py                       # full run, about 15 minutes on 2 cores
    python tools/benchmark.py --device cuda --markdown docs/results/semantic-h200.md
    python tools/benchmark.py --case instance       # instance mask heads, a few minutes
    python tools/benchmark.py --case instance --detections 50 --size 512 768 --repeats 3
    python tools/benchmark.py --json out.json       # also write the results as JSON
    python tools/benchmark.py --quick               # small sizes, for a smoke test
    python tools/benchmark.py --variants ours ours_topk --no-memory --no-training
                                                    # only the two selections, timings only
"""

import argparse

import benchmark_instance
import benchmark_semantic
import torch
from benchmark_harness import (
    Report,
    add_output_arguments,
    check_device,
    check_new_outputs,
    run_header,
)

CASES = {"semantic": benchmark_semantic, "instance": benchmark_instance}


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--case",
        choices=tuple(CASES),
        default="semantic",
        help="semantic segmentation models, or instance mask heads (see above)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and 1 repeat (smoke test)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant and case")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (synchronized timings)")
    parser.add_argument("--depth", type=int, default=50, help="semantic: ResNet depth")
    parser.add_argument(
        "--classes",
        type=int,
        default=None,
        help="semantic: classes of the training step (default 19); instance: classes (80)",
    )
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=(800, 1333),
        metavar=("H", "W"),
        help="instance: image size",
    )
    parser.add_argument(
        "--detections", type=int, default=100, help="instance: detections in the image"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(set(benchmark_semantic.VARIANTS) | set(benchmark_instance.VARIANTS)),
        default=None,
        help="variants to run (semantic: (a) always runs, it gives the others its weights)",
    )
    add_output_arguments(parser)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak memory")
    parser.add_argument("--no-training", action="store_true", help="semantic: no training step")
    parser.add_argument(
        "--memory-probe", nargs=3, metavar=("VARIANT", "PART", "CASE_FILE"), help=argparse.SUPPRESS
    )
    return parser


def main(argv=None) -> dict | None:
    parser = argument_parser()
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = check_device(parser, args.device)
    case_variants = CASES[args.case].VARIANTS
    if args.variants and not set(args.variants) <= set(case_variants):
        parser.error(f"--case {args.case} has the variants {', '.join(case_variants)}")
    args.variants = args.variants or list(case_variants)
    if args.memory_probe:  # one CPU memory measurement, in the fresh process a case started
        variant, part, case_file = args.memory_probe
        if args.case == "instance":
            print(benchmark_instance.memory_probe(variant, case_file, args.classes, args.device))
        else:
            print(
                benchmark_semantic.memory_probe(
                    variant, part, case_file, args.classes, args.depth, args.device
                )
            )
        return None
    if args.case == "semantic":
        args.classes = args.classes or 19
    check_new_outputs(parser, args)
    report = Report(
        f"pointrend_d2 benchmark: {args.case}",
        run_header(device, args.threads),
        args.json,
        args.markdown,
    )
    return CASES[args.case].run(args, device, report)


if __name__ == "__main__":
    main()
