"""Stage 3: a fully supervised segmenter trained on pseudo-masks (or true masks for the upper bound)."""

import torch.nn.functional as F
from torch import Tensor

from wsss.eval import SegmentationIoU
from wsss.methods.base import BaseTask
from wsss.models.segmenters import SegmenterArch, create_segmenter


class SegmentationTask(BaseTask):
    """smp Unet / DeepLabV3+ / Segformer with cross-entropy on ``mask`` (255 ignored), any ``in_channels``.

    ``num_classes`` counts foreground classes (as everywhere in wsss); the network predicts K+1 channels.
    """

    def __init__(
        self,
        arch: SegmenterArch = "unet",
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        num_classes: int = 20,
        in_channels: int = 3,
        **optim,
    ) -> None:
        super().__init__(**optim)
        self.num_classes = num_classes
        self.model = create_segmenter(arch, encoder, in_channels, num_classes + 1, encoder_weights)
        self.val_iou = SegmentationIoU(num_classes=num_classes + 1)
        self.test_iou = SegmentationIoU(num_classes=num_classes + 1)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (B, K+1, H, W); the input is padded to the encoder's stride and cropped back."""
        h, w = images.shape[-2:]
        stride = 32
        padded = (
            F.pad(images, (0, -w % stride, 0, -h % stride), mode="reflect")
            if (h % stride or w % stride)
            else images
        )
        return self.model(padded)[..., :h, :w]

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Cross-entropy on the (pseudo-)mask, ignoring 255."""
        return {"loss": F.cross_entropy(self(batch["image"]), batch["mask"], ignore_index=255)}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """mIoU of the argmax prediction against the true mask."""
        self.val_iou.update(self(batch["image"]).argmax(1), batch["mask"])
        self.log("val/miou", self.val_iou, prog_bar=True, batch_size=batch["image"].shape[0])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """mIoU of the argmax prediction against the true mask."""
        self.test_iou.update(self(batch["image"]).argmax(1), batch["mask"])
        self.log("test/miou", self.test_iou, batch_size=batch["image"].shape[0])

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Softmax scores (B, K+1, H, W) for the prediction writer: the plain argmax, not limited
        to the image's labels (a segmenter's prediction must not read ground-truth image labels)."""
        out = {"name": batch["name"], "scores": self(batch["image"]).softmax(1)}
        return out | {k: batch[k] for k in ("image", "mask") if k in batch}
