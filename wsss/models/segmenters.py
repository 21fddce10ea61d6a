"""Stage-3 segmenters from segmentation-models-pytorch, with encoder weights read only from a local file."""

from pathlib import Path
from typing import Literal

import segmentation_models_pytorch as smp
import torch
from torch import nn

from wsss.models.backbones import check_weights_path

SegmenterArch = Literal["unet", "deeplabv3plus", "segformer"]


def create_segmenter(
    arch: SegmenterArch,
    encoder: str,
    in_channels: int,
    classes: int,
    encoder_weights: str | Path | None = None,
) -> nn.Module:
    """An smp model; ``encoder_weights`` is a local 3-band encoder state dict, adapted to ``in_channels``."""
    path = check_weights_path(encoder_weights)
    model = smp.create_model(
        arch,
        encoder_name=encoder,
        encoder_weights=None,
        in_channels=3 if path else in_channels,
        classes=classes,
    )
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            model.encoder.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{path}: not a state dict of the {encoder!r} encoder ({err})") from err
        if in_channels != 3:
            model.encoder.set_in_channels(in_channels, pretrained=True)
    return model
