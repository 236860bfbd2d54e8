"""Smoke runs of tools/analyze_thin.py on tiny random-weight models and the embedded
textured-shapes val splits (a couple of images each): its tables and results count the ground
truth it was given, and it never overwrites results."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from pointrend_d2.evaluation import read_label_map
from tests.helpers import REPO, small_fpn_cfg, small_rcnn_cfg

SEMANTIC_VAL = "textured_shapes_sem_seg_val"
INSTANCE_VAL = "textured_shapes_instances_val"


def analyze_thin(argv: list[str]) -> None:
    spec = importlib.util.spec_from_file_location("analyze_thin", REPO / "tools/analyze_thin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


def model_files(tmp_path, cfg, name: str) -> list[str]:
    """Writes the config and random weights of ``cfg``'s model; returns the tool's model
    arguments."""
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save(name)
    config_file = tmp_path / f"{name}.yaml"
    config_file.write_text(cfg.dump())
    return ["--config-file", str(config_file), "MODEL.WEIGHTS", str(tmp_path / f"{name}.pth")]


def semantic_model(tmp_path, name="semantic", **overrides) -> list[str]:
    cfg = small_fpn_cfg(
        5,
        **{
            "DATASETS.TEST": (SEMANTIC_VAL,),
            "INPUT.MIN_SIZE_TEST": 128,  # the 512 x 1024 images run at 128 x 256
            "INPUT.MAX_SIZE_TEST": 256,
            "DATALOADER.NUM_WORKERS": 0,
            **overrides,
        },
    )
    return model_files(tmp_path, cfg, name)


def with_options(model_arguments: list[str], *options: str) -> list[str]:
    """The tool's options go before the config options (KEY VALUE ...) at the end."""
    return model_arguments[:2] + list(options) + model_arguments[2:]


def test_semantic_run_counts_every_ground_truth_pixel_and_appends_markdown(tmp_path):
    model = semantic_model(tmp_path)
    markdown, results_file = tmp_path / "thin.md", tmp_path / "thin.json"
    analyze_thin(
        with_options(
            model, "--max-images", "2", "--markdown", str(markdown), "--json", str(results_file)
        )
    )
    results = json.loads(results_file.read_text())
    assert results["dataset"] == SEMANTIC_VAL and results["images"] == 2
    assert results["stages"] == {"coarse_sem_seg": "coarse", "sem_seg": "refined"}
    records = DatasetCatalog.get(SEMANTIC_VAL)[:2]
    ignore = MetadataCatalog.get(SEMANTIC_VAL).ignore_label
    gt_pixels = sum(
        int((read_label_map(r["sem_seg_file_name"], dtype=int) != ignore).sum()) for r in records
    )
    for labels in (
        ("small", "medium", "large"),
        ("width<=2px", "width2-4px", "width4-8px", "width>8px"),
    ):
        assert sum(results["all"][f"pixels/{label}"] for label in labels) == gt_pixels
    for stage in ("coarse_sem_seg", "sem_seg"):
        recall = results["all"][f"{stage}/pixel_recall/large"]
        assert np.isnan(recall) or 0 <= recall <= 100
    assert set(results["per_class"]) == {"background", "blob", "ring", "wire", "dot"}
    first = markdown.read_text()
    for text in (
        f"## Small and thin objects: {SEMANTIC_VAL}, ",
        "Command: `python tools/analyze_thin.py --config-file ",
        "| width<=2px ",
        "coarse recall %",
        "refined recall %",
        "lost coarse→refined %",
        "| wire ",
    ):
        assert text in first, text

    # Results are never overwritten: markdown is appended to, --json must name a new file.
    analyze_thin(with_options(model, "--max-images", "1", "--markdown", str(markdown)))
    both = markdown.read_text()
    assert both.startswith(first) and both.count("## Small and thin objects") == 2
    written = results_file.read_text()
    with pytest.raises(FileExistsError, match=r"--json .*thin\.json: the file exists"):
        analyze_thin(with_options(model, "--json", str(results_file)))
    assert results_file.read_text() == written


def test_instance_run_counts_every_ground_truth_object(tmp_path):
    cfg = small_rcnn_cfg(
        4,
        **{
            "DATASETS.TEST": (INSTANCE_VAL,),
            "INPUT.MIN_SIZE_TEST": 128,
            "INPUT.MAX_SIZE_TEST": 192,
            "TEST.DETECTIONS_PER_IMAGE": 20,
            "DATALOADER.NUM_WORKERS": 0,
        },
    )
    results_file = tmp_path / "thin.json"
    analyze_thin(
        with_options(
            model_files(tmp_path, cfg, "instance"), "--max-images", "2", "--json", str(results_file)
        )
    )
    results = json.loads(results_file.read_text())
    assert results["stages"] == {
        "coarse_masks": "7x7",
        "initial_masks": "28x28",
        "pred_masks": "224x224",
    }
    image_ids = {r["image_id"] for r in DatasetCatalog.get(INSTANCE_VAL)[:2]}
    with open(MetadataCatalog.get(INSTANCE_VAL).json_file) as f:
        annotations = json.load(f)["annotations"]
    num_objects = sum(a["image_id"] in image_ids and not a.get("iscrowd", 0) for a in annotations)
    thin = results["all"]
    assert thin["objects/all"] == num_objects
    assert sum(thin[f"objects/{label}"] for label in ("small", "medium", "large")) == num_objects
    for field in results["stages"]:
        assert f"{field}/AP/width<=2px" in thin and f"{field}/object_recall/small" in thin
    assert "coarse_masks->pred_masks/lost_objects/all" in thin


def test_models_without_point_rend_get_their_output_alone(tmp_path):
    model = semantic_model(
        tmp_path, "baseline", **{"MODEL.SEM_SEG_HEAD.NAME": "SemanticFPNCoarseHead"}
    )
    results_file = tmp_path / "thin.json"
    analyze_thin(with_options(model, "--max-images", "1", "--json", str(results_file)))
    results = json.loads(results_file.read_text())
    assert results["stages"] == {"sem_seg": "output"}
    assert "sem_seg/pixel_recall/small" in results["all"]
    assert not any(key.startswith("coarse") for key in results["all"])


def test_a_semantic_model_on_an_instance_dataset_is_refused(tmp_path):
    model = semantic_model(tmp_path)
    with pytest.raises(ValueError, match=r"'textured_shapes_instances_val' is an instance dataset"):
        analyze_thin(with_options(model, "--dataset", INSTANCE_VAL))
