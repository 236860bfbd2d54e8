"""tools/seeded_runs.py without training: the commands of the runs it lacks (resuming
an interrupted one), and the table it writes from the runs' final evaluations."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO


def runs_tool():
    spec = importlib.util.spec_from_file_location("seeded_runs", REPO / "tools" / "seeded_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(root, name: str, values: dict) -> None:
    """A finished run: training metrics, then the final evaluation's."""
    (root / name).mkdir(parents=True)
    lines = [{"iteration": 9, "total_loss": 1.0}, {"iteration": 9, **values}]
    (root / name / "metrics.json").write_text("\n".join(json.dumps(line) for line in lines))


def test_dry_run_lists_the_missing_runs_and_resumes_interrupted_ones(tmp_path, capsys):
    write_run(tmp_path, "semantic_full_seed0", {"sem_seg/mIoU": 70.0, "boundary_iou/mBIoU": 60.0})
    (tmp_path / "semantic_points20_seed0").mkdir()
    (tmp_path / "semantic_points20_seed0" / "last_checkpoint").write_text("model_0000099.pth")
    runs_tool().main(["semantic", "--seeds", "0", "1", "--output-root", str(tmp_path), "--dry-run"])
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 3  # all but the finished run
    assert "--resume" in commands[0] and "pointrend_semseg_points.yaml" in commands[0]
    assert commands[1].endswith(f"SEED 1 OUTPUT_DIR {tmp_path}/semantic_full_seed1")
    assert "configs/pointrend_semseg.yaml" in commands[1] and "--resume" not in commands[1]


def test_table_of_finished_runs_and_nothing_overwritten(tmp_path):
    values = {
        ("full", 0): (10.0, 5.0),
        ("points10", 0): (9.0, 4.0),
        ("points5", 0): (8.0, 3.0),
        ("full", 1): (20.0, 10.0),
        ("points10", 1): (19.0, 9.0),
        ("points5", 1): (16.0, 6.0),
    }
    for (variant, seed), (mask_ap, boundary_ap) in values.items():
        write_run(
            tmp_path / "runs",
            f"instance_{variant}_seed{seed}",
            {"segm/AP": mask_ap, "boundary/AP": boundary_ap},
        )
    results = tmp_path / "table.md"
    arguments = ["instance", "--seeds", "0", "1", "--output-root", str(tmp_path / "runs")]
    runs_tool().main([*arguments, "--results", str(results)])
    page = results.read_text()
    assert "tools/seeded_runs.py instance --seeds 0 1" in page
    assert """DATASETS.TRAIN '("textured_shapes_instances_train_points5",)'""" in page
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| seed | full: mask AP / Boundary AP | points10: mask AP")
    # Per seed, and the mean row's ratios are of the means: 14 / 15 and 6.5 / 7.5.
    assert rows[1] == "| 0 | 10.00 / 5.00 | 9.00 / 4.00 | 8.00 / 3.00 | 90% | 80% | 80% | 60% |"
    assert (
        rows[3] == "| mean | 15.00 / 7.50 | 14.00 / 6.50 | 12.00 / 4.50 | 93% | 87% | 80% | 60% |"
    )
    with pytest.raises(SystemExit):
        runs_tool().main([*arguments, "--results", str(results)])
    assert results.read_text() == page


def test_jobs_share_the_cores_and_log_each_run(tmp_path, monkeypatch):
    tool = runs_tool()

    def fake_training(variant, seed, output_dir, resume):
        """Writes the run's final evaluation and the thread count it was given."""
        script = (
            "import json, os, sys; d = sys.argv[1]; print('threads', os.environ['OMP_NUM_THREADS'])"
            "; open(d + '/metrics.json', 'w').write(json.dumps("
            "{'sem_seg/mIoU': 50.0 + int(sys.argv[2]), 'boundary_iou/mBIoU': 40.0}))"
        )
        return [sys.executable, "-c", script, str(output_dir), str(seed)]

    monkeypatch.setattr(tool, "train_command", fake_training)
    monkeypatch.setattr(tool.os, "cpu_count", lambda: 4)
    results = tmp_path / "table.md"
    arguments = ["semantic", "--seeds", "0", "1", "--output-root", str(tmp_path / "runs")]
    metrics = tool.main([*arguments, "--jobs", "2", "--results", str(results)])
    assert metrics["points20", 1]["sem_seg/mIoU"] == 51.0
    console = tmp_path / "runs" / "semantic_points20_seed1" / "console.log"
    assert console.read_text().strip() == "threads 2"
    page = results.read_text()
    assert "CPU threads per training: 2;" in page
    assert "tools/seeded_runs.py semantic --seeds 0 1 --jobs 2" in page


def test_a_failed_training_stops_the_runs(tmp_path, monkeypatch):
    tool = runs_tool()
    monkeypatch.setattr(tool, "train_command", lambda *_: [sys.executable, "-c", "exit(3)"])
    results = tmp_path / "table.md"
    with pytest.raises(subprocess.CalledProcessError):
        tool.main(
            [
                "semantic",
                "--seeds",
                "0",
                "--output-root",
                str(tmp_path),
                "--jobs",
                "2",
                "--results",
                str(results),
            ]
        )
    assert not results.exists()


def test_difference_table_of_a_thin_structure_comparison(tmp_path):
    columns = ["sem_seg/mIoU", "boundary_iou/mBIoU"]
    columns += [f"sem_seg/IoU-{name}" for name in ("wire", "dot", "ring", "blob")]
    for variant, values in (
        ("paper", [60, 50, 20, 40, 80, 90]),
        ("boundary25", [61, 52, 35, 39, 80, 91]),
        ("boundary25_patch7", [62, 55, 50, 41, 79, 90]),
    ):
        write_run(
            tmp_path / "runs",
            f"thin-semantic_{variant}_seed0",
            dict(zip(columns, values, strict=True)),
        )
    results = tmp_path / "table.md"
    runs_tool().main(
        [
            "thin-semantic",
            "--seeds",
            "0",
            "--output-root",
            str(tmp_path / "runs"),
            "--results",
            str(results),
        ]
    )
    page = results.read_text()
    assert "MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO 0.25" in page
    assert "MODEL.POINT_HEAD.IMAGE_PATCH_SIZE 7" in page
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    assert "boundary25 - paper, IoU wire" in rows[0]
    assert "boundary25_patch7 - paper, IoU wire" in rows[0]
    assert rows[1].endswith(
        "| +1.00 | +2.00 | +15.00 | -1.00 | +0.00 | +1.00 "
        "| +2.00 | +5.00 | +30.00 | +1.00 | -1.00 | +0.00 |"
    )


def test_variants_option_compares_only_those_against_the_first_of_them(tmp_path, capsys):
    columns = [key for key, _ in runs_tool().TASKS["thin-instance"].metrics]
    for variant, value in (("pointrend", 5.0), ("pointrend_coarse14", 7.0)):
        write_run(
            tmp_path / "runs", f"thin-instance_{variant}_seed0", dict.fromkeys(columns, value)
        )
    results = tmp_path / "table.md"
    arguments = ["thin-instance", "--seeds", "0", "--output-root", str(tmp_path / "runs")]
    variants = ["--variants", "pointrend_coarse14", "pointrend"]
    runs_tool().main([*arguments, *variants, "--results", str(results)])
    page = results.read_text()
    assert "--seeds 0 --variants pointrend pointrend_coarse14" in page
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    assert "pointrend_coarse14 - pointrend, APs" in rows[0] and "mask_rcnn" not in page
    assert rows[1].endswith("| +2.00 | +2.00 | +2.00 | +2.00 | +2.00 | +2.00 |")
    for bad, message in (
        (
            ["pointrend", "coarse14"],
            "--variants coarse14: thin-instance's variants are ['mask_rcnn'",
        ),
        (["pointrend"], "--variants pointrend: name 2 or more to compare"),
    ):
        with pytest.raises(SystemExit):
            runs_tool().main([*arguments, "--variants", *bad, "--dry-run"])
        assert message in capsys.readouterr().err
