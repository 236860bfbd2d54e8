"""
Smoke runs of tools/benchmark.py (semantic and instance cases) and tools/benchmark_export.py:
they run and report in their documented format (not timings).
"""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, small_fpn_cfg


def run_tool(tool: str, output_json, *arguments: str):
    """Run ``tools/<tool>`` with ``arguments`` and ``--json output_json``; (completed process,
    the JSON results). Fails with the tool's stderr if it exits non-zero."""
    command = [sys.executable, str(REPO / "tools" / tool), *arguments, "--json", str(output_json)]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, check=False, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(output_json.read_text())


def assert_timings_ordered(case: dict, kinds, variants) -> None:
    """Every timing of the case's ``kinds`` has min <= median <= max, for every variant."""
    for kind in kinds:
        for variant in variants:
            timing = case[kind][variant]
            assert timing["min"] <= timing["median"] <= timing["max"]


@pytest.mark.slow
def test_benchmark_quick_run_reports_all_parts(tmp_path):
    result, results = run_tool("benchmark.py", tmp_path / "benchmark.json", "--quick")
    assert results["variants"] == ["semantic_fpn", "reference", "ours", "ours_topk"]
    (case,) = results["inference"]
    assert (case["height"], case["width"], case["num_classes"]) == (64, 96, 19)
    assert_timings_ordered(case, ("refinement_ms", "whole_ms"), results["variants"])
    for variant in results["variants"]:
        assert set(case["memory_mib"][variant]) == {"head", "whole"}
    checks = {(c["variant"], c["expected"]): c for c in case["output_checks"]}
    assert set(checks) == {("ours", "reference"), ("ours_topk", "reference"), ("ours_topk", "ours")}
    for check in checks.values():
        assert check["argmax_equal"] is True
        assert check["max_abs_logit_diff"] < 1e-4
    # The two selections refine the same cells with the same point head: identical logits.
    assert checks["ours_topk", "ours"]["max_abs_logit_diff"] == 0
    assert set(results["training"]["step_ms"]) == {"semantic_fpn", "ours"}
    # The printed report has a table per part, with ratios to (b) and (a).
    for heading in ("refinement (ms", "whole (ms", "peak memory growth", "Training step"):
        assert heading in result.stdout
    assert "(c) ours, bounded" in result.stdout and "(d) ours, top-k" in result.stdout
    assert "/ (c)" in result.stdout and "argmax equal: False" not in result.stdout


@pytest.mark.slow
def test_benchmark_instance_quick_run_reports_tables_and_identical_masks(tmp_path):
    result, results = run_tool(
        "benchmark.py", tmp_path / "benchmark_instance.json", "--case", "instance", "--quick"
    )
    assert results["variants"] == ["mask_rcnn", "reference", "ours", "ours_topk"]
    (case,) = results["instance"]
    assert (case["height"], case["width"], case["detections"]) == (96, 160, 6)
    assert_timings_ordered(case, ("head_ms", "head_paste_ms"), results["variants"])
    assert set(case["memory_mib"]) == set(results["variants"])
    checks = {(c["variant"], c["expected"]): c for c in case["output_checks"]}
    assert set(checks) == {("ours", "reference"), ("ours_topk", "reference"), ("ours_topk", "ours")}
    for check in checks.values():
        assert check["shape"] == [6, 96, 160]
        assert check["masks_equal"] is True and check["differing_pixels"] == 0
    # The printed report: both timing tables with their ratios, memory, the mask comparisons.
    for text in (
        "mask head (ms",
        "mask head + paste (ms",
        "peak memory of mask head + paste",
        "(a) Mask R-CNN 28x28",
        "(b) d2 PointRend",
        "(c) ours, bounded",
        "(d) ours, top-k",
        "/ (b)",
        "/ (a)",
        "/ (c)",
        "VmHWM",
        "(c) vs (b) pasted masks (6 x 96 x 160): identical, 0 of 92160 pixels differ",
    ):
        assert text in result.stdout, text
    assert "DIFFER" not in result.stdout


@pytest.mark.slow
def test_benchmark_export_quick_run_reports_all_variants(tmp_path):
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(small_fpn_cfg(5).dump())
    result, results = run_tool(
        "benchmark_export.py", tmp_path / "benchmark_export.json", "--config-file",
        str(config_file), "--random-weights", "--size", "64", "96", "--repeats", "1",
    )  # fmt: skip
    assert set(results["whole_ms"]) == {"eager_bounded", "eager_topk", "torch_export", "onnx"}
    assert set(results["export_s"]) == {"torch_export", "onnx"}
    for check in results["output_checks"].values():
        assert check["argmax_agreement"] == 1.0 and check["max_rel_diff"] < 1e-4
    for text in ("/ bounded", "torch.export (.pt2)", "ONNX Runtime vs eager output"):
        assert text in result.stdout
