"""A timm Swin returning its four stage maps, and SWTformer's patch-token CAM head (Ahmadi & Kasaei)."""

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from timm.layers import PatchEmbed
from torch import Tensor, nn

from wsss.models.backbones import create_timm_model


class ConvStemPatchEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` with a small conv stem as its patch projection (Xiao et al. 2021).

    Each entry of ``stem_channels`` is a 3x3 conv + BatchNorm + ReLU; the first log2(patch_size) of them have
    stride 2, so the stem keeps the patch grid; a 1x1 conv then projects to ``embed_dim``. Not in the paper:
    a CPU-scale stand-in that lets a from-scratch Swin learn local textures in few steps.
    """

    def __init__(self, *args: Any, stem_channels: Sequence[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        patch = self.patch_size[0]
        strides = patch.bit_length() - 1
        if self.patch_size[0] != self.patch_size[1] or patch != 2**strides or len(stem_channels) < strides:
            raise ValueError(f"ConvStemPatchEmbed: needs a square power-of-two patch size and at least "
                             f"log2(patch) = {strides} stem convs, got patch {self.patch_size} and "
                             f"stem_channels {list(stem_channels)}")
        layers, width = [], self.proj.in_channels
        for i, channels in enumerate(stem_channels):
            layers += [nn.Conv2d(width, channels, 3, stride=2 if i < strides else 1, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            width = channels
        self.proj = nn.Sequential(*layers, nn.Conv2d(width, self.proj.out_channels, 1))


class SwinFeatures(nn.Module):
    """The four stage outputs of a timm Swin as channels-first maps (B, C_i, H/r_i, W/r_i).

    timm's Swin ``features_only`` returns channels-last (NHWC) maps; they are permuted here. The model is
    built with ``strict_img_size=False``, so any input size works: the input is zero-padded on the right and
    bottom to a multiple of the patch size (timm's Swin does not pad it), then timm pads each stage to whole
    windows (masks built for that size) and odd sizes before patch merging; stage grids are ceil(H / r_i).

    ``overrides`` replace timm's architecture arguments (``embed_dim``, ``depths``, ``num_heads``,
    ``window_size``, ``patch_size``, ``img_size``), e.g. for a tiny CPU configuration; windows larger than a
    stage's grid at ``img_size`` shrink to it (timm's rule). ``stem_channels`` (default None: the paper's
    linear patch embedding) replaces the patch projection by ``ConvStemPatchEmbed``.
    """

    def __init__(
        self, name: str = "swin_tiny_patch4_window7_224", weights: str | Path | None = None,
        in_channels: int = 3, overrides: dict[str, Any] | None = None,
        stem_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        overrides = dict(overrides or {})
        fixed = {"features_only", "in_chans", "strict_img_size", "pretrained", "embed_layer"}
        reserved = fixed & overrides.keys()
        if reserved:
            raise ValueError(f"SwinFeatures: overrides may not set {sorted(reserved)}; they are fixed here")
        if stem_channels is not None:
            overrides["embed_layer"] = partial(ConvStemPatchEmbed, stem_channels=list(stem_channels))
        self.model = create_timm_model(name, weights, features_only=True, in_chans=in_channels,
                                       strict_img_size=False, **overrides)
        self.channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())
        if len(self.channels) != 4:
            raise ValueError(f"SwinFeatures: {name} must have 4 stages, got {len(self.channels)}")

    def forward(self, images: Tensor) -> list[Tensor]:
        """Stage maps 1..4, NCHW."""
        patch = self.reductions[0]
        pad_h, pad_w = -images.shape[-2] % patch, -images.shape[-1] % patch
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        return [f.permute(0, 3, 1, 2).contiguous() for f in self.model(images)]


class PatchTokenCAMHead(nn.Module):
    """Eqs. 1–2: F_out = Conv2D(T_out); scores = GAP(F_out); CAM C_out = Norm(ReLU(F_out)).

    The paper gives no kernel size; the default 3x3 (padding 1) follows MCTformer-V2's patch-token CAM head,
    which SWTformer cites as its inspiration. Norm is per-class max normalisation as SIPE's ``norm_cam``:
    ReLU(F_out) / (spatial max + 1e-5), so a map's peak is just below 1 and all-zero maps stay zero.
    """

    def __init__(self, in_channels: int, num_classes: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"PatchTokenCAMHead: kernel_size must be odd and positive, got {kernel_size}")
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size, padding=kernel_size // 2)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Class scores (B, C) and normalised CAMs (B, C, P, P) from the token map T_out (B, D, P, P)."""
        maps = self.conv(tokens)
        return maps.mean((2, 3)), self.normalize(maps)

    @staticmethod
    def normalize(maps: Tensor, eps: float = 1e-5) -> Tensor:
        """Eq. 1's Norm(ReLU(F_out)) with SIPE's additive eps: ReLU(maps) / (spatial max + ``eps``)."""
        maps = maps.clamp_min(0)
        return maps / (maps.amax((-2, -1), keepdim=True) + eps)
