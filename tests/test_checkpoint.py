"""
Crash-safe checkpoints (atomic writes, last_checkpoint only ever names a complete file, also when
the process is killed mid-write or the disk refuses the write), resuming with the optimizer and
scheduler state, weights-only loading that refuses code in pickles, damaged or missing files named
as such, and loads that must fill the model unless training opts in.
"""

import errno
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
from detectron2.modeling import build_model
from PIL import Image
from torch import nn

from pointrend_d2.checkpoint import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    FileWriteError,
    SafeCheckpointer,
    UnsafeCheckpointError,
    atomic_write,
)
from pointrend_d2.config import setup_cfg
from pointrend_d2.engine import Trainer
from pointrend_d2.predictor import Predictor
from tests.helpers import (
    FAST_OPTS,
    REPO,
    config_path,
    read_metrics,
    run_train_net,
    small_fpn_cfg,
    small_rcnn_cfg,
)


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


# A child process that saves model_0000004.pth (zeros, complete and tagged), says so on stdout,
# then saves model_0000009.pth (ones) of the same model: 32 tensors of 1 MiB.
SAVE_TWICE = """
import resource, sys, torch
from torch import nn
from pointrend_d2.checkpoint import SafeCheckpointer
model = nn.ParameterList(nn.Parameter(torch.zeros(1 << 18)) for _ in range(32))
checkpointer = SafeCheckpointer(model, sys.argv[1], save_to_disk=True)
checkpointer.save("model_0000004", iteration=4)
if len(sys.argv) > 2:  # a file-size limit for what follows
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
print("saved", flush=True)
with torch.no_grad():
    for parameter in model:
        parameter.fill_(1.0)
checkpointer.save("model_0000009", iteration=9)
"""


def assert_first_checkpoint_intact(folder) -> None:
    """model_0000004.pth of SAVE_TWICE is whole, loads, and is the one to resume from."""
    assert (folder / "last_checkpoint").read_text() == "model_0000004.pth"
    assert not (folder / "model_0000009.pth").exists()
    model = nn.ParameterList(nn.Parameter(torch.ones(1 << 18)) for _ in range(32))
    checkpointer = SafeCheckpointer(model, str(folder))
    assert checkpointer.get_checkpoint_file() == str(folder / "model_0000004.pth")
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 4
    assert all(not parameter.any() for parameter in model)


def test_sigkill_while_a_large_checkpoint_is_written_keeps_the_previous_one(tmp_path):
    """A real SIGKILL, once the second checkpoint's temporary file holds its first MiB."""
    command = [sys.executable, "-c", SAVE_TWICE, str(tmp_path)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "saved\n"
        temporary = tmp_path / f".model_0000009.pth.{process.pid}.tmp"
        while not (temporary.exists() and temporary.stat().st_size >= 1 << 20):
            assert process.poll() is None, "the second save ended before the kill"
            time.sleep(0.001)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    # Killed before the rename: the new checkpoint exists only as a partial temporary file.
    assert temporary.stat().st_size < (tmp_path / "model_0000004.pth").stat().st_size
    assert_first_checkpoint_intact(tmp_path)


def test_a_save_past_the_file_size_limit_names_the_file_and_keeps_the_previous_one(tmp_path):
    """A full disk, as a file-size limit (CPython ignores SIGXFSZ): the write fails with EFBIG,
    which torch alone reports as "unexpected pos"."""
    command = [sys.executable, "-c", SAVE_TWICE, str(tmp_path), str(10 << 20)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    target = tmp_path / "model_0000009.pth"
    assert result.stderr.strip().endswith(
        f"pointrend_d2.checkpoint.FileWriteError: Could not write {target}: the file would "
        "exceed the file-size limit of this process ([Errno 27] File too large). Nothing was "
        f"replaced: {target} keeps its previous content, if it had any. Raise the limit (ulimit "
        "-f unlimited, in the shell that starts the job), then run again"
    ), result.stderr[-3000:]
    assert "unexpected pos" not in result.stderr.split("FileWriteError")[-1]
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert_first_checkpoint_intact(tmp_path)


@pytest.mark.parametrize(
    "error_number,cause,advice",
    [
        (errno.ENOSPC, "the disk is full", "Free space on the disk that holds {folder}, or write "
         "elsewhere, then run again"),
        (errno.EDQUOT, "the disk quota is used up", "Free space within your quota, or write "
         "elsewhere, then run again"),
        (errno.EIO, "writing failed", "Check the disk that holds {folder}, then run again"),
    ],
)  # fmt: skip
def test_a_write_that_the_file_system_refuses_says_why(tmp_path, error_number, cause, advice):
    def write_then_fail(f):
        f.write(b"partial")
        raise OSError(error_number, os.strerror(error_number))

    path = tmp_path / "model.pth"
    path.write_bytes(b"previous")
    with pytest.raises(FileWriteError) as error:
        atomic_write(str(path), write_then_fail)
    assert error.value.errno == error_number
    assert str(error.value) == (
        f"Could not write {path}: {cause} ([Errno {error_number}] {os.strerror(error_number)}). "
        f"Nothing was replaced: {path} keeps its previous content, if it had any. "
        + advice.format(folder=tmp_path)
    )
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["model.pth"]


def test_a_save_into_a_missing_folder_says_so(tmp_path):
    folder = tmp_path / "missing"
    with pytest.raises(FileWriteError) as error:
        SafeCheckpointer(nn.Linear(1, 1), str(folder), save_to_disk=True).save("model_final")
    assert str(error.value) == (
        f"Could not write {folder / 'model_final.pth'}: its folder does not exist ([Errno 2] No "
        f"such file or directory). Nothing was replaced: {folder / 'model_final.pth'} keeps its "
        f"previous content, if it had any. Create {folder}, then run again"
    )


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


PLAIN_PICKLE = "a plain pickle (written by pickle.dump, not torch.save)"
RESAVE = (
    "re-save it with torch.save, whose files load without running code; or, if it is in "
    "detectron2's model-zoo format, give it the extension .pkl"
)


@pytest.mark.parametrize(
    "allow_unsafe_pickle,error_type,message",
    [
        (False, UnsafeCheckpointError, "Refusing to load {path}: it is " + PLAIN_PICKLE + ", and "
         "unpickling it can run arbitrary code. If you trust its source, " + RESAVE + " and allow "
         "it with tools/train_net.py --allow-unsafe-pickle (the config key "
         "MODEL.ALLOW_UNSAFE_PICKLE True)"),
        (True, CorruptCheckpointError, "Checkpoint {path} is " + PLAIN_PICKLE + ", which "
         "torch.load cannot read: " + RESAVE),
    ],
)  # fmt: skip
def test_a_pth_written_by_pickle_dump_is_named_as_such(
    tmp_path, allow_unsafe_pickle, error_type, message
):
    """torch.load reads neither way a pickle.dump file: the message says what it is and what to
    do, never an empty "()" of torch's refusal."""
    model = nn.Linear(3, 2)
    path = tmp_path / "model_final.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": model.state_dict()}, f)
    checkpointer = SafeCheckpointer(model, allow_unsafe_pickle=allow_unsafe_pickle)
    with pytest.raises(error_type) as error:
        checkpointer.load(str(path))
    assert str(error.value) == message.format(path=path)
    # Re-saved with torch.save, the same tensors load.
    torch.save({"model": model.state_dict()}, path)
    checkpointer.load(str(path))


def test_torch_legacy_format_is_not_taken_for_a_plain_pickle(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "legacy.pth"
    torch.save({"model": model.state_dict()}, path, _use_new_zipfile_serialization=False)
    SafeCheckpointer(model).load(str(path))


@pytest.mark.slow
def test_train_net_refuses_a_pickle_without_the_flag(tmp_path):
    """--eval-only loads MODEL.WEIGHTS with the SafeCheckpointer; --allow-unsafe-pickle opts in."""
    marker = tmp_path / "code_ran"
    weights = tmp_path / "evil.pkl"
    # The model's own weights, so that the allowed load fills the model.
    model = build_model(setup_cfg(str(config_path("pointrend_semseg.yaml"))))
    with open(weights, "wb") as f:
        pickle.dump(
            {"model": model.state_dict(), "__author__": "x", "extra": WritesMarker(marker)}, f
        )
    command = [
        sys.executable, str(REPO / "tools" / "train_net.py"),
        "--config-file", str(config_path("pointrend_semseg.yaml")), "--eval-only",
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


UNSAFE_ADVICE = ("unsafe", "--allow-unsafe-pickle", "ALLOW_UNSAFE_PICKLE", "weights_only")


def saved_small_model(folder, **overrides) -> tuple[nn.Module, pathlib.Path]:
    """A tiny FPN PointRend model (``small_fpn_cfg(**overrides)``) and its saved checkpoint."""
    model = build_model(small_fpn_cfg(**overrides))
    SafeCheckpointer(model, str(folder), save_to_disk=True).save("model")
    return model, folder / "model.pth"


def damaged_copies(tmp_path) -> dict[str, pathlib.Path]:
    """Damaged checkpoints, by how they were damaged."""
    _, good = saved_small_model(tmp_path)
    data = good.read_bytes()
    assert len(data) > 1_000_000
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    whole_pickle = pickle.dumps({"model": {"w": np.zeros(1000)}, "__author__": "x"})
    files = {
        "truncated": data[:1_000_000],  # head -c 1000000 model_final.pth
        "garbage": np.random.default_rng(0).bytes(50_000),
        "empty": b"",
        "text": b"not a checkpoint\n" * 10,
        "bit flip": bytes(flipped),
        "truncated pkl": whole_pickle[: len(whole_pickle) // 2],
    }
    paths = {}
    for kind, content in files.items():
        paths[kind] = tmp_path / f"{kind.replace(' ', '_')}.{'pkl' if 'pkl' in kind else 'pth'}"
        paths[kind].write_bytes(content)
    return paths


@pytest.mark.parametrize("allow_unsafe_pickle", [False, True])
def test_a_damaged_checkpoint_is_called_corrupt_and_named(tmp_path, allow_unsafe_pickle):
    """Truncated, garbage, empty, bit-flipped: never "unsafe", never advice to unpickle it."""
    model = build_model(small_fpn_cfg())
    checkpointer = SafeCheckpointer(model, allow_unsafe_pickle=allow_unsafe_pickle)
    for kind, path in damaged_copies(tmp_path).items():
        with pytest.raises(CorruptCheckpointError) as error:
            checkpointer.load(str(path))
        message = str(error.value)
        assert message.startswith(f"Checkpoint {path} is corrupt or incomplete: "), (kind, message)
        assert "Copy or download it again" in message
        # The message and the chained error say nothing about unsafe loading.
        for text in (message, str(error.value.__cause__ or "")):
            assert not any(advice in text for advice in UNSAFE_ADVICE), (kind, text)


def test_what_makes_a_checkpoint_corrupt_is_said(tmp_path):
    paths = damaged_copies(tmp_path)
    reasons = {
        "truncated": "it starts as a zip archive (torch.save's format), but its end is missing",
        "garbage": "it is neither a zip archive nor a whole pickle",
        "empty": "the file is empty",
        "text": "it is neither a zip archive nor a whole pickle",
        "bit flip": "fails its CRC check",
        "truncated pkl": "it is neither a zip archive nor a whole pickle",
    }
    checkpointer = SafeCheckpointer(nn.Linear(1, 1), allow_unsafe_pickle=True)
    for kind, reason in reasons.items():
        with pytest.raises(CorruptCheckpointError, match=re.escape(reason)):
            checkpointer.load(str(paths[kind]))


@pytest.mark.parametrize("name", ["model_final.pth", "R-50.pkl"])
def test_a_missing_checkpoint_is_named_missing(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(
        FileNotFoundError, match=f"^Checkpoint {re.escape(str(path))} does not exist$"
    ):
        SafeCheckpointer(nn.Linear(1, 1)).load(str(path))


def test_a_missing_last_checkpoint_target_is_named_with_what_named_it(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(FileNotFoundError, match="model_0000009.pth .named by .*last_checkpoint"):
        SafeCheckpointer(nn.Linear(1, 1), str(tmp_path)).resume_or_load("", resume=True)


def mismatch_rows(message: str) -> dict[str, str]:
    """The table of a CheckpointMismatchError or partial-load log: tensor -> why."""
    rows = re.findall(r"^\| (.+?) +\| (.+?) +\|$", message, re.MULTILINE)
    return {name: why for name, why in rows if name != "tensor"}


POINT_HEAD = "sem_seg_head.point_head"
COARSE_PREDICTOR = "sem_seg_head.coarse_sem_seg_head.predictor"


def test_a_checkpoint_of_another_class_count_is_an_error_naming_the_tensors(tmp_path):
    _, path = saved_small_model(tmp_path, num_classes=5)
    model = build_model(small_fpn_cfg(num_classes=3))
    with pytest.raises(CheckpointMismatchError) as error:
        SafeCheckpointer(model).load(str(path))
    message = str(error.value)
    assert message.startswith(f"Checkpoint {path} does not fit the model:\n")
    shapes = {
        f"{COARSE_PREDICTOR}.weight": ((5, 32, 1, 1), (3, 32, 1, 1)),
        f"{COARSE_PREDICTOR}.bias": ((5,), (3,)),
        # fc1 reads the 32 p2 channels and the coarse logits.
        f"{POINT_HEAD}.fc1.weight": ((32, 37, 1), (32, 35, 1)),
        f"{POINT_HEAD}.predictor.weight": ((5, 32, 1), (3, 32, 1)),
        f"{POINT_HEAD}.predictor.bias": ((5,), (3,)),
    }
    assert mismatch_rows(message) == {
        name: f"shape {checkpoint} in the checkpoint, {model} in the model"
        for name, (checkpoint, model) in shapes.items()
    }
    assert (
        "(compare MODEL.SEM_SEG_HEAD.NUM_CLASSES, MODEL.POINT_HEAD.* and the backbone)" in message
    )
    assert (
        "MODEL.ALLOW_PARTIAL_WEIGHTS True (tools/train_net.py --allow-partial-weights)" in message
    )


def test_a_mismatch_advises_the_keys_of_the_model_at_hand(tmp_path):
    """An instance model's classes are MODEL.ROI_HEADS.NUM_CLASSES, not the semantic key."""
    SafeCheckpointer(build_model(small_rcnn_cfg(num_classes=5)), str(tmp_path)).save("model")
    with pytest.raises(CheckpointMismatchError) as error:
        SafeCheckpointer(build_model(small_rcnn_cfg(num_classes=3))).load(
            str(tmp_path / "model.pth")
        )
    message = str(error.value)
    assert "| roi_heads.box_predictor.cls_score.weight " in message
    assert (
        "load it with that config (compare MODEL.ROI_HEADS.NUM_CLASSES, MODEL.ROI_MASK_HEAD.*, "
        "MODEL.POINT_HEAD.* and the backbone)" in message
    )
    assert "SEM_SEG_HEAD" not in message


def test_a_checkpoint_with_tensors_the_model_lacks_is_an_error(tmp_path):
    """A 3-layer point MLP loaded into a 2-layer one: every tensor of the model fits, fc3 is left
    over. detectron2 would run the model with the checkpoint's predictor after the wrong layer."""
    _, path = saved_small_model(tmp_path, **{"MODEL.POINT_HEAD.NUM_FC": 3})
    model = build_model(small_fpn_cfg(**{"MODEL.POINT_HEAD.NUM_FC": 2}))
    with pytest.raises(CheckpointMismatchError) as error:
        SafeCheckpointer(model).load(str(path))
    assert mismatch_rows(str(error.value)) == {
        f"{POINT_HEAD}.fc3.{{bias, weight}}": "in the checkpoint, not in the model"
    }
    # And the other way round: the model's fc3 is not in the checkpoint.
    _, path = saved_small_model(tmp_path, **{"MODEL.POINT_HEAD.NUM_FC": 2})
    model = build_model(small_fpn_cfg(**{"MODEL.POINT_HEAD.NUM_FC": 3}))
    with pytest.raises(CheckpointMismatchError) as error:
        SafeCheckpointer(model).load(str(path))
    assert mismatch_rows(str(error.value)) == {
        f"{POINT_HEAD}.fc3.{{bias, weight}}": "not in the checkpoint"
    }


def test_partial_weights_load_when_allowed_and_are_logged_as_a_table(tmp_path, caplog):
    """Fine-tuning on another class count: what fits is loaded, the rest is listed."""
    source, path = saved_small_model(tmp_path, num_classes=5)
    model = build_model(small_fpn_cfg(num_classes=3))
    SafeCheckpointer(model, allow_partial_weights=True).load(str(path))
    (record,) = [r for r in caplog.records if "partially" in r.getMessage()]
    message = record.getMessage()
    assert message.startswith(f"Loaded {path} partially (MODEL.ALLOW_PARTIAL_WEIGHTS)")
    assert set(mismatch_rows(message)) == {
        f"{COARSE_PREDICTOR}.weight", f"{COARSE_PREDICTOR}.bias", f"{POINT_HEAD}.fc1.weight",
        f"{POINT_HEAD}.predictor.weight", f"{POINT_HEAD}.predictor.bias",
    }  # fmt: skip
    loaded, saved = model.state_dict(), source.state_dict()
    assert torch.equal(loaded[f"{POINT_HEAD}.fc2.weight"], saved[f"{POINT_HEAD}.fc2.weight"])
    assert torch.equal(
        loaded["backbone.bottom_up.res5.1.conv2.weight"],
        saved["backbone.bottom_up.res5.1.conv2.weight"],
    )


def test_an_imagenet_style_backbone_initialisation_needs_the_opt_in(tmp_path, caplog):
    """
    What the Cityscapes configs load: a detectron2 .pkl of the bare ResNet (names matched by
    detectron2's heuristics), which leaves the FPN and the heads at their initialisation.
    """
    backbone = build_model(small_fpn_cfg()).backbone.bottom_up
    path = tmp_path / "R-18.pkl"
    with open(path, "wb") as f:
        state = {name: tensor.numpy() for name, tensor in backbone.state_dict().items()}
        pickle.dump({"model": state, "__author__": "test", "matching_heuristics": True}, f)
    model = build_model(small_fpn_cfg())
    with pytest.raises(CheckpointMismatchError, match="sem_seg_head.point_head.fc1"):
        SafeCheckpointer(model, allow_unsafe_pickle=True).load(str(path))
    checkpointer = SafeCheckpointer(model, allow_unsafe_pickle=True, allow_partial_weights=True)
    checkpointer.load(str(path))
    (record,) = [r for r in caplog.records if "partially" in r.getMessage()]
    unloaded = mismatch_rows(record.getMessage())
    assert all(why == "not in the checkpoint" for why in unloaded.values())
    assert all(not name.startswith("backbone.bottom_up") for name in unloaded)
    assert {name.split(".")[0] for name in unloaded} == {"backbone", "sem_seg_head"}
    assert torch.equal(model.backbone.bottom_up.stem.conv1.weight, backbone.stem.conv1.weight)


def test_resuming_needs_every_tensor_even_when_partial_weights_are_allowed(tmp_path):
    """last_checkpoint names a checkpoint of another config: the resume fails, naming it."""
    _, path = saved_small_model(tmp_path, num_classes=5)
    model = build_model(small_fpn_cfg(num_classes=3))
    checkpointer = SafeCheckpointer(model, str(tmp_path), allow_partial_weights=True)
    assert checkpointer.has_checkpoint()
    with pytest.raises(CheckpointMismatchError) as error:
        checkpointer.resume_or_load("", resume=True)
    message = str(error.value)
    assert message.startswith(
        f"Checkpoint {path} (named by {tmp_path / 'last_checkpoint'}) does not fit the model, so "
        "it was written by a run of another config:\n"
    )
    assert message.endswith("Resume with the config of that run, or train in another OUTPUT_DIR")
    assert "ALLOW_PARTIAL_WEIGHTS" not in message
    # Not resuming, the same file is MODEL.WEIGHTS, which the opt-in covers.
    checkpointer.resume_or_load(str(path), resume=False)


def test_the_predictor_needs_every_tensor_whatever_the_config_allows(tmp_path):
    _, path = saved_small_model(tmp_path, num_classes=5)
    cfg = small_fpn_cfg(num_classes=3)
    cfg.MODEL.WEIGHTS = str(path)
    cfg.MODEL.ALLOW_PARTIAL_WEIGHTS = True
    with pytest.raises(CheckpointMismatchError, match=re.escape(f"{POINT_HEAD}.predictor.bias")):
        Predictor(cfg)


@pytest.mark.slow
def test_train_net_eval_only_needs_every_tensor_even_with_the_opt_in(tmp_path):
    cfg = setup_cfg(str(config_path("pointrend_semseg.yaml")))
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4
    SafeCheckpointer(build_model(cfg), str(tmp_path), save_to_disk=True).save("four_classes")
    weights = tmp_path / "four_classes.pth"
    command = [
        sys.executable, str(REPO / "tools" / "train_net.py"), "--allow-partial-weights",
        "--config-file", str(config_path("pointrend_semseg.yaml")), "--eval-only",
        "MODEL.WEIGHTS", str(weights), "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path / "out"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert f"CheckpointMismatchError: Checkpoint {weights} does not fit the model:" in result.stderr
    assert f"| {POINT_HEAD}.predictor.weight " in result.stderr


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
        "--config-file", str(config_path("pointrend_semseg.yaml")),
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
