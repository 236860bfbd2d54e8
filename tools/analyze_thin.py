#!/usr/bin/env python
"""
Small and thin objects: a trained model's recall (and, for instances, mask AP) by ground-truth
object size and width, at PointRend's coarse stage and after its refinement, on a test set:

    python tools/analyze_thin.py --config-file configs/pointrend_semseg.yaml \
        --markdown thin_objects.md MODEL.WEIGHTS output/pointrend_semseg/model_final.pth
    python tools/analyze_thin.py --config-file configs/quickstart/pointrend_instance.yaml \
        --markdown thin_objects.md MODEL.WEIGHTS output/pointrend_instance/model_final.pth

The dataset is DATASETS.TEST[0] (or --dataset), its first --max-images images if given. Objects,
sizes and widths are those of :mod:`pointrend_d2.evaluation.object_measures` (width: the diameter
of the largest disc inside the object; bins <= 2, 2-4, 4-8, > 8 px; sizes COCO's).

Semantic PointRend models: pixel and object recall of the coarse prediction (the coarse head's
logits upsampled bilinearly: no subdivision) and of the refined one, and the ground truth the
refinement lost (right before, wrong after), gained, or that both missed; over all classes, and
per class. Instance PointRend models: mask AP, AP50 and recall at IoU 0.5 of the same detections
with the coarse head's S x S masks, the point head's initial grid (28 x 28) and the refined masks.
Models without PointRend (baselines) get the same tables for their output alone.

The tables are printed; --markdown PATH appends them to PATH as a dated section with this command,
--json PATH writes the results to a new file. The tool's options go before the config options
(KEY VALUE ...), which end the command line.
"""

import argparse
import datetime
import functools
import itertools
import json
import logging
import math
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from typing import NamedTuple

import torch
import tqdm
from detectron2.data import MetadataCatalog
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from pointrend_d2 import PointRendInstanceMaskHead, PointRendSemanticHead
from pointrend_d2.checkpoint import load_weights_for_inference
from pointrend_d2.config import setup_cfg
from pointrend_d2.data import register_datasets_from_config
from pointrend_d2.data.catalog import dataset_task, load_dataset_records, validate_dataset_classes
from pointrend_d2.engine import Trainer
from pointrend_d2.evaluation import (
    BINNINGS,
    COCOSizeThinnessEvaluator,
    SemSegSizeThinnessEvaluator,
    StageBreakdown,
    instance_stage_outputs,
    semantic_breakdown,
    semantic_stage_outputs,
)
from pointrend_d2.evaluation.stage_outputs import (
    INSTANCE_STAGES,
    SEMANTIC_STAGES,
    instance_stage_sides,
)

logger = logging.getLogger("pointrend_d2.analyze_thin")

DEFINITIONS = (
    "Objects: connected components of one class in the ground-truth label map (semantic), "
    "ground-truth instances (instances). Size: the object's pixel count, COCO's bins (small "
    "< 32², medium < 96², large). Width: the diameter of the largest disc inside the object "
    "(an n px wide strip has width n). Pixel recall: the fraction of the bin's ground-truth "
    "pixels predicted as their class; an object is found when at least half of its pixels are "
    "(semantic), or when COCO's matching at IoU 0.5 pairs it with a detection (instances). "
    "Lost / gained / missed by both: the fraction of the bin's ground truth right before and "
    "wrong after / wrong before and right after / wrong in both."
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--dataset", help="dataset to analyze (default: DATASETS.TEST[0])")
    parser.add_argument(
        "--max-images", type=positive_int, help="analyze only the dataset's first N images"
    )
    parser.add_argument("--markdown", metavar="PATH", help="append the tables to this file")
    parser.add_argument("--json", metavar="PATH", help="write the results to this new file")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config options KEY VALUE ..., e.g. MODEL.WEIGHTS"
    )
    return parser.parse_args(argv)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def stage_table(breakdown: StageBreakdown, names: dict[str, str], unit: str, title: str) -> str:
    """A markdown table of a breakdown: per bin, the units, each stage's recall and what changed
    from each stage to the last."""
    stages, last = breakdown.stages, breakdown.stages[-1]
    headers = [title, f"GT {unit}s"] + [f"{names[s]} recall %" for s in stages]
    columns = [breakdown.recall(s) for s in stages]
    for stage in stages[:-1]:
        change = f"{names[stage]}→{names[last]}"
        headers += [f"lost {change} %", f"gained {change} %", f"missed by both {change} %"]
        columns += [
            breakdown.lost(stage, last),
            breakdown.gained(stage, last),
            breakdown.missed_by_both(stage, last),
        ]
    rows = [
        [label, int(total), *(percent(100 * column[b]) for column in columns)]
        for b, (label, total) in enumerate(
            zip(breakdown.bin_labels, breakdown.total(), strict=True)
        )
    ]
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def per_class_table(counts, stages, names, binning, class_names) -> str:
    """Per class and bin, each stage's pixel recall ("coarse → refined")."""
    rows = []
    for class_id, class_name in enumerate(class_names):
        breakdown = semantic_breakdown(counts, stages, binning, class_id)
        recalls = [breakdown.recall(stage) for stage in stages]
        rows.append(
            [class_name]
            + [
                "–" if total == 0 else " → ".join(percent(100 * r[b]) for r in recalls)
                for b, total in enumerate(breakdown.total())
            ]
        )
    headers = [f"class \\ {binning.name} ({' → '.join(names[s] for s in stages)})"]
    return tabulate(
        rows, headers=headers + list(binning.labels), tablefmt="pipe", disable_numparse=True
    )


class Stages(NamedTuple):
    """What the analysis runs and how it names the stages."""

    run: Callable[[list[dict]], list[dict]]  # model inputs -> outputs with every stage
    keys: tuple[str, ...]  # the stages' output keys (semantic) or mask fields (instances)
    names: dict[str, str]  # short name by key, for the tables
    description: str  # what each stage is, for the report's header


def semantic_stages(model, dataset: str) -> Stages:
    head = getattr(model, "sem_seg_head", None)
    if head is None:
        raise ValueError(
            f"Dataset {dataset!r} is a semantic dataset but the model ({type(model).__name__}) "
            "has no sem_seg_head: use a semantic config, or an instance dataset (--dataset)"
        )
    if not isinstance(head, PointRendSemanticHead):
        return Stages(model, ("sem_seg",), {"sem_seg": "output"}, "the model's output")
    stride = head.coarse_sem_seg_head.common_stride
    return Stages(
        functools.partial(semantic_stage_outputs, model),
        SEMANTIC_STAGES,
        {"coarse_sem_seg": "coarse", "sem_seg": "refined"},
        f"coarse: the coarse head's logits upsampled bilinearly {stride}x (no subdivision); "
        "refined: the model's output",
    )


def instance_stages(model, dataset: str) -> Stages:
    if not isinstance(model, GeneralizedRCNN) or not getattr(model.roi_heads, "mask_on", False):
        raise ValueError(
            f"Dataset {dataset!r} is an instance dataset but the model ({type(model).__name__}) "
            "predicts no instance masks: use a Mask R-CNN config (MODEL.MASK_ON), or a semantic "
            "dataset (--dataset)"
        )
    if not isinstance(model.roi_heads.mask_head, PointRendInstanceMaskHead):
        return Stages(model, ("pred_masks",), {"pred_masks": "output"}, "the model's masks")
    sides = instance_stage_sides(model)
    names = {field: f"{side}x{side}" for field, side in sides.items()}
    return Stages(
        functools.partial(instance_stage_outputs, model),
        INSTANCE_STAGES,
        names,
        f"{names['coarse_masks']}: the coarse head's masks; {names['initial_masks']}: the point "
        f"head on the grid subdivision starts from; {names['pred_masks']}: the model's refined "
        "masks (the same detections; each upsampled bilinearly to the last, then pasted)",
    )


def semantic_report(evaluator, names) -> tuple[dict, list[str]]:
    """(JSON results, markdown sections) of an evaluated SemSegSizeThinnessEvaluator."""
    results = evaluator.evaluate()["size_thinness"]
    counts = evaluator.summed_counts
    stages = evaluator.stages
    sections = []
    for binning in BINNINGS:
        sections.append(f"### Semantic, by {binning.name}: pixels")
        pixels = semantic_breakdown(counts["pixel"], stages, binning)
        sections.append(stage_table(pixels, names, "pixel", binning.name))
        sections.append(f"### Semantic, by {binning.name}: objects (found: >= half their pixels)")
        objects = semantic_breakdown(counts["object"], stages, binning)
        sections.append(stage_table(objects, names, "object", binning.name))
    for binning in BINNINGS:
        sections.append(f"### Semantic, pixel recall % per class by {binning.name}")
        sections.append(
            per_class_table(counts["pixel"], stages, names, binning, evaluator.class_names)
        )
    return {"all": results, "per_class": evaluator.per_class_results}, sections


def instance_report(evaluator, names, img_ids) -> tuple[dict, list[str]]:
    """(JSON results, markdown sections) of a COCOSizeThinnessEvaluator that processed the
    images ``img_ids``."""
    evaluated = evaluator.evaluate(img_ids=img_ids)
    if "size_thinness" not in evaluated:
        raise ValueError("The dataset's COCO json has no annotations: nothing to analyze")
    results = evaluated["size_thinness"]
    fields = list(names)
    sections = []
    for binning in BINNINGS:
        breakdown = evaluator.breakdowns[binning.name]
        sections.append(f"### Instances, mask AP by {binning.name}")
        rows = [
            [label, int(total)]
            + [
                percent(results[f"{field}/{metric}/{label}"])
                for metric in ("AP", "AP50")
                for field in fields
            ]
            for label, total in zip(breakdown.bin_labels, breakdown.total(), strict=True)
        ]
        headers = [binning.name, "GT objects"] + [
            f"{metric} {names[field]}" for metric in ("AP", "AP50") for field in fields
        ]
        sections.append(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
        sections.append(f"### Instances, recall at IoU 0.5 by {binning.name}")
        sections.append(stage_table(breakdown, names, "object", binning.name))
    return {"all": results}, sections


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    setup_logger(name="pointrend_d2")
    if args.json and os.path.exists(args.json):
        raise FileExistsError(f"--json {args.json}: the file exists; name a new file")
    cfg = setup_cfg(args.config_file, args.opts)
    cfg.freeze()
    register_datasets_from_config(cfg)
    if args.dataset is None and not cfg.DATASETS.TEST:
        raise ValueError("DATASETS.TEST is empty: name the dataset to analyze with --dataset")
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    num_images = len(load_dataset_records([dataset], "--dataset or DATASETS.TEST"))
    if args.max_images:
        num_images = min(num_images, args.max_images)
    model = build_model(cfg)
    task = dataset_task(dataset)
    stages = (semantic_stages if task == "semantic" else instance_stages)(model, dataset)
    validate_dataset_classes(cfg, [dataset])
    load_weights_for_inference(model, cfg)
    model.eval()

    with tempfile.TemporaryDirectory() as scratch:
        if task == "semantic":
            evaluator = SemSegSizeThinnessEvaluator(dataset, prediction_keys=stages.keys)
        else:
            # COCOEvaluator converts a dataset without a COCO json into one in output_dir.
            has_json = hasattr(MetadataCatalog.get(dataset), "json_file")
            evaluator = COCOSizeThinnessEvaluator(
                dataset, None if has_json else scratch, mask_fields=stages.keys
            )
        evaluator.reset()
        img_ids = []
        loader = Trainer.build_test_loader(cfg, dataset)
        with torch.no_grad():
            for inputs in tqdm.tqdm(
                itertools.islice(loader, num_images), total=num_images, unit="image"
            ):
                evaluator.process(inputs, stages.run(inputs))
                img_ids += [x.get("image_id") for x in inputs]
        if task == "semantic":
            results, sections = semantic_report(evaluator, stages.names)
        else:
            results, sections = instance_report(evaluator, stages.names, img_ids)

    command = shlex.join(["python", "tools/analyze_thin.py", *argv])
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    header = [
        f"## Small and thin objects: {dataset}, {date}",
        f"Command: `{command}`",
        f"Images: {num_images}; weights: `{cfg.MODEL.WEIGHTS}`; stages: {stages.description}.",
        DEFINITIONS,
    ]
    report = "\n\n".join(header + sections) + "\n"
    print(report)
    if args.markdown:
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write(report + "\n")
        logger.info("Appended the tables to %s", args.markdown)
    if args.json:
        payload = {"command": command, "date": date, "dataset": dataset, "images": num_images}
        with open(args.json, "x", encoding="utf-8") as f:
            json.dump({**payload, "stages": stages.names, **results}, f, indent=1)
        logger.info("Wrote %s", args.json)


if __name__ == "__main__":
    main()
