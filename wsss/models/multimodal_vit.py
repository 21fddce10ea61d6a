"""A multimodal ViT with early summation (Hanna et al. 2023, sec. 4.1): one patch embedding per modality.

The modalities arrive concatenated along the channels (the DFC2020 DataModule stacks S1 then S2); the
embedding splits them, embeds each with its own patch projection and sums the token embeddings position by
position, before the [CLS] token and the position embedding are added. Everything else is timm's
``VisionTransformer``, configured like the official blocks by default (LayerNorm eps 1e-5, no qkv bias;
timm's own defaults are 1e-6 and a qkv bias). (A sum of per-modality linear embeddings equals one linear
embedding of the concatenation with summed biases; the separate projections keep each modality's
initialisation and make the design explicit.)
"""

from collections.abc import Sequence
from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn


class SummedProjection(nn.Module):
    """Per-modality patch projections (strided convolutions) whose tokens are summed (early summation)."""

    def __init__(self, modality_channels: Sequence[int], embed_dim: int, patch_size: tuple[int, int],
                 bias: bool = True) -> None:
        super().__init__()
        self.modality_channels = tuple(modality_channels)
        self.projections = nn.ModuleList(
            nn.Conv2d(c, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
            for c in self.modality_channels
        )

    def forward(self, images: Tensor) -> Tensor:
        """(B, sum C_m, H, W) -> (B, D, H/P, W/P), the sum of every modality's embedding."""
        parts = torch.split(images, self.modality_channels, dim=1)
        return torch.stack([proj(x) for proj, x in zip(self.projections, parts, strict=True)]).sum(0)


class MultimodalPatchEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` (padding, dynamic sizes, output formats) with a :class:`SummedProjection`."""

    def __init__(self, modality_channels: Sequence[int], in_chans: int = 3, embed_dim: int = 768,
                 bias: bool = True, **kwargs) -> None:
        if sum(modality_channels) != in_chans:
            raise ValueError(
                f"modality_channels {tuple(modality_channels)} sum to {sum(modality_channels)}, but the "
                f"images have {in_chans} channels"
            )
        super().__init__(in_chans=in_chans, embed_dim=embed_dim, bias=bias, **kwargs)
        self.proj = SummedProjection(modality_channels, embed_dim, self.patch_size, bias)


def create_multimodal_vit(
    modality_channels: Sequence[int],
    num_classes: int,
    img_size: int = 224,
    patch_size: int = 14,
    embed_dim: int = 1024,
    depth: int = 12,
    num_heads: int = 16,
    mlp_ratio: float = 2.0,
    qkv_bias: bool = False,
    norm_eps: float = 1e-5,
) -> VisionTransformer:
    """A [CLS]-token timm ViT whose patch embedding sums one embedding per modality (early summation).

    Any image size works (position embeddings are interpolated, the image is padded to a multiple of the
    patch size). Defaults are the paper's: patch 14, depth 12, 16 heads, width 1024, MLP 2048, no dropout;
    where the paper is silent, the official code's: no qkv bias, LayerNorm eps 1e-5 (``qkv_bias=True``,
    ``norm_eps=1e-6`` give timm's).
    """
    if not modality_channels or min(modality_channels) < 1:
        raise ValueError(f"modality_channels must be positive band counts, got {tuple(modality_channels)}")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=sum(modality_channels),
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        norm_layer=partial(nn.LayerNorm, eps=norm_eps),
        class_token=True,
        global_pool="token",
        dynamic_img_size=True,
        dynamic_img_pad=True,
        embed_layer=partial(MultimodalPatchEmbed, tuple(modality_channels)),
    )
