"""Backbones from timm, with pretrained weights read only from a local file."""

from pathlib import Path

import timm
from torch import nn


def check_weights_path(weights: str | Path | None) -> Path | None:
    """Return ``weights`` as a Path, or raise a clear error when the file does not exist."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; wsss never downloads weights: download them yourself "
            "(e.g. from the timm / Hugging Face model page) and pass the local path, or pass no weights"
        )
    return path


def create_timm_model(name: str, weights: str | Path | None = None, **kwargs) -> nn.Module:
    """``timm.create_model`` that loads ``weights`` from a local file (adapting stem and head) or none."""
    path = check_weights_path(weights)
    if path is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)


def create_cnn_features(
    name: str, in_channels: int = 3, output_stride: int = 16, weights: str | Path | None = None
) -> nn.Module:
    """A timm CNN returning its last feature map at ``output_stride`` (dilated last stages)."""
    return create_timm_model(
        name,
        weights,
        in_chans=in_channels,
        features_only=True,
        output_stride=output_stride,
        out_indices=(-1,),
    )
