"""
Inference with an exported model (:mod:`pointrend_d2.export`): no detectron2 model is built and
no config or checkpoint is read, only the artifact folder that ``tools/export_model.py`` writes:

    <folder>/model.pt2 or model.onnx   the program: (1, 3, H, W) uint8 image -> (1, K, H, W) logits
    <folder>/pointrend_d2_export.json  what pre-processing needs (ExportMetadata)

Images are pre-processed by the same code as the eager :class:`pointrend_d2.predictor.Predictor`
(:func:`build_model_input` with an :class:`InferenceMapper`), and the logits are
resized back to the original image size as ``ExactSizeSemanticSegmentor`` does.

    predictor = ExportedPredictor("exported/")
    output = predictor("image.png")  # {"sem_seg": (K, H, W) logits, "labels": (H, W) int64}
"""

import dataclasses
import json
import os
from typing import Any

import numpy as np
import torch
from detectron2.data import transforms as T
from torch import Tensor

from ..checkpoint import atomic_write, zip_archive_damage
from ..data.inference_mapper import InferenceMapper
from ..modeling.meta_arch import crop_and_resize_logits
from ..predictor import build_model_input

__all__ = [
    "ARTIFACT_FILES",
    "METADATA_FILE",
    "ExportMetadata",
    "ExportedPredictor",
    "UnreadableArtifactError",
]

#: The metadata file beside every artifact.
METADATA_FILE = "pointrend_d2_export.json"
#: The program's file name in the folder, by export format.
ARTIFACT_FILES = {"torch_export": "model.pt2", "onnx": "model.onnx"}


class UnreadableArtifactError(ValueError):
    """An exported program that cannot be loaded: empty, truncated, damaged, or not a program."""


@dataclasses.dataclass(frozen=True)
class ExportMetadata:
    """
    What an exported program needs beside it to be used on image files (all from the config it
    was exported from).

    Attributes:
        format: "torch_export" or "onnx".
        input_format: channel order of the program's input, INPUT.FORMAT ("BGR" or "RGB").
        min_size_test, max_size_test: INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, the test-time resize.
        class_names: the K' names of the output channels.
        class_colors: their RGB colours, if the dataset's metadata gives them.
        ignore_value: MODEL.SEM_SEG_HEAD.IGNORE_VALUE (the mapper checks label files with it).
        source: where the program came from (config file, weights, torch version), for people.
    """

    format: str
    input_format: str
    min_size_test: int
    max_size_test: int
    class_names: list[str]
    class_colors: list[list[int]] | None
    ignore_value: int
    source: dict[str, Any]

    @property
    def artifact_file(self) -> str:
        """The program's file name inside the artifact folder."""
        return ARTIFACT_FILES[self.format]

    def save(self, directory: str) -> str:
        """Write ``directory/pointrend_d2_export.json``; returns its path."""
        path = os.path.join(directory, METADATA_FILE)
        content = json.dumps(dataclasses.asdict(self), indent=2).encode()
        atomic_write(path, lambda f: f.write(content))
        return path

    @classmethod
    def load(cls, directory: str) -> "ExportMetadata":
        """
        Read ``directory/pointrend_d2_export.json``.

        Raises:
            FileNotFoundError: no metadata file in ``directory`` (or no such folder).
            ValueError: a key is missing or has a bad value (the error names the file and key).
        """
        path = os.path.join(directory, METADATA_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} does not exist: {directory} is not a folder written by "
                "tools/export_model.py"
            )
        with open(path) as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}") from error
        fields = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in fields if name not in values]
        if missing:
            raise ValueError(f"{path} lacks the key(s) {missing}")
        metadata = cls(**{name: values[name] for name in fields})
        if metadata.format not in ARTIFACT_FILES:
            raise ValueError(
                f"{path}: format {metadata.format!r} is not one of {tuple(ARTIFACT_FILES)}"
            )
        if metadata.input_format not in ("BGR", "RGB"):
            raise ValueError(f"{path}: input_format {metadata.input_format!r} is not BGR or RGB")
        return metadata


def check_image_tensor(image: Tensor, input_format: str) -> None:
    """
    Raise a ValueError (TypeError for a non-tensor) unless ``image`` is what an exported program
    takes: a (1, 3, H, W) uint8 tensor, H, W >= 2.
    """
    expected = f"expected a (1, 3, H, W) uint8 tensor in {input_format} order"
    if not isinstance(image, Tensor):
        raise TypeError(f"image: {expected}, got {type(image)}")
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(
            f"image has shape {tuple(image.shape)}; {expected} (one colour image of 3 channels)"
        )
    if image.dtype != torch.uint8:
        raise ValueError(
            f"image has dtype {image.dtype}; {expected}, values 0-255 (the program normalises)"
        )
    if min(image.shape[2:]) < 2:
        raise ValueError(f"image has shape {tuple(image.shape)}; height and width must be >= 2")


class ExportedPredictor:
    """
    Runs an exported model (a ``.pt2`` torch.export program or an ``.onnx`` model, run with
    onnxruntime on the CPU) on images, pre-processed as the eager :class:`Predictor` does.
    """

    def __init__(self, directory: str, *, num_threads: int | None = None):
        """
        Args:
            directory: a folder written by ``tools/export_model.py``.
            num_threads: CPU threads of onnxruntime (default: torch's thread count); a
                torch.export program uses torch's threads (``torch.set_num_threads``).

        Raises:
            FileNotFoundError: the folder, its metadata or its program file is missing.
            ValueError: the metadata is incomplete.
            UnreadableArtifactError: the program file is empty, truncated or damaged.
        """
        self.metadata = ExportMetadata.load(directory)
        self.path = os.path.join(directory, self.metadata.artifact_file)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"{self.path} does not exist, but {os.path.join(directory, METADATA_FILE)} "
                f"names it as the {self.metadata.format} program of this folder"
            )
        if os.path.getsize(self.path) == 0:
            raise self._unreadable("the file is empty")
        if self.metadata.format == "onnx":
            # onnxruntime is the optional "export" extra: needed only for ONNX artifacts.
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = num_threads or torch.get_num_threads()
            options.inter_op_num_threads = 1
            try:
                self._session = onnxruntime.InferenceSession(
                    self.path, options, providers=["CPUExecutionProvider"]
                )
            except Exception as error:  # onnxruntime's errors have no common base but Exception
                raise self._unreadable(f"onnxruntime cannot load it ({error})") from error
            self._input_name = self._session.get_inputs()[0].name
        else:
            # torch.export.load does not check the archive's CRCs, and reports a truncated file
            # as zipfile's "File is not a zip file", naming nothing.
            damage = zip_archive_damage(self.path, "torch.export's format")
            if damage is not None:
                raise self._unreadable(damage)
            try:
                self._module = torch.export.load(self.path).module()
            except Exception as error:
                raise self._unreadable(f"torch.export.load fails ({error})") from error
        self.mapper = InferenceMapper(
            # detectron2's test-time augmentation (detection_utils.build_augmentation).
            augmentations=[
                T.ResizeShortestEdge(
                    self.metadata.min_size_test, self.metadata.max_size_test, "choice"
                )
            ],
            image_format=self.metadata.input_format,
        )

    def _unreadable(self, cause: str) -> UnreadableArtifactError:
        exported_with = self.metadata.source.get("torch", "")
        version = (
            f" (it was exported with torch {exported_with}, this is torch {torch.__version__})"
            if exported_with and exported_with != torch.__version__
            else ""
        )
        return UnreadableArtifactError(
            f"Exported program {self.path} cannot be loaded: {cause}. Export it again with "
            f"tools/export_model.py{version}, or copy it again if it was copied (an interrupted "
            "copy leaves such files; export_model.py writes whole files or none)"
        )

    @torch.no_grad()
    def run(self, image: Tensor) -> Tensor:
        """
        The program on one pre-processed image: (1, 3, H, W) uint8 in ``input_format`` order ->
        (1, K, H, W) float32 logits.
        """
        check_image_tensor(image, self.metadata.input_format)
        if self.metadata.format == "onnx":
            (logits,) = self._session.run(None, {self._input_name: image.cpu().numpy()})
            return torch.from_numpy(logits)
        return self._module(image)

    def __call__(self, image: str | np.ndarray) -> dict[str, Tensor]:
        """
        Args:
            image: an image file, or an (H, W, 3) uint8 array in ``input_format`` order.

        Returns:
            ``{"sem_seg": (K, H, W) logits, "labels": (H, W) int64 argmax}`` at the image's size.
        """
        model_input = build_model_input(self.mapper, image)
        resized = model_input["image"]
        logits = self.run(resized[None])[0]
        logits = crop_and_resize_logits(
            logits, tuple(resized.shape[1:]), model_input["height"], model_input["width"]
        )
        return {"sem_seg": logits, "labels": logits.argmax(dim=0)}
