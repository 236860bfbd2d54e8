"""MLPPointHead: its matrix products compute PointRend's 1x1 convolutions on the concatenated
fine-grained and coarse features, for all classes or one per element, with the same gradients."""

import pytest
import torch
from torch.nn import functional as F

from pointrend_d2.modeling.point_head import MLPPointHead, cuda_matmul_tf32


def conv_on_concatenation(head: MLPPointHead, fine: torch.Tensor, coarse: torch.Tensor):
    """The point MLP as written in the paper and the reference: convolutions on concatenations."""
    x = torch.cat([fine, coarse], dim=1)
    for layer in head.hidden_layers:
        x = F.relu(layer(x))
        if head.coarse_pred_each_layer:
            x = torch.cat([x, coarse], dim=1)
    return head.predictor(x)


def _head_and_inputs(num_fc, coarse_pred_each_layer, num_classes=5, batch=3, points=17):
    torch.manual_seed(0)
    head = MLPPointHead(
        input_channels=8,
        num_classes=num_classes,
        fc_dim=16,
        num_fc=num_fc,
        coarse_pred_each_layer=coarse_pred_each_layer,
    )
    # A predictor of ordinary scale: the initial std 0.001 would make every logit near zero.
    torch.nn.init.normal_(head.predictor.weight, std=0.3)
    return head, torch.randn(batch, 8, points), torch.randn(batch, num_classes, points)


@pytest.mark.parametrize("num_fc", [0, 1, 3])
@pytest.mark.parametrize("coarse_pred_each_layer", [True, False])
def test_forward_is_the_convolution_on_concatenated_features(num_fc, coarse_pred_each_layer):
    head, fine, coarse = _head_and_inputs(num_fc, coarse_pred_each_layer)
    actual = head(fine, coarse)
    assert actual.shape == (3, 5, 17)
    torch.testing.assert_close(actual, conv_on_concatenation(head, fine, coarse))


def test_classes_give_the_rows_of_those_classes():
    head, fine, coarse = _head_and_inputs(3, True)
    classes = torch.tensor([4, 0, 4])
    actual = head(fine, coarse, classes)
    assert actual.shape == (3, 1, 17)
    expected = head(fine, coarse)[torch.arange(3), classes].unsqueeze(1)
    torch.testing.assert_close(actual, expected)


def test_strided_fine_features_give_the_contiguous_result():
    head, fine, coarse = _head_and_inputs(3, True)
    strided = fine.transpose(0, 1).contiguous().transpose(0, 1)
    assert not strided.is_contiguous()
    assert torch.equal(head(strided, coarse), head(fine, coarse))


def test_gradients_match_the_convolution_on_concatenated_features():
    head, fine, coarse = _head_and_inputs(3, True)
    classes = torch.tensor([1, 2, 3])

    def conv_reference():
        return conv_on_concatenation(head, fine, coarse)[torch.arange(3), classes]

    gradients = []
    for forward in (lambda: head(fine, coarse, classes)[:, 0], conv_reference):
        head.zero_grad()
        fine.grad = coarse.grad = None
        fine.requires_grad_(True)
        coarse.requires_grad_(True)
        forward().square().sum().backward()
        gradients.append(
            [fine.grad.clone(), coarse.grad.clone()] + [p.grad.clone() for p in head.parameters()]
        )
    for actual, expected in zip(*gradients, strict=True):
        torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("allowed", [True, False])
def test_tf32_setting_holds_inside_and_is_restored(allowed):
    previous = torch.backends.cuda.matmul.allow_tf32
    with cuda_matmul_tf32(allowed):
        assert torch.backends.cuda.matmul.allow_tf32 is allowed
    assert torch.backends.cuda.matmul.allow_tf32 is previous
    with cuda_matmul_tf32(None):  # CPU tensors: torch's setting is left alone
        assert torch.backends.cuda.matmul.allow_tf32 is previous
