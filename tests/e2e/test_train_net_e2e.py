"""
End to end through tools/train_net.py on the embedded dataset: train on the CPU, write
checkpoints, evaluate with --eval-only, continue with --resume.
"""

import re

import pytest

from tests.helpers import FAST_OPTS, config_path, read_metrics, run_train_net


@pytest.mark.slow
def test_train_eval_resume(tmp_path):
    config = str(config_path("pointrend_semseg.yaml"))
    out = tmp_path / "run"
    # Train 40 iterations without evaluation; checkpoints at 20 and at the end.
    run_train_net(
        "--config-file", config,
        *FAST_OPTS, "SOLVER.MAX_ITER", "40", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out),
    )  # fmt: skip
    assert (out / "model_0000019.pth").is_file() and (out / "model_final.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    losses = {m["iteration"]: m["total_loss"] for m in read_metrics(out) if "total_loss" in m}
    # Each logged loss is the median of the previous 20 iterations.
    assert losses[39] < losses[19], losses
    assert any(m.get("loss_sem_seg_point") is not None for m in read_metrics(out))

    # --eval-only reloads the checkpoint and reports mIoU on the embedded val split.
    output = run_train_net(
        "--config-file", config, "--eval-only",
        "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"),
    )  # fmt: skip
    assert "Loading from " + str(out / "model_final.pth") in output or "model_final.pth" in output
    miou = re.search(r"copypaste: ([\d.]+),", output.split("mIoU,fwIoU")[-1])
    assert miou is not None, output[-3000:]
    assert 0 < float(miou.group(1)) <= 100

    # --resume continues from the last checkpoint (iteration 40), not from scratch.
    output = run_train_net(
        "--config-file", config, "--resume",
        *FAST_OPTS, "SOLVER.MAX_ITER", "60", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out),
    )  # fmt: skip
    assert "Starting training from iteration 40" in output, output[-3000:]
    iterations = [m["iteration"] for m in read_metrics(out) if "total_loss" in m]
    assert iterations[-1] == 59 and iterations.count(39) == 1
