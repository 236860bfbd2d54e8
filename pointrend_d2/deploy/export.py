"""
Export of the semantic models (PointRend with a SemanticFPN or DeepLabV3 coarse head, and their
plain baselines) to a torch.export program (``.pt2``) or an ONNX model, subdivision included.

The exported graph (:class:`ExportableSegmentor`) takes one raw image and does everything the
eager ``ExactSizeSemanticSegmentor`` does after the data loader:

    (1, 3, H, W) uint8 image in INPUT.FORMAT order, H and W dynamic (>= 2)
    -> normalise with PIXEL_MEAN / PIXEL_STD, zero-pad to a multiple of the backbone's
       size_divisibility, backbone, semantic head (PointRend: subdivision with the dense top-k
       selection, fixed shapes), crop the padding off
    -> (1, K', H, W) float32 logits (K' = max(K, 2): a single foreground logit as [0, logit])

Resizing the image to INPUT.MIN_SIZE_TEST and the logits back to the original size stays outside
(:class:`pointrend_d2.deploy.ExportedPredictor`), as it does outside the eager model.
"""

import os
from collections.abc import Callable
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.modeling import SemanticSegmentor, build_model
from torch import Tensor, nn
from torch.fx.experimental import _config as fx_config
from torch.nn import functional as F

from ..checkpoint import atomic_write, load_weights_for_inference
from ..data import register_datasets_from_config
from ..modeling.semantic_seg import PointRendSemanticHead
from .exported_predictor import ARTIFACT_FILES, ExportMetadata

__all__ = [
    "EXPORT_FORMATS",
    "ExportableSegmentor",
    "build_exportable_model",
    "class_names_and_colors",
    "compare_with_eager",
    "dataset_checkpoint_mismatch",
    "export_model",
]

EXPORT_FORMATS = tuple(ARTIFACT_FILES)
ONNX_OPSET = 18


class ExportableSegmentor(nn.Module):
    """
    A semantic segmentor's inference as one traceable module (see the module docstring):
    forward((1, 3, H, W) uint8 image) -> (1, K', H, W) float32 logits.
    """

    def __init__(self, model: SemanticSegmentor):
        """
        Args:
            model: a detectron2 ``SemanticSegmentor`` (or subclass) in eval mode; a PointRend
                head must select its cells by "topk", or by "auto", which is "topk" when exported.
        """
        super().__init__()
        head = model.sem_seg_head
        if isinstance(head, PointRendSemanticHead):
            selection = head.point_settings.subdivision_selection
            if selection == "bounded":
                raise ValueError(
                    "MODEL.POINT_HEAD.SUBDIVISION_SELECTION bounded cannot be exported (its "
                    "number of candidates depends on the data); use auto or topk (the same cells)"
                )
        self.backbone = model.backbone
        self.sem_seg_head = head
        self.register_buffer("pixel_mean", model.pixel_mean.clone(), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.clone(), persistent=False)
        # ImageList.from_tensors' rule: the padding constraint overrides size_divisibility.
        self.size_divisibility = model.backbone.padding_constraints.get(
            "size_divisibility", model.backbone.size_divisibility
        )
        if model.backbone.padding_constraints.get("square_size", 0) > 0:
            raise ValueError("backbones padding to a square size are not supported by the export")

    def forward(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        normalized = (image.to(torch.float32) - self.pixel_mean) / self.pixel_std
        divisor = max(self.size_divisibility, 1)
        # A multiple of the divisor written as one (not as height + (-height mod divisor)), so
        # that the shape arithmetic proves each stage's size for every height.
        padded_height = (height + divisor - 1) // divisor * divisor
        padded_width = (width + divisor - 1) // divisor * divisor
        padded = F.pad(normalized, (0, padded_width - width, 0, padded_height - height))
        logits, _ = self.sem_seg_head(self.backbone(padded), None)
        # Negative padding crops to exactly (height, width); a slice would need a proof that
        # height <= padded_height, which the shape arithmetic cannot give.
        return F.pad(logits, (0, width - padded_width, 0, height - padded_height))


@torch.no_grad()
def compare_with_eager(
    eager_model: SemanticSegmentor, run_exported: Callable[[Tensor], Tensor], image: Tensor
) -> dict[str, float]:
    """
    An exported program's logits against the eager model's on one image.

    Args:
        eager_model: the eager model (any subdivision selection: they select the same cells).
        run_exported: the program, (1, 3, H, W) uint8 -> (1, K', H, W) logits.
        image: (1, 3, H, W) uint8 image in the model's input format.

    Returns:
        ``max_abs_diff``, ``max_rel_diff`` (the largest difference over the largest |eager
        logit|) and ``argmax_agreement`` (fraction of pixels with the same top class).
    """
    expected = eager_model([{"image": image[0]}])[0]["sem_seg"].cpu()
    actual = run_exported(image)[0].cpu()
    if actual.shape != expected.shape:
        raise ValueError(f"exported logits {tuple(actual.shape)}, eager {tuple(expected.shape)}")
    max_abs_diff = (actual - expected).abs().max().item()
    return {
        "max_abs_diff": max_abs_diff,
        "max_rel_diff": max_abs_diff / max(expected.abs().max().item(), 1e-12),
        "argmax_agreement": (actual.argmax(0) == expected.argmax(0)).double().mean().item(),
    }


def build_exportable_model(cfg: CfgNode) -> ExportableSegmentor:
    """
    The model of ``cfg`` on the CPU, with ``MODEL.WEIGHTS`` loaded strictly, ready to export.
    PointRend heads select cells by "topk" in the exported graph (MODEL.POINT_HEAD.
    SUBDIVISION_SELECTION "auto" or "topk"; "bounded" is refused).

    Raises:
        ValueError: not a semantic model, "bounded" selection, or no MODEL.WEIGHTS.
        FileNotFoundError, pointrend_d2.checkpoint.CheckpointMismatchError, ...: the errors of
            :func:`load_weights_for_inference` (a missing file, weights that do not fit the
            model).
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    if not isinstance(model, SemanticSegmentor):
        raise ValueError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE}: only semantic segmentation "
            "models (SemanticSegmentor and its subclasses) can be exported"
        )
    load_weights_for_inference(model, cfg)
    return ExportableSegmentor(model.eval()).eval()


def dataset_checkpoint_mismatch(
    cfg: CfgNode, dataset_name: str, num_dataset_classes: int, model_classes: str
) -> ValueError:
    """
    The error for a dataset whose class count differs from that of a model whose weights are
    loaded: the model's count is its checkpoint's, so advice to set the config's count to the
    dataset's would only fail on the checkpoint.

    Args:
        cfg: the model's config (DATASETS.TEST, MODEL.WEIGHTS).
        dataset_name: the dataset whose class names were to label the outputs.
        num_dataset_classes: its number of classes.
        model_classes: the model's class count as its config gives it, e.g.
            "MODEL.ROI_HEADS.NUM_CLASSES=4".
    """
    config_key = "DATASETS.TEST" if dataset_name in cfg.DATASETS.TEST else "DATASETS.TRAIN"
    return ValueError(
        f"Dataset {dataset_name!r} ({config_key}) has {num_dataset_classes} classes, but the "
        f"model has {model_classes}, which its checkpoint {cfg.MODEL.WEIGHTS} fits: the dataset "
        "and the checkpoint disagree. Name in DATASETS.TEST the dataset that the checkpoint was "
        "trained on (its class names label the outputs)"
    )


def class_names_and_colors(cfg: CfgNode) -> tuple[list[str], list[list[int]] | None]:
    """
    Names and RGB colours of the output channels of a semantic model whose weights are loaded:
    ``stuff_classes`` and ``stuff_colors`` of the first of DATASETS.TEST, DATASETS.TRAIN whose
    metadata has them (folder specs registered first), else "class 0", "class 1", ... and no
    colours.

    Raises:
        ValueError: that dataset does not have one class per output channel
            (MODEL.SEM_SEG_HEAD.NUM_CLASSES, or 2 for a single foreground logit).
    """
    register_datasets_from_config(cfg)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    num_outputs = max(num_classes, 2)
    for name in (*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN):
        metadata = MetadataCatalog.get(name)
        if metadata.get("stuff_classes"):
            if len(metadata.stuff_classes) != num_outputs:
                model_classes = f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}"
                if num_classes == 1:
                    model_classes += " (a foreground logit: 2 classes)"
                raise dataset_checkpoint_mismatch(
                    cfg, name, len(metadata.stuff_classes), model_classes
                )
            colors = metadata.get("stuff_colors")
            return list(metadata.stuff_classes), [list(c) for c in colors] if colors else None
    return [f"class {i}" for i in range(num_outputs)], None


def export_model(
    cfg: CfgNode,
    output_dir: str,
    export_format: str,
    *,
    config_file: str = "",
    example_size: tuple[int, int] = (128, 192),
) -> str:
    """
    Export the model of ``cfg`` (weights from MODEL.WEIGHTS) to ``output_dir``: the program
    (``model.pt2`` or ``model.onnx``) and ``pointrend_d2_export.json``.

    Args:
        cfg: the model's config.
        output_dir: folder to write to (created if needed).
        export_format: "torch_export" or "onnx" (opset 18, one self-contained file).
        config_file: the config's file, recorded in the metadata.
        example_size: (H, W) of the example image traced; any size runs afterwards.

    Returns:
        The program's path.

    Raises:
        ValueError, FileNotFoundError, CheckpointMismatchError: see
            :func:`build_exportable_model` and :func:`class_names_and_colors`.
        pointrend_d2.checkpoint.FileWriteError: a file could not be written (a full disk);
            each file is written whole or not at all, so a previous export stays usable.
    """
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    model = build_exportable_model(cfg)
    class_names, class_colors = class_names_and_colors(cfg)
    example = torch.randint(0, 256, (1, 3, *example_size), dtype=torch.uint8)
    size = {2: torch.export.Dim("height", min=2), 3: torch.export.Dim("width", min=2)}
    # Without it the shape arithmetic special-cases maps of size 1 (a 1x1 p5 or ASPP pooling),
    # and images whose padded side is 32 or 64 would be outside the program's range.
    with fx_config.patch(backed_size_oblivious=True), torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=(size,))
    if export_format == "torch_export":

        def write_program(f):
            torch.export.save(program, f)

    else:
        onnx_model = torch.onnx.export(
            program,
            (example,),
            dynamo=True,
            opset_version=ONNX_OPSET,
            input_names=["image"],
            output_names=["logits"],
        ).model_proto

        def write_program(f):
            # One self-contained file, as ONNXProgram.save(..., external_data=False) writes it.
            f.write(onnx_model.SerializeToString())

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, ARTIFACT_FILES[export_format])
    atomic_write(path, write_program)
    ExportMetadata(
        format=export_format,
        input_format=cfg.INPUT.FORMAT,
        min_size_test=cfg.INPUT.MIN_SIZE_TEST,
        max_size_test=cfg.INPUT.MAX_SIZE_TEST,
        class_names=class_names,
        class_colors=class_colors,
        ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        source={
            "config_file": str(Path(config_file).resolve()) if config_file else "",
            "weights": cfg.MODEL.WEIGHTS,
            "torch": torch.__version__,
        },
    ).save(output_dir)
    return path
