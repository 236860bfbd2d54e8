"""
A SemanticSegmentor whose inference does not resize logits that already have the output size,
and segments images larger than TEST.TILE.SIZE tile by tile (:mod:`pointrend_d2.modeling.tiling`).
"""

from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.structures import ImageList
from torch import Tensor
from torch.nn import functional as F

from .tiling import tile_alignment, tiled_logits, validate_tiling


def crop_and_resize_logits(
    logits: Tensor, image_size: tuple[int, int], height: int, width: int
) -> Tensor:
    """
    Cut the padding off (K, H_pad, W_pad) logits to ``image_size`` and resize them bilinearly to
    (K, height, width), skipping the resize when the size is already right (a same-size bilinear
    resize returns the same values, at the cost of a full pass over the map).
    """
    logits = logits[:, : image_size[0], : image_size[1]]
    if tuple(image_size) == (height, width):
        return logits
    return F.interpolate(
        logits.unsqueeze(0), size=(height, width), mode="bilinear", align_corners=False
    )[0]


@META_ARCH_REGISTRY.register()
class ExactSizeSemanticSegmentor(SemanticSegmentor):
    """
    detectron2's ``SemanticSegmentor`` with the same training and outputs, whose inference resizes
    the logits only when the requested output size ("height", "width") differs from the input's.
    With a ``tile_size``, each image is segmented tile by tile (:func:`tiled_logits`), one image at
    a time: an image that fits in one tile gets exactly its whole-image logits.
    """

    @configurable
    def __init__(self, *, tile_size: int = 0, tile_overlap: int = 0, **kwargs):
        """
        Args:
            tile_size: side of the inference tiles in input pixels; 0 segments whole images.
            tile_overlap: pixels shared by neighbouring tiles; ``tile_size - tile_overlap`` must
                be a multiple of the backbone's coarsest stride (:func:`tile_alignment`).
            kwargs: those of detectron2's ``SemanticSegmentor``.
        """
        super().__init__(**kwargs)
        shapes = self.backbone.output_shape().values()
        alignment = tile_alignment(self.backbone.size_divisibility, [s.stride for s in shapes])
        validate_tiling(tile_size, tile_overlap, alignment)
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        return {
            **super().from_config(cfg),
            "tile_size": cfg.TEST.TILE.SIZE,
            "tile_overlap": cfg.TEST.TILE.OVERLAP,
        }

    def forward(self, batched_inputs: list[dict]) -> list[dict] | dict[str, Tensor]:
        if self.training:
            return super().forward(batched_inputs)
        images = [x["image"].to(self.device) for x in batched_inputs]
        if self.tile_size:
            logits = [
                tiled_logits(image, self.image_logits, self.tile_size, self.tile_overlap)
                for image in images
            ]
        else:
            logits = self.batch_logits(images)
        outputs = []
        for result, inputs in zip(logits, batched_inputs, strict=True):
            image_size = result.shape[-2:]
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            outputs.append({"sem_seg": crop_and_resize_logits(result, image_size, height, width)})
        return outputs

    def batch_logits(self, images: list[Tensor]) -> list[Tensor]:
        """
        Whole-image inference of (C, H_i, W_i) input images, padded together into one batch: each
        image's (K, H_i, W_i) logits.
        """
        batch = ImageList.from_tensors(
            [(image - self.pixel_mean) / self.pixel_std for image in images],
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        results, _ = self.sem_seg_head(self.backbone(batch.tensor), None)
        return [
            result[:, :height, :width]
            for result, (height, width) in zip(results, batch.image_sizes, strict=True)
        ]

    def image_logits(self, image: Tensor) -> Tensor:
        """Whole-image inference of one (C, H, W) input image: its (K, H, W) logits."""
        return self.batch_logits([image])[0]
