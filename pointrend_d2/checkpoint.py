"""
Checkpoints that survive a killed job, do not run code when loaded, and load completely or not
at all.

Saving writes each file through a temporary file in the same folder, flushed to disk and then
renamed over the target (an atomic rename on POSIX file systems), and tags ``last_checkpoint``
the same way after the checkpoint is complete: a job killed at any moment leaves the previous
checkpoints and a ``last_checkpoint`` that names a complete file. A save that fails (a full disk,
the file-size limit) is a :class:`FileWriteError` that names the file and the cause.

Loading unpickles ``.pth`` files with ``torch.load(weights_only=True)``, which only rebuilds
tensors and plain containers, and refuses detectron2's pickle formats (``.pkl``, ``.pyth``) and
files written by ``pickle.dump``, whose unpickling can run arbitrary code, unless it is explicitly
allowed. A file that is missing, empty, truncated or damaged is reported as such, naming it.

A checkpoint must fill the model: a model tensor it lacks, a tensor of another shape and a tensor
the model does not have are an error that names them, because detectron2 would skip them with a
warning and go on with part of the model at its random initialisation. Training may opt in to a
partial load (an ImageNet backbone initialisation, fine-tuning on another class count); resuming
never does.
"""

import contextlib
import errno
import os
import pickle
import pickletools
import re
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import IO, Any
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import GeneralizedRCNN, SemanticSegmentor
from tabulate import tabulate
from torch import nn

__all__ = [
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "FileWriteError",
    "SafeCheckpointer",
    "UnsafeCheckpointError",
    "atomic_write",
    "load_weights_for_inference",
    "zip_archive_damage",
]

# Formats that detectron2 reads with plain pickle.load / torch.load(weights_only=False).
_PICKLE_EXTENSIONS = (".pkl", ".pyth")
_HOW_TO_ALLOW = (
    "If you trust its source, allow it with tools/train_net.py --allow-unsafe-pickle (the config "
    "key MODEL.ALLOW_UNSAFE_PICKLE True)"
)
_HOW_TO_ALLOW_PARTIAL = (
    "To train from it anyway, with these tensors left at their initialisation (an ImageNet "
    "backbone initialisation, fine-tuning on another class count), set MODEL.ALLOW_PARTIAL_WEIGHTS "
    "True (tools/train_net.py --allow-partial-weights); evaluation, inference and --resume always "
    "need every tensor"
)
# The first bytes of a zip archive: torch.save's format since PyTorch 1.6.
_ZIP_MAGIC = b"PK\x03\x04"


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that could run code when unpickled, refused because that is not allowed."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is empty, truncated or damaged, or not in the format its name says."""


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fill the model: tensors missing, of another shape, or unused."""


class FileWriteError(OSError):
    """
    A file that could not be written (a full disk, the file-size limit, ...); the file it was to
    replace is unchanged. ``errno`` is that of the operating system's error.
    """


# errno -> (what happened, what to do), for the errors that a save meets in practice.
_WRITE_FAILURES = {
    errno.ENOSPC: (
        "the disk is full",
        "Free space on the disk that holds {directory}, or write elsewhere, then run again",
    ),
    errno.EDQUOT: (
        "the disk quota is used up",
        "Free space within your quota, or write elsewhere, then run again",
    ),
    errno.EFBIG: (
        "the file would exceed the file-size limit of this process",
        "Raise the limit (ulimit -f unlimited, in the shell that starts the job), then run again",
    ),
    errno.ENOENT: ("its folder does not exist", "Create {directory}, then run again"),
    errno.EACCES: (
        "its folder is not writable",
        "Give yourself write permission on {directory}, or write elsewhere, then run again",
    ),
}


def _write_failure(path: str, os_error: OSError) -> FileWriteError:
    """The :class:`FileWriteError` for a write of ``path`` that ``os_error`` failed."""
    directory = os.path.dirname(os.path.abspath(path))
    cause, advice = _WRITE_FAILURES.get(
        os_error.errno,
        ("writing failed", "Check the disk that holds {directory}, then run again"),
    )
    failure = FileWriteError(
        f"Could not write {path}: {cause} ([Errno {os_error.errno}] "
        f"{os.strerror(os_error.errno)}). Nothing was replaced: {path} keeps its previous "
        f"content, if it had any. {advice.format(directory=directory)}"
    )
    failure.errno = os_error.errno
    return failure


class _GuardedFile:
    """
    The binary file that :func:`atomic_write` gives its ``write``: it keeps the first OSError of
    a write (torch reports it only as "unexpected pos"), after which, and once the atomic write
    is over, it drops writes. torch's archive writers write their end records again when they are
    destroyed, and an error there aborts the process.
    """

    def __init__(self, file: IO[bytes]):
        self._file = file
        self.error: OSError | None = None
        self.closed_to_writes = False

    def write(self, data) -> int:
        if self.error is not None or self.closed_to_writes:
            return memoryview(data).nbytes
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """
    Write ``path`` so that it is never seen (nor left by a crash) partly written: ``write`` fills
    a temporary file in the same folder, which is flushed to disk and renamed over ``path``.

    Args:
        path: a local file path.
        write: writes the content to the binary file object it is given.

    Raises:
        FileWriteError: the file system refused the write (a full disk, the file-size limit),
            naming ``path`` and the cause; ``path`` is unchanged. Other errors of ``write`` pass.
    """
    directory = os.path.dirname(os.path.abspath(path))
    # Hidden and not ending in .pth, so that nothing lists it as a checkpoint; the pid keeps
    # concurrent writers apart.
    temporary_path = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    guarded = None
    try:
        with open(temporary_path, "wb") as f:
            guarded = _GuardedFile(f)
            write(guarded)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary_path, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary_path)
        os_error = guarded.error if guarded is not None else None
        if os_error is None and isinstance(error, OSError) and error.errno is not None:
            os_error = error
        if os_error is not None:
            raise _write_failure(path, os_error) from error
        raise
    finally:
        if guarded is not None:
            guarded.closed_to_writes = True
    # The rename itself is on disk only once the folder is.
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def _pickle_damage(f: IO[bytes]) -> str | None:
    """Why the pickle stream at ``f`` is not whole, or None. Reads its opcodes, runs nothing."""
    try:
        for _ in pickletools.genops(f):
            pass
    except ValueError as error:
        return str(error)
    return None


def zip_archive_damage(path: str, format_name: str) -> str | None:
    """
    Why the local file ``path``, meant to be a zip archive (``format_name``, e.g. "torch.save's
    format"), is not a whole one, or None: it is empty, not a zip archive, cut short or damaged at
    its end, or a member fails its CRC check (which torch's readers do not check).
    """
    if os.path.getsize(path) == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            return f"it is not a zip archive ({format_name})"
    try:
        with zipfile.ZipFile(path) as archive:
            damaged_member = archive.testzip()
    except zipfile.BadZipFile:
        return f"it starts as a zip archive ({format_name}), but its end is missing or damaged"
    if damaged_member is not None:
        return f"its archive member {damaged_member} fails its CRC check"
    return None


def _file_damage(path: str) -> str | None:
    """
    Why the local file ``path`` cannot be a whole checkpoint, or None if it looks intact: it is
    empty; a zip archive (torch.save's format) that is truncated, fails a CRC check or holds no
    whole ``data.pkl``; or a pickle (detectron2's ``.pkl``, torch's legacy format) that stops
    early, or not a pickle at all. Nothing in the file is executed.
    """
    if os.path.getsize(path) == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            f.seek(0)
            damage = _pickle_damage(f)
            if damage is not None:
                return f"it is neither a zip archive nor a whole pickle ({damage})"
            return None
    damage = zip_archive_damage(path, "torch.save's format")
    if damage is not None:
        return damage
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
        if not pickles:
            return "it is a zip archive without data.pkl, not a torch.save file"
        with archive.open(pickles[0]) as f:
            damage = _pickle_damage(f)
    return None if damage is None else f"its data.pkl is not a whole pickle ({damage})"


def _torch_reason(error: Exception) -> str:
    """What torch's weights-only unpickler refused, from its error, as " (...)" or ""."""
    match = re.search(
        r"WeightsUnpickler error:\s*([^\n]*?)(?: was not an allowed| Please|\n|$)", str(error)
    )
    return f" ({match.group(1)})" if match and match.group(1) else ""


def _is_plain_pickle(path: str) -> bool:
    """
    Whether the local file ``path`` was written by ``pickle.dump``: not a zip archive (torch.save's
    format) nor torch.save's legacy format, whose first pickle is torch's magic number. Reads the
    opcodes of that first pickle only; runs nothing.
    """
    values = []
    with open(path, "rb") as f:
        if f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC:
            return False
        f.seek(0)
        with contextlib.suppress(ValueError):
            for opcode, argument, _ in pickletools.genops(f):
                if opcode.name not in ("PROTO", "FRAME", "STOP"):
                    values.append(argument)
    return values != [torch.serialization.MAGIC_NUMBER]


def _is_local(path: str) -> bool:
    return "://" not in path


def _shaping_keys(model: nn.Module) -> str:
    """The config keys that give ``model``'s tensors their names and shapes, for advice."""
    if isinstance(model, GeneralizedRCNN):
        return (
            "MODEL.ROI_HEADS.NUM_CLASSES, MODEL.ROI_MASK_HEAD.*, MODEL.POINT_HEAD.* and the "
            "backbone"
        )
    if isinstance(model, SemanticSegmentor):
        return "MODEL.SEM_SEG_HEAD.NUM_CLASSES, MODEL.POINT_HEAD.* and the backbone"
    return "the keys under MODEL"


def _group(names: Iterable[str]) -> list[str]:
    """``a.b.weight``, ``a.b.bias`` -> ``a.b.{bias, weight}``: one entry per module."""
    by_module = defaultdict(list)
    for name in sorted(names):
        module, _, leaf = name.rpartition(".")
        by_module[module].append(leaf)
    grouped = []
    for module, leaves in by_module.items():
        leaf = leaves[0] if len(leaves) == 1 else "{" + ", ".join(leaves) + "}"
        grouped.append(f"{module}.{leaf}" if module else leaf)
    return grouped


def _mismatch_table(incompatible) -> str:
    """
    The tensors that a load left out, and why, as a table: fvcore's ``_IncompatibleKeys``
    (``missing_keys``, ``incorrect_shapes``, ``unexpected_keys``).
    """
    # fvcore also lists the tensors of another shape as missing: each is listed once, by shape.
    other_shape = {name for name, _, _ in incompatible.incorrect_shapes}
    missing = [name for name in incompatible.missing_keys if name not in other_shape]
    rows = [(name, "not in the checkpoint") for name in _group(missing)]
    rows += [
        (name, f"shape {tuple(checkpoint)} in the checkpoint, {tuple(model)} in the model")
        for name, checkpoint, model in incompatible.incorrect_shapes
    ]
    rows += [
        (name, "in the checkpoint, not in the model")
        for name in _group(incompatible.unexpected_keys)
    ]
    return tabulate(rows, headers=["tensor", "not loaded because"], tablefmt="pipe")


class SafeCheckpointer(DetectionCheckpointer):
    """
    detectron2's ``DetectionCheckpointer`` with atomic saves, weights-only loads and complete
    loads (see the module docstring). Local ``save_dir`` only.

    Errors: ``FileNotFoundError`` (no such file), :class:`CorruptCheckpointError`,
    :class:`UnsafeCheckpointError` and :class:`CheckpointMismatchError`. The last is raised after
    the tensors that fit were copied into the model: discard it (every tool exits).
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        allow_unsafe_pickle: bool = False,
        allow_partial_weights: bool = False,
        save_to_disk: bool | None = None,
        **checkpointables: Any,
    ):
        """
        Args:
            model, save_dir, save_to_disk, checkpointables: as for ``DetectionCheckpointer``.
            allow_unsafe_pickle: also load files whose unpickling can run code: ``.pkl`` and
                ``.pyth`` files, and ``.pth`` files holding more than tensors and containers.
            allow_partial_weights: load a checkpoint that leaves model tensors unloaded, or whose
                tensors the model does not have or has in another shape, logging them as a table
                (training from an ImageNet backbone or on another class count). Resuming from
                ``last_checkpoint`` ignores it: a resumed run needs every tensor back.
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self.allow_partial_weights = allow_partial_weights
        # Set while a load runs, for the messages: the file, and whether it is a resume.
        self._loading: str | None = None
        self._resuming = False

    def save(self, name: str, **kwargs: Any) -> None:
        """Save the model and checkpointables (and ``kwargs``) to ``save_dir/name.pth``."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, checkpointable in self.checkpointables.items():
            data[key] = checkpointable.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Point ``save_dir/last_checkpoint`` at a complete checkpoint file."""
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """
        As ``DetectionCheckpointer.resume_or_load``; resuming from ``last_checkpoint`` always
        needs every tensor (``allow_partial_weights`` applies to ``path`` only).
        """
        if resume and self.has_checkpoint():
            self._resuming = True
            try:
                return self.load(self.get_checkpoint_file())
            finally:
                self._resuming = False
        return self.load(path, checkpointables=[])

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if path:
            self._check_readable(path)
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None
            # detectron2 resets it only after a successful load, and asserts it is None on the
            # next: without this, a checkpointer whose load failed could not load again.
            self._parsed_url_during_load = None

    def _source(self, path: str) -> str:
        """``path``, and what named it when resuming."""
        if self._resuming:
            return f"{path} (named by {os.path.join(self.save_dir, 'last_checkpoint')})"
        return path

    def _check_readable(self, path: str) -> None:
        """Missing files, and pickle files that are not allowed, fail before anything is read."""
        local = _is_local(path)
        if local and not os.path.isfile(path):
            if os.path.isdir(path):
                raise IsADirectoryError(f"Checkpoint {path} is a directory, not a file")
            raise FileNotFoundError(f"Checkpoint {self._source(path)} does not exist")
        # Refused before detectron2 downloads a URL.
        if not self.allow_unsafe_pickle and urlparse(path).path.endswith(_PICKLE_EXTENSIONS):
            damage = _file_damage(path) if local else None
            if damage is not None:
                raise self._corrupt(path, damage)
            raise UnsafeCheckpointError(
                f"Refusing to load {path}: it is a pickle file, and unpickling it can run "
                f"arbitrary code. {_HOW_TO_ALLOW}, or convert it to a .pth file of tensors"
            )

    def _corrupt(self, path: str, damage: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(
            f"Checkpoint {self._source(path)} is corrupt or incomplete: {damage}. Copy or "
            "download it again (an interrupted copy or download leaves such files; pointrend_d2's "
            "own saves never do)"
        )

    def _load_file(self, filename: str) -> dict[str, Any]:
        # torch does not check its archives' CRCs, and reports a truncated or foreign file as a
        # zip-reader, EOF, key or unpickling error (the last is also how it refuses foreign
        # objects): look at the file first, without running anything in it.
        damage = _file_damage(filename)
        if damage is not None:
            raise self._corrupt(filename, damage)
        if not filename.endswith(_PICKLE_EXTENSIONS) and _is_plain_pickle(filename):
            raise self._plain_pickle(filename)
        try:
            return super()._load_file(filename)
        except pickle.UnpicklingError as error:
            if self.allow_unsafe_pickle:
                raise self._corrupt(filename, f"it cannot be unpickled ({error})") from error
            raise UnsafeCheckpointError(
                f"Refusing to load {filename}: it holds objects other than tensors and "
                f"containers, and unpickling them can run arbitrary code{_torch_reason(error)}. "
                f"{_HOW_TO_ALLOW}"
            ) from error
        except (EOFError, RuntimeError) as error:
            # Damage past what _file_damage reads, e.g. torch's legacy format cut short.
            raise self._corrupt(filename, str(error)) from error

    def _plain_pickle(self, path: str) -> Exception:
        """The error for a checkpoint that ``pickle.dump`` wrote under a name torch.load reads."""
        source = self._source(path)
        what = "a plain pickle (written by pickle.dump, not torch.save)"
        resave = "re-save it with torch.save, whose files load without running code"
        model_zoo = "if it is in detectron2's model-zoo format, give it the extension .pkl"
        if self.allow_unsafe_pickle:
            return CorruptCheckpointError(
                f"Checkpoint {source} is {what}, which torch.load cannot read: {resave}; or, "
                f"{model_zoo}"
            )
        return UnsafeCheckpointError(
            f"Refusing to load {source}: it is {what}, and unpickling it can run arbitrary code. "
            f"If you trust its source, {resave}; or, {model_zoo} and allow it with "
            "tools/train_net.py --allow-unsafe-pickle (the config key MODEL.ALLOW_UNSAFE_PICKLE "
            "True)"
        )

    def _torch_load(self, f: str) -> dict[str, Any]:
        return torch.load(f, map_location="cpu", weights_only=not self.allow_unsafe_pickle)

    def _log_incompatible_keys(self, incompatible) -> None:
        # fvcore calls this right after copying the tensors that fit into the model: where a
        # mismatch is known, and where detectron2 would only warn about it.
        if not any(incompatible):
            return
        table = _mismatch_table(incompatible)
        if self._resuming:
            raise CheckpointMismatchError(
                f"Checkpoint {self._source(self._loading)} does not fit the model, so it was "
                f"written by a run of another config:\n{table}\nResume with the config of that "
                "run, or train in another OUTPUT_DIR"
            )
        if not self.allow_partial_weights:
            raise CheckpointMismatchError(
                f"Checkpoint {self._loading} does not fit the model:\n{table}\nIt was saved from "
                "a model of another config: load it with that config (compare "
                f"{_shaping_keys(self.model)}). {_HOW_TO_ALLOW_PARTIAL}"
            )
        self.logger.warning(
            f"Loaded {self._loading} partially (MODEL.ALLOW_PARTIAL_WEIGHTS): these tensors keep "
            f"their initialisation or are unused:\n{table}"
        )


def load_weights_for_inference(
    model: nn.Module, cfg: CfgNode, *, save_dir: str = "", resume: bool = False
) -> None:
    """
    Load the weights that evaluation or inference runs with: MODEL.WEIGHTS, or with ``resume``
    the checkpoint named by ``save_dir/last_checkpoint`` if there is one. The load is strict
    (MODEL.ALLOW_PARTIAL_WEIGHTS does not apply): a partly loaded model's results are meaningless.

    Raises:
        ValueError: there are no weights to load (MODEL.WEIGHTS is empty).
        the errors of :meth:`SafeCheckpointer.load`.
    """
    checkpointer = SafeCheckpointer(
        model, save_dir, allow_unsafe_pickle=cfg.MODEL.ALLOW_UNSAFE_PICKLE
    )
    if not cfg.MODEL.WEIGHTS and not (resume and checkpointer.has_checkpoint()):
        raise ValueError(
            "MODEL.WEIGHTS is empty: evaluation and inference need trained weights, e.g. "
            "MODEL.WEIGHTS output/pointrend_semseg/model_final.pth"
        )
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
