"""Stage-3 segmenters from segmentation-models-pytorch, with encoder weights read only from a local file."""

from pathlib import Path
from typing import Literal

import segmentation_models_pytorch as smp
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from wsss.models.weights import load_strictly, weights_path

#: classifier prefixes of ImageNet checkpoints that an smp encoder does not have (torchvision / NVlabs MiT)
ENCODER_HEADS = ("fc", "head", "classifier")

SegmenterArch = Literal["unet", "deeplabv3plus", "segformer"]


def create_segmenter(
    arch: SegmenterArch,
    encoder: str,
    in_channels: int,
    classes: int,
    encoder_weights: str | Path | None = None,
) -> nn.Module:
    """An smp model; ``encoder_weights`` is a local 3-band encoder checkpoint (the encoder's ImageNet release,
    e.g. torchvision's ResNet or NVlabs' MiT ``.pth``, its classifier ignored), loaded strictly and adapted
    to ``in_channels``; the encoder carries its ``weights_report``."""
    path = weights_path(encoder_weights)
    model = smp.create_model(
        arch,
        encoder_name=encoder,
        encoder_weights=None,
        in_channels=3 if path else in_channels,
        classes=classes,
    )
    if path is not None:
        report = load_strictly(model.encoder, path, f"the {encoder} encoder", ENCODER_HEADS)
        model.encoder.weights_report = report
        rank_zero_info(f"wsss: weights {report}")
        if in_channels != 3:
            model.encoder.set_in_channels(in_channels, pretrained=True)
    return model
