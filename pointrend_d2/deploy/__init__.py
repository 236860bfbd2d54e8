"""Deployment: export to torch.export (.pt2) and ONNX, and a predictor for exported artifacts."""

from .export import EXPORT_FORMATS, compare_with_eager, export_model
from .exported_predictor import METADATA_FILE, ExportedPredictor, UnreadableArtifactError

__all__ = [
    "EXPORT_FORMATS",
    "METADATA_FILE",
    "ExportedPredictor",
    "UnreadableArtifactError",
    "compare_with_eager",
    "export_model",
]
