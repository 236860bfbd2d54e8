"""
Crash-safe checkpoints (atomic writes, last_checkpoint only ever names a complete file), resuming
with the optimizer and scheduler state, and weights-only loading that refuses code in pickles.
"""

import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from torch import nn

from pointrend_d2.checkpoint import SafeCheckpointer, UnsafeCheckpointError
from pointrend_d2.engine import Trainer
from tests.helpers import FAST_OPTS, REPO, read_metrics, run_train_net, small_fpn_cfg


def checkpoint_files(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name != "last_checkpoint")


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    checkpointer = SafeCheckpointer(model, str(tmp_path), save_to_disk=True)
    checkpointer.save("model_0000004", iteration=4)
    expected = torch.load(tmp_path / "model_0000004.pth", weights_only=True)
    real_save = torch.save

    def save_half_then_crash(obj, f):
        real_save(obj, f)
        f.seek(f.tell() // 2)
        f.truncate()
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", save_half_then_crash)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000009", iteration=9)

    assert checkpoint_files(tmp_path) == ["model_0000004.pth"]  # no partial file, no temporary
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000004.pth")
    loaded = torch.load(tmp_path / "model_0000004.pth", weights_only=True)
    assert loaded["iteration"] == 4
    assert torch.equal(loaded["model"]["weight"], expected["model"]["weight"])


def test_crash_before_tagging_leaves_last_checkpoint_at_the_previous_file(tmp_path, monkeypatch):
    checkpointer = SafeCheckpointer(nn.Linear(3, 2), str(tmp_path), save_to_disk=True)
    checkpointer.save("model_0000004")
    real_replace = os.replace

    def crash_on_tag(source, target):
        if os.path.basename(target) == "last_checkpoint":
            raise KeyboardInterrupt("killed while tagging")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash_on_tag)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000009")
    # The new checkpoint is complete, but not yet the one to resume from.
    assert checkpoint_files(tmp_path) == ["model_0000004.pth", "model_0000009.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    torch.load(tmp_path / "model_0000009.pth", weights_only=True)


class WritesMarker:
    """Unpickling it creates the file ``marker``: code run by loading a checkpoint."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("extension", [".pth", ".pkl"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, extension):
    marker = tmp_path / "code_ran"
    model = nn.Linear(3, 2)
    payload = {"model": model.state_dict(), "__author__": "x", "extra": WritesMarker(marker)}
    path = tmp_path / f"evil{extension}"
    if extension == ".pth":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)

    with pytest.raises(UnsafeCheckpointError) as error:
        SafeCheckpointer(model).load(str(path))
    assert str(path) in str(error.value)
    assert "--allow-unsafe-pickle" in str(error.value)
    assert "MODEL.ALLOW_UNSAFE_PICKLE" in str(error.value)
    assert not marker.exists()

    # The payload is real: the explicit opt-in runs it.
    SafeCheckpointer(model, allow_unsafe_pickle=True).load(str(path))
    assert marker.exists()


@pytest.mark.slow
def test_train_net_refuses_a_pickle_without_the_flag(tmp_path):
    """--eval-only loads MODEL.WEIGHTS with the SafeCheckpointer; --allow-unsafe-pickle opts in."""
    marker = tmp_path / "code_ran"
    weights = tmp_path / "evil.pkl"
    with open(weights, "wb") as f:
        pickle.dump({"model": {}, "__author__": "x", "extra": WritesMarker(marker)}, f)
    command = [
        sys.executable, str(REPO / "tools" / "train_net.py"),
        "--config-file", str(REPO / "configs" / "pointrend_semseg.yaml"), "--eval-only",
        "MODEL.WEIGHTS", str(weights), "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path / "out"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert re.search(
        rf"UnsafeCheckpointError: Refusing to load {re.escape(str(weights))}: .* "
        r"--allow-unsafe-pickle \(the config key MODEL.ALLOW_UNSAFE_PICKLE True\)",
        result.stderr,
    ), result.stderr[-3000:]
    assert not marker.exists()

    command.insert(2, "--allow-unsafe-pickle")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.exists()


def write_tiny_dataset(folder, num_images: int, size=(32, 48), num_classes=3) -> str:
    """Register ``num_images`` random images with labels of vertical class bands (no ignore)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for index in range(num_images):
        labels = (np.arange(size[1])[None, :] * num_classes // size[1] + index) % num_classes
        labels = np.broadcast_to(labels, size).astype(np.uint8)
        image = rng.integers(0, 60, (*size, 3)) + 60 * labels[..., None]
        record = {"file_name": str(folder / f"{index}.png"), "height": size[0], "width": size[1]}
        record["sem_seg_file_name"] = str(folder / f"{index}_labels.png")
        Image.fromarray(image.astype(np.uint8)).save(record["file_name"])
        Image.fromarray(labels).save(record["sem_seg_file_name"])
        records.append(record)
    name = f"tiny_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=[f"c{i}" for i in range(num_classes)], ignore_label=255
    )
    return name


def test_resume_restores_iteration_optimizer_and_scheduler(tmp_path):
    dataset = write_tiny_dataset(tmp_path / "data", num_images=4)
    cfg = small_fpn_cfg(num_classes=3)
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN", (dataset,),
            "INPUT.MIN_SIZE_TRAIN", (32,),
            "INPUT.MAX_SIZE_TRAIN", 64,
            "SOLVER.IMS_PER_BATCH", 2,
            "SOLVER.BASE_LR", 0.01,
            "SOLVER.WARMUP_ITERS", 10,
            "SOLVER.STEPS", (),
            "SOLVER.MAX_ITER", 3,
            "SOLVER.CHECKPOINT_PERIOD", 2,
            "DATALOADER.NUM_WORKERS", 0,
            "OUTPUT_DIR", str(tmp_path / "output"),
        ]
    )  # fmt: skip
    Trainer(cfg).train()
    checkpoint = torch.load(tmp_path / "output" / "model_0000001.pth", weights_only=True)
    (tmp_path / "output" / "last_checkpoint").write_text("model_0000001.pth")

    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == checkpoint["iteration"] + 1 == 2
    saved_optimizer = checkpoint["trainer"]["_trainer"]["optimizer"]
    loaded_optimizer = resumed.optimizer.state_dict()
    assert loaded_optimizer["param_groups"] == saved_optimizer["param_groups"]
    assert saved_optimizer["state"]  # SGD momentum buffers
    for index, state in saved_optimizer["state"].items():
        assert torch.equal(
            loaded_optimizer["state"][index]["momentum_buffer"], state["momentum_buffer"]
        )
    (saved_scheduler,) = [
        v for k, v in checkpoint["trainer"]["hooks"].items() if "LRScheduler" in k
    ]
    assert resumed.scheduler.state_dict() == saved_scheduler
    assert saved_scheduler["last_epoch"] == 2  # mid-warmup: a fresh scheduler would be at 0


def wait_for(condition, timeout: float, process: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended early:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.05)


def last_checkpoint(output_dir) -> str:
    try:
        return (output_dir / "last_checkpoint").read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.slow
def test_kill_9_mid_period_then_resume(tmp_path):
    """
    SIGKILL tools/train_net.py half way between two checkpoints, then --resume: training goes on
    from the last complete checkpoint, with its learning-rate schedule, to a loadable final one.
    """
    period, max_iter = 3, 12
    out = tmp_path / "run"
    arguments = [
        "--config-file", str(REPO / "configs" / "pointrend_semseg.yaml"),
        *FAST_OPTS,
        "INPUT.CROP.SIZE", "(64, 64)",
        "SOLVER.CHECKPOINT_PERIOD", str(period),
        "SOLVER.STEPS", "(8,)",  # the lr drops 10x at iteration 8, after the resume
        "SOLVER.MAX_ITER", str(max_iter),
        "DATASETS.TEST", "()",
        "OUTPUT_DIR", str(out),
    ]  # fmt: skip
    log_path = tmp_path / "first_run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "tools" / "train_net.py"), *arguments],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: last_checkpoint(out) == "model_0000002.pth", 300, process, log_path)
            first_tagged = time.monotonic()
            wait_for(lambda: last_checkpoint(out) == "model_0000005.pth", 120, process, log_path)
            # Half a period (timed on the last one) into the next period.
            time.sleep((time.monotonic() - first_tagged) / 2)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL
    tagged = last_checkpoint(out)
    resume_iteration = int(re.fullmatch(r"model_(\d{7})\.pth", tagged).group(1)) + 1
    assert resume_iteration in (6, 9), tagged  # 9 if the sleep outlasted a period
    for name in os.listdir(out):
        if name.endswith(".pth"):  # every checkpoint on disk is complete
            torch.load(out / name, weights_only=True)

    output = run_train_net("--resume", *arguments)
    assert f"Starting training from iteration {resume_iteration}" in output, output[-3000:]
    assert f"Loading trainer from {out / tagged}" in output  # optimizer and scheduler state
    # Written at the end of the resumed run. A scheduler started afresh at the resume would
    # still be before its step (and past the 5 warmup iterations): the base lr.
    (lr,) = [m["lr"] for m in read_metrics(out) if m["iteration"] == max_iter - 1]
    assert lr == pytest.approx(0.1 * 0.005)  # BASE_LR of configs/pointrend_semseg.yaml
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == max_iter - 1
    assert last_checkpoint(out) == "model_final.pth"
