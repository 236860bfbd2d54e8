"""
Checkpoints that survive a killed job and do not run code when loaded.

Saving writes each file through a temporary file in the same folder, flushed to disk and then
renamed over the target (an atomic rename on POSIX file systems), and tags ``last_checkpoint``
the same way after the checkpoint is complete: a job killed at any moment leaves the previous
checkpoints and a ``last_checkpoint`` that names a complete file.

Loading unpickles ``.pth`` files with ``torch.load(weights_only=True)``, which only rebuilds
tensors and plain containers, and refuses detectron2's pickle formats (``.pkl``, ``.pyth``),
whose unpickling can run arbitrary code, unless it is explicitly allowed.
"""

import contextlib
import os
import pickle
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

__all__ = ["SafeCheckpointer", "UnsafeCheckpointError", "atomic_write"]

# Formats that detectron2 reads with plain pickle.load / torch.load(weights_only=False).
_PICKLE_EXTENSIONS = (".pkl", ".pyth")
_HOW_TO_ALLOW = (
    "If you trust its source, allow it with tools/train_net.py --allow-unsafe-pickle (the config "
    "key MODEL.ALLOW_UNSAFE_PICKLE True)"
)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that could run code when unpickled, refused because that is not allowed."""


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """
    Write ``path`` so that it is never seen (nor left by a crash) partly written: ``write`` fills
    a temporary file in the same folder, which is flushed to disk and renamed over ``path``.

    Args:
        path: a local file path.
        write: writes the content to the binary file object it is given.
    """
    directory = os.path.dirname(os.path.abspath(path))
    # Hidden and not ending in .pth, so that nothing lists it as a checkpoint; the pid keeps
    # concurrent writers apart.
    temporary_path = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary_path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary_path)
        raise
    # The rename itself is on disk only once the folder is.
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


class SafeCheckpointer(DetectionCheckpointer):
    """
    detectron2's ``DetectionCheckpointer`` with atomic saves and weights-only loads (see the
    module docstring). Local ``save_dir`` only.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        allow_unsafe_pickle: bool = False,
        save_to_disk: bool | None = None,
        **checkpointables: Any,
    ):
        """
        Args:
            model, save_dir, save_to_disk, checkpointables: as for ``DetectionCheckpointer``.
            allow_unsafe_pickle: also load files whose unpickling can run code: ``.pkl`` and
                ``.pyth`` files, and ``.pth`` files holding more than tensors and containers.
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_unsafe_pickle = allow_unsafe_pickle

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

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # Refused before detectron2 downloads a URL.
        if (
            path
            and not self.allow_unsafe_pickle
            and urlparse(path).path.endswith(_PICKLE_EXTENSIONS)
        ):
            raise UnsafeCheckpointError(
                f"Refusing to load {path}: it is a pickle file, and unpickling it can run "
                f"arbitrary code. {_HOW_TO_ALLOW}, or convert it to a .pth file of tensors"
            )
        return super().load(path, *args, **kwargs)

    def _torch_load(self, f: str) -> dict[str, Any]:
        if self.allow_unsafe_pickle:
            return torch.load(f, map_location="cpu", weights_only=False)
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise UnsafeCheckpointError(
                f"Refusing to load {f}: it holds objects other than tensors and containers, and "
                f"unpickling them can run arbitrary code. {_HOW_TO_ALLOW}. ({error})"
            ) from error
