"""The CAM baseline: a timm CNN at output stride 16 with a 1x1 classifier (Zhou et al. 2016; as IRN)."""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from wsss.methods.base import WSSSMethod
from wsss.models.backbones import create_cnn_features
from wsss.pseudo.background import normalize_cams


class CAMBaseline(WSSSMethod):
    """Global-average-pooled 1x1 classifier on dilated CNN features; CAM = ReLU(W^T f), max-normalised.

    Trained with the multi-label soft-margin loss; the classifier has no bias and a 10x learning rate,
    as in IRN. Multi-scale + flip CAMs follow IRN's ``step/make_cam.py``: ReLU maps, a flipped view's map
    flipped back at the CAM grid, each view resized to (s·⌈H/s⌉, s·⌈W/s⌉) with s = ``output_stride``, the sum
    cropped to H × W and divided per class by (max + 1e-5) once.

    Differences from IRN: SGD momentum really is ``momentum`` (IRN's ``PolyOptimizer`` passes 1e-4
    positionally) and the poly power is ``poly_power``; multi-scale views are a bilinear resize of the
    normalised tensor (IRN: PIL bicubic on the uint8 image; both to round(s·H) × round(s·W)).
    """

    fusion_flip_back, fusion_norm = "cam", "max"

    def __init__(
        self,
        backbone: str = "resnet50",
        weights: str | None = None,
        output_stride: int = 16,
        head_lr_scale: float = 10.0,
        num_classes: int = 20,
        in_channels: int = 3,
        bg_threshold: float = 0.15,
        cam_scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
        cam_flip: bool = True,
        **optim,
    ) -> None:
        super().__init__(num_classes, in_channels, bg_threshold, cam_scales, cam_flip, **optim)
        self.backbone = create_cnn_features(backbone, in_channels, output_stride, weights)
        self.fusion_stride = output_stride
        self.classifier = nn.Conv2d(self.backbone.feature_info.channels()[-1], num_classes, 1, bias=False)

    def forward_features(self, images: Tensor) -> Tensor:
        """Backbone features (B, D, H/16, W/16)."""
        return self.backbone(images)[-1]

    def forward_head(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Logits from global average pooling and raw class maps from the same 1x1 classifier."""
        maps = self.classifier(features)
        return maps.mean((2, 3)), maps

    def classify(self, images: Tensor) -> Tensor:
        """Image-level logits (B, K)."""
        return self.forward_head(self.forward_features(images))[0]

    def cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """ReLU class maps normalised to max 1 per class."""
        return normalize_cams(self.forward_head(self.forward_features(images))[1], "max")

    def raw_cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """ReLU class maps, unnormalised, as the multi-scale fusion sums them."""
        return self.forward_head(self.forward_features(images))[1].relu()

    def logits_and_cams(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and CAMs from one forward pass."""
        logits, maps = self.forward_head(self.forward_features(images))
        return logits, normalize_cams(maps, "max")

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Multi-label soft-margin classification loss."""
        logits = self.classify(batch["image"])
        return {"loss": F.multilabel_soft_margin_loss(logits, batch["cls_labels"])}

    def param_groups(self) -> list[dict]:
        """Backbone at the base rate, the new classifier at ``head_lr_scale`` times it."""
        return [
            {"params": list(self.backbone.parameters())},
            {"params": list(self.classifier.parameters()), "lr_scale": self.hparams.head_lr_scale},
        ]
