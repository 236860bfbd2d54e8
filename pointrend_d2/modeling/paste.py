"""
Instance masks in bounded memory: each detection's mask is kept as its (M, M) probabilities and
box, and pasted into the image only when read, one detection at a time.

detectron2's ``detector_postprocess`` pastes every mask as a full-image (H, W) mask at once: R
detections on a 12-megapixel image hold R x 12 MB, and each consumer's copies (a subset, uint8
conversions for drawing) as much again. :class:`BoxMasks` holds R x M x M probabilities (224 x
224 for PointRend) instead and pastes a mask into its box's region only, exactly as detectron2's
``paste_masks_in_image`` does on the CPU (tested pixel for pixel).
"""

import math
import numbers
from collections.abc import Iterator

from detectron2.layers import paste_masks_in_image
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from torch import Tensor

__all__ = ["BoxMasks", "postprocess_detections"]


class BoxMasks:
    """
    The binary masks of R detections in an (H, W) image, pasted on demand from each detection's
    (M, M) mask probabilities and box.

    It stands where detectron2 puts an (R, H, W) bool tensor of pasted masks: ``len``, iteration
    and an integer index give (H, W) bool masks one at a time (as detectron2's COCO and Cityscapes
    evaluators read them); any other index (a slice, a bool or index tensor, as ``Instances``
    indexing passes) gives the selected detections' ``BoxMasks``. :meth:`crop` gives a mask
    within its box's region only, without the image around it.
    """

    def __init__(
        self,
        probabilities: Tensor,
        boxes: Tensor,
        image_size: tuple[int, int],
        threshold: float = 0.5,
    ):
        """
        Args:
            probabilities: (R, M, M) mask probabilities, each over its box.
            boxes: (R, 4) boxes (x0, y0, x1, y1) in image pixels, within the image.
            image_size: (H, W) of the image.
            threshold: a pixel is in the mask where its pasted probability is at least this.
        """
        if probabilities.ndim != 3 or boxes.shape != (len(probabilities), 4):
            raise ValueError(
                f"BoxMasks needs (R, M, M) probabilities and (R, 4) boxes, got "
                f"{tuple(probabilities.shape)} and {tuple(boxes.shape)}"
            )
        self.probabilities = probabilities
        self.boxes = boxes
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.threshold = threshold

    def __len__(self) -> int:
        return len(self.probabilities)

    def __getitem__(self, item) -> "Tensor | BoxMasks":
        if isinstance(item, numbers.Integral):
            return self.paste(int(item))
        return BoxMasks(self.probabilities[item], self.boxes[item], self.image_size, self.threshold)

    def __iter__(self) -> Iterator[Tensor]:
        return (self.paste(index) for index in range(len(self)))

    def to(self, device) -> "BoxMasks":
        return BoxMasks(
            self.probabilities.to(device), self.boxes.to(device), self.image_size, self.threshold
        )

    def region(self, index: int) -> tuple[slice, slice]:
        """
        The (rows, columns) of the image into which mask ``index`` is pasted: its box widened by
        one pixel on each side and clipped to the image, as detectron2 pastes on the CPU. Outside
        it the mask is empty.
        """
        # tolist() is exact (float32 to float), so floor and ceil are detectron2's.
        x0, y0, x1, y1 = self.boxes[index].tolist()
        height, width = self.image_size
        rows = slice(max(math.floor(y0) - 1, 0), min(math.ceil(y1) + 1, height))
        columns = slice(max(math.floor(x0) - 1, 0), min(math.ceil(x1) + 1, width))
        return rows, columns

    def crop(self, index: int) -> tuple[Tensor, tuple[slice, slice]]:
        """
        Mask ``index`` within its :meth:`region`: an (h, w) bool tensor and the region's slices
        of the image.
        """
        rows, columns = self.region(index)
        # detectron2's paste into an image of the region's size, with the box moved by the
        # region's integer offset: box coordinates minus an integer are exact in float32, so the
        # sampling grid, and the mask, are those of the paste into the whole image.
        offset = self.boxes.new_tensor([columns.start, rows.start, columns.start, rows.start])
        mask = paste_masks_in_image(
            self.probabilities[index : index + 1],
            (self.boxes[index] - offset).unsqueeze(0),
            (rows.stop - rows.start, columns.stop - columns.start),
            threshold=self.threshold,
        )[0]
        return mask, (rows, columns)

    def paste(self, index: int) -> Tensor:
        """Mask ``index`` in the whole image: an (H, W) bool tensor."""
        crop, region = self.crop(index)
        mask = crop.new_zeros(self.image_size)
        mask[region] = crop
        return mask


def postprocess_detections(
    results: Instances, output_height: int, output_width: int, mask_threshold: float = 0.5
) -> Instances:
    """
    detectron2's ``detector_postprocess`` (boxes scaled to the output size and clipped, empty
    ones dropped), with ``pred_masks`` kept as :class:`BoxMasks` instead of pasted full-image
    masks.

    Args:
        results: one image's raw detections (``GeneralizedRCNN.inference(...,
            do_postprocess=False)``) at the model input's size, ``pred_masks`` (R, 1, M, M)
            probabilities if any. Modified in place, as by ``detector_postprocess``.
        output_height, output_width: the output image's size.
        mask_threshold: see :class:`BoxMasks`.
    """
    has_masks = results.has("pred_masks")
    if has_masks:
        # A tensor field follows the detections that detector_postprocess keeps, unpasted.
        results.mask_probabilities = results.pred_masks[:, 0]
        results.remove("pred_masks")
    results = detector_postprocess(results, output_height, output_width)
    if has_masks:
        results.pred_masks = BoxMasks(
            results.mask_probabilities,
            results.pred_boxes.tensor,
            (output_height, output_width),
            mask_threshold,
        )
        results.remove("mask_probabilities")
    return results
