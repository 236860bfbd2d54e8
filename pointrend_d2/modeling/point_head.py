"""Point heads: per-point classifiers run on the features sampled at PointRend's points."""

import contextlib
from collections.abc import Iterator

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import Tensor, nn
from torch.nn import functional as F

POINT_HEAD_REGISTRY = Registry("POINTREND_D2_POINT_HEAD")
POINT_HEAD_REGISTRY.__doc__ = """
Registry for pointrend_d2's point heads.

A point head is an ``nn.Module`` built as ``obj(cfg, input_channels, num_classes)`` (directly, or
through detectron2's ``@configurable`` ``from_config(cfg, input_channels, num_classes)``), where
``input_channels`` is the number of fine-grained feature channels per point and ``num_classes``
the number K of class logits, given by the head that uses it. Its forward is

    forward(fine_grained_features: (N, input_channels, P), coarse_features: (N, K, P),
            classes: (N,) int64 | None = None) -> (N, K, P), or (N, 1, P) with classes

where N is the batch size (images, or boxes for instance masks), P the number of points and K the
number of class logits: MODEL.SEM_SEG_HEAD.NUM_CLASSES for semantic segmentation (1 for a single
sigmoid foreground logit), MODEL.ROI_HEADS.NUM_CLASSES mask logits for instances (1 with
MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK). ``coarse_features`` are the coarse head's logits at the
same points. The output are the refined logits at the points, on the
same scale as the coarse logits, because they are written back into the coarse logit map. With
``classes`` (an instance head asks for one class per box), only the logit of ``classes[n]`` is
returned for element n: the same values as selecting it from all K, for less work.
"""


@POINT_HEAD_REGISTRY.register()
class MLPPointHead(nn.Module):
    """
    PointRend's point MLP, 1x1 ``Conv1d`` layers over the points (computed by
    :func:`pointwise_linear`): ``num_fc`` hidden layers of width ``fc_dim`` with ReLU, then a
    linear predictor to the class logits. The coarse logits are an input of the first layer beside
    the fine-grained features and, with ``coarse_pred_each_layer``, of every later layer too (each
    layer's weight reads the concatenation ``[input, coarse logits]``, as in the reference).
    ``num_fc=0`` is a single linear layer.
    """

    @configurable
    def __init__(
        self,
        *,
        input_channels: int,
        num_classes: int,
        fc_dim: int = 256,
        num_fc: int = 3,
        coarse_pred_each_layer: bool = True,
        allow_tf32: bool = False,
    ):
        """
        Args:
            input_channels: number of fine-grained feature channels per point.
            num_classes: K, number of class logits (1 for a sigmoid foreground logit).
            fc_dim: width of each hidden layer.
            num_fc: number of hidden layers.
            coarse_pred_each_layer: concatenate the coarse logits to every layer's input.
            allow_tf32: on CUDA, let the matrix products round their inputs to TF32, as cuDNN
                does by default for the reference's convolutions; False keeps them in full FP32
                whatever ``torch.backends.cuda.matmul.allow_tf32`` says. No effect on the CPU.
        """
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.allow_tf32 = allow_tf32
        self.hidden_layers = []
        in_channels = input_channels + num_classes
        for k in range(num_fc):
            fc = nn.Conv1d(in_channels, fc_dim, kernel_size=1)
            weight_init.c2_msra_fill(fc)
            # Named fc1..fcN so that detectron2 PointRend checkpoints load unchanged.
            self.add_module(f"fc{k + 1}", fc)
            self.hidden_layers.append(fc)
            in_channels = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(in_channels, num_classes, kernel_size=1)
        # A near-zero predictor starts the refined logits close to zero rather than at noise.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_channels: int, num_classes: int):
        return {
            "input_channels": input_channels,
            "num_classes": num_classes,
            "fc_dim": cfg.MODEL.POINT_HEAD.FC_DIM,
            "num_fc": cfg.MODEL.POINT_HEAD.NUM_FC,
            "coarse_pred_each_layer": cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER,
            "allow_tf32": cfg.MODEL.POINT_HEAD.ALLOW_TF32,
        }

    def forward(
        self, fine_grained_features: Tensor, coarse_features: Tensor, classes: Tensor | None = None
    ) -> Tensor:
        """(N, input_channels, P) and (N, K, P) -> (N, K, P) logits, or (N, 1, P) those of
        ``classes`` (N,) only."""
        x = fine_grained_features
        with cuda_matmul_tf32(self.allow_tf32 if x.is_cuda else None):
            for layer in self.hidden_layers:
                x = F.relu(pointwise_linear(layer, x, coarse_features), inplace=True)
                if not self.coarse_pred_each_layer:
                    coarse_features = None
            rows = None if classes is None else classes.unsqueeze(1)
            return pointwise_linear(self.predictor, x, coarse_features, rows)


@contextlib.contextmanager
def cuda_matmul_tf32(allowed: bool | None) -> Iterator[None]:
    """While active, CUDA float32 matrix products may use TF32 if ``allowed``, or must not;
    ``None`` leaves torch's setting alone (the CPU has no TF32)."""
    if allowed is None:
        yield
        return
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def pointwise_linear(
    layer: nn.Conv1d,
    features: Tensor,
    extra_features: Tensor | None,
    output_channels: Tensor | None = None,
) -> Tensor:
    """
    A 1x1 ``Conv1d`` on the channel concatenation of (N, C, P) ``features`` and (N, C', P)
    ``extra_features`` (if not None), as batched matrix products with the two parts of its weight:
    no concatenated copy of the inputs, and about 1.5x faster than the convolution on the CPU. The
    sums are the same, in another order (float rounding differs in the last bits).

    Args:
        output_channels: (N, O) int64, the output channels to compute for each batch element
            (default: all of them).

    Returns:
        (N, O, P), O = out_channels by default.
    """
    weight, bias = layer.weight.squeeze(2), layer.bias
    batch_size, num_channels = features.shape[:2]
    if output_channels is None:
        weight, bias = weight.expand(batch_size, -1, -1), bias.unsqueeze(1)
    else:
        weight, bias = weight[output_channels], bias[output_channels].unsqueeze(2)
    out = torch.baddbmm(bias, weight[:, :, :num_channels], features)
    if extra_features is not None:
        # In place, so not autocast: under mixed precision the operands take the output's dtype.
        extra_weight = weight[:, :, num_channels:].to(out.dtype)
        out.baddbmm_(extra_weight, extra_features.to(out.dtype))
    return out


def point_in_features(cfg: CfgNode, input_shape: dict[str, ShapeSpec]) -> list[str]:
    """
    MODEL.POINT_HEAD.IN_FEATURES, the maps sampled as fine-grained features, checked against the
    maps the head receives (``input_shape``, by name).

    Raises:
        ValueError: if it is empty or names a map not in ``input_shape``.
    """
    in_features = list(cfg.MODEL.POINT_HEAD.IN_FEATURES)
    missing = [name for name in in_features if name not in input_shape]
    if not in_features or missing:
        raise ValueError(
            f"MODEL.POINT_HEAD.IN_FEATURES={in_features}: {missing or 'none'} not produced by the "
            f"backbone; it must name one or more of the backbone's maps {sorted(input_shape)}"
        )
    return in_features


def build_point_head(cfg: CfgNode, input_channels: int, num_classes: int) -> nn.Module:
    """
    Build the point head named by ``cfg.MODEL.POINT_HEAD.NAME`` for K = ``num_classes``.

    Raises:
        ValueError: if the name is not registered in :data:`POINT_HEAD_REGISTRY`.
    """
    name = cfg.MODEL.POINT_HEAD.NAME
    registered = sorted(head_name for head_name, _ in POINT_HEAD_REGISTRY)
    if name not in registered:
        raise ValueError(
            f"MODEL.POINT_HEAD.NAME={name!r} is not registered in POINT_HEAD_REGISTRY; "
            f"registered: {registered}"
        )
    return POINT_HEAD_REGISTRY.get(name)(cfg, input_channels, num_classes)
