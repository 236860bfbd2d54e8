"""A SemanticSegmentor whose inference does not resize logits that already have the output size."""

from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.structures import ImageList
from torch import Tensor
from torch.nn import functional as F


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
    """

    def forward(self, batched_inputs: list[dict]) -> list[dict] | dict[str, Tensor]:
        if self.training:
            return super().forward(batched_inputs)
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = ImageList.from_tensors(
            [(image - self.pixel_mean) / self.pixel_std for image in images],
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        results, _ = self.sem_seg_head(self.backbone(images.tensor), None)
        outputs = []
        for result, inputs, image_size in zip(
            results, batched_inputs, images.image_sizes, strict=True
        ):
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            outputs.append({"sem_seg": crop_and_resize_logits(result, image_size, height, width)})
        return outputs
