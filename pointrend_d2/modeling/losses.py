"""
Losses of PointRend's semantic heads: pure tensor functions, no config.

K is the number of class logits; K = 1 is a single sigmoid foreground logit (labels 0 background,
1 foreground), trained with binary cross-entropy instead of cross-entropy. Labels equal to
``ignore_value`` do not count, and a loss over only ignored labels is 0, not NaN (a random crop can
fall entirely in an ignored region).
"""

from torch import Tensor
from torch.nn import functional as F

__all__ = ["point_loss", "sem_seg_loss", "upsampled_sem_seg_loss"]


def point_loss(point_logits: Tensor, point_labels: Tensor, ignore_value: int) -> Tensor:
    """
    Loss of the point predictions: cross-entropy over K classes, or binary cross-entropy for a
    single foreground logit.

    Args:
        point_logits: (N, K, P) logits.
        point_labels: (N, P) int64 labels.
        ignore_value: label of ignored points.

    Returns:
        scalar float32 loss, the mean over the points that are not ignored (0 if all are).
    """
    # In float32 also under mixed precision, where the logits come in half precision.
    point_logits = point_logits.float()
    valid = point_labels != ignore_value
    num_valid = valid.sum().clamp(min=1)
    if point_logits.shape[1] == 1:
        losses = F.binary_cross_entropy_with_logits(
            point_logits[:, 0], point_labels.to(point_logits.dtype), reduction="none"
        )
        return (losses * valid).sum() / num_valid
    return (
        F.cross_entropy(point_logits, point_labels, ignore_index=ignore_value, reduction="sum")
        / num_valid
    )


def sem_seg_loss(logits: Tensor, labels: Tensor, ignore_value: int) -> Tensor:
    """
    :func:`point_loss` at every pixel of a dense prediction.

    Args:
        logits: (N, K, H, W) logits.
        labels: (N, H, W) int64 labels.
        ignore_value: label of ignored pixels.

    Returns:
        scalar loss, the mean over the pixels that are not ignored (0 if all are).
    """
    return point_loss(logits.flatten(2), labels.flatten(1), ignore_value)


def upsampled_sem_seg_loss(logits: Tensor, labels: Tensor, ignore_value: int) -> Tensor:
    """
    The coarse heads' loss: :func:`sem_seg_loss` of low-resolution logits upsampled bilinearly to
    the labels' size. For K > 1 it equals detectron2's ``SemSegFPNHead.losses`` (a mean
    cross-entropy, before its loss weight), except that it is 0, not NaN, when every label is
    ignored.

    Args:
        logits: (N, K, H / s, W / s) logits of stride s.
        labels: (N, H, W) int64 labels.
        ignore_value: label of ignored pixels.
    """
    # Upsampled in float32, as detectron2's heads do (pytorch issue 48163).
    logits = F.interpolate(
        logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
    )
    return sem_seg_loss(logits, labels, ignore_value)
