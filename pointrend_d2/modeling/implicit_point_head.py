"""
Implicit PointRend's point head: an MLP whose weights are not parameters of the model but are
predicted for each instance (by the parameter head of
:class:`pointrend_d2.modeling.implicit_mask_head.ImplicitPointRendInstanceMaskHead`), so that each
instance's mask is an implicit function of the point: its logits at any box-normalized point from
the fine-grained features there and a positional encoding of the point.

Shape shorthand: R instances (boxes), P points per box, C fine-grained feature channels, K mask
classes, D the hidden width (MODEL.POINT_HEAD.FC_DIM).
"""

import math

import torch
from detectron2.config import CfgNode, configurable
from torch import Tensor, nn
from torch.nn import functional as F

from .point_head import cuda_matmul_tf32

__all__ = ["POSITIONAL_ENCODING_CHANNELS", "ImplicitMLPPointHead", "instance_linear"]

#: Channels of the positional encoding: sine and cosine of 128 random Fourier features of the
#: point, as in detectron2's ImplicitPointHead.
POSITIONAL_ENCODING_CHANNELS = 256


class ImplicitMLPPointHead(nn.Module):
    """
    The per-instance implicit function: ``num_fc`` hidden layers of width ``fc_dim`` with ReLU and
    a linear output layer to K logits, each layer's weight and bias taken from the instance's
    parameter vector. Its input at a point is the positional encoding of the point (256
    channels), then the fine-grained features there (C channels), either of which can be
    disabled.

    The parameter vector of an instance holds every layer's weight (``out x in``, row-major), then
    every layer's bias, in layer order: the layout of detectron2's ImplicitPointHead, so that its
    checkpoints' parameter heads predict the same functions here. The head's only tensor is the
    fixed random matrix of the positional encoding, ``positional_encoding_gaussian_matrix``
    (detectron2's name).
    """

    @configurable
    def __init__(
        self,
        *,
        input_channels: int,
        num_classes: int,
        fc_dim: int = 256,
        num_fc: int = 3,
        image_features: bool = True,
        positional_encoding: bool = True,
        allow_tf32: bool = False,
    ):
        """
        Args:
            input_channels: C, fine-grained feature channels per point.
            num_classes: K, the logits per point (1 for class-agnostic masks).
            fc_dim: D, width of each hidden layer.
            num_fc: number of hidden layers (at least 1).
            image_features: read the fine-grained features at the points.
            positional_encoding: read the positional encoding of the points.
            allow_tf32: on CUDA, let the matrix products round their inputs to TF32 (see
                :class:`pointrend_d2.modeling.point_head.MLPPointHead`). No effect on the CPU.
        """
        super().__init__()
        if num_fc < 1 or fc_dim < 1:
            raise ValueError(
                f"MODEL.POINT_HEAD.NUM_FC={num_fc}, FC_DIM={fc_dim}: the implicit point head needs "
                "at least one hidden layer (NUM_FC >= 1) of width FC_DIM >= 1"
            )
        if not (image_features or positional_encoding):
            raise ValueError(
                "MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED and POS_ENC_ENABLED are both "
                "False: the implicit point head would have no input; enable at least one"
            )
        self.num_classes = num_classes
        self.image_features = image_features
        self.positional_encoding = positional_encoding
        self.allow_tf32 = allow_tf32
        in_channels = input_channels if image_features else 0
        if positional_encoding:
            in_channels += POSITIONAL_ENCODING_CHANNELS
            self.register_buffer(
                "positional_encoding_gaussian_matrix",
                torch.randn(2, POSITIONAL_ENCODING_CHANNELS // 2),
            )
        #: (out, in) of each layer, input layer first.
        self.layer_shapes = [
            (fc_dim, in_channels),
            *[(fc_dim, fc_dim)] * (num_fc - 1),
            (num_classes, fc_dim),
        ]
        self.parameter_sizes = [out * in_ for out, in_ in self.layer_shapes] + [
            out for out, _ in self.layer_shapes
        ]
        #: Length of an instance's parameter vector.
        self.num_params = sum(self.parameter_sizes)

    @classmethod
    def from_config(cls, cfg: CfgNode, input_channels: int, num_classes: int):
        return {
            "input_channels": input_channels,
            "num_classes": num_classes,
            "fc_dim": cfg.MODEL.POINT_HEAD.FC_DIM,
            "num_fc": cfg.MODEL.POINT_HEAD.NUM_FC,
            "image_features": cfg.MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED,
            "positional_encoding": cfg.MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED,
            "allow_tf32": cfg.MODEL.POINT_HEAD.ALLOW_TF32,
        }

    def forward(
        self,
        fine_grained_features: Tensor | None,
        point_coords: Tensor,
        parameters: Tensor,
        classes: Tensor | None = None,
    ) -> Tensor:
        """
        Args:
            fine_grained_features: (R, C, P) features at the points; unused (may be None)
                without ``image_features``.
            point_coords: (R, P, 2) box-normalized points.
            parameters: (R, num_params) each instance's parameter vector.
            classes: (R,) int64: return only the logit of each instance's class (the only one
                for K = 1): the same values as selecting it from all K, for less work.

        Returns:
            (R, K, P) logits, or (R, 1, P) with ``classes``.
        """
        inputs = []
        if self.positional_encoding:
            inputs.append(self.encode_positions(point_coords))
        if self.image_features:
            inputs.append(fine_grained_features)
        (first_weight, first_bias), *layers = self.instance_layers(parameters, classes)
        with cuda_matmul_tf32(self.allow_tf32 if parameters.is_cuda else None):
            x = instance_linear(first_weight, first_bias, inputs)
            for weight, bias in layers:
                x = instance_linear(weight, bias, [F.relu(x, inplace=True)])
        return x

    def encode_positions(self, point_coords: Tensor) -> Tensor:
        """
        (R, P, 2) box-normalized points -> (R, 256, P) encoding: ``sin`` then ``cos`` of
        ``2 pi (2 p - 1) G`` for the fixed random (2, 128) matrix G (in detectron2's order of
        operations, so that the same G gives the same encoding).
        """
        num_boxes, num_points = point_coords.shape[:2]
        projected = (2 * point_coords.reshape(-1, 2) - 1) @ self.positional_encoding_gaussian_matrix
        projected = (2 * math.pi) * projected
        encoding = torch.cat([torch.sin(projected), torch.cos(projected)], dim=1)
        return encoding.view(num_boxes, num_points, -1).transpose(1, 2)

    def instance_layers(
        self, parameters: Tensor, classes: Tensor | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """
        Each layer's (R, out, in) weight and (R, out, 1) bias from the (R, num_params) parameter
        vectors (views, no copies); with ``classes`` (and K > 1) the output layer's rows of those
        classes only, (R, 1, D) and (R, 1, 1).
        """
        num_boxes, num_layers = parameters.shape[0], len(self.layer_shapes)
        pieces = parameters.split(self.parameter_sizes, dim=1)
        layers = [
            (weight.view(num_boxes, out, in_), bias.view(num_boxes, out, 1))
            for (out, in_), weight, bias in zip(
                self.layer_shapes, pieces[:num_layers], pieces[num_layers:], strict=True
            )
        ]
        if classes is not None and self.num_classes > 1:
            rows = torch.arange(num_boxes, device=parameters.device)
            weight, bias = layers[-1]
            layers[-1] = (weight[rows, classes].unsqueeze(1), bias[rows, classes].unsqueeze(1))
        return layers


def instance_linear(weight: Tensor, bias: Tensor, inputs: list[Tensor]) -> Tensor:
    """
    A linear layer with a weight per instance on the channel concatenation of ``inputs``, as
    batched matrix products with the matching column blocks of the weight: no concatenated copy
    of the inputs. The sums are the same as on the concatenation, in another order (float rounding
    differs in the last bits).

    Args:
        weight: (R, O, sum(C_i)) weights.
        bias: (R, O, 1) biases.
        inputs: (R, C_i, P) each.

    Returns:
        (R, O, P).
    """
    first, *others = inputs
    num_channels = first.shape[1]
    out = torch.baddbmm(bias, weight[:, :, :num_channels], first)
    for extra in others:
        columns = weight[:, :, num_channels : num_channels + extra.shape[1]]
        # In place, so not autocast: under mixed precision the operands take the output's dtype.
        out.baddbmm_(columns.to(out.dtype), extra.to(out.dtype))
        num_channels += extra.shape[1]
    return out
