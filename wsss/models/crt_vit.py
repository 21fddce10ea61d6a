"""CRT's transformer branch (Huo et al. 2023): a timm DeiT with a conv CAM head on the patch tokens (TS-CAM),
overlapping cutting-merging to any input size, residual-like correction (eq. 3) and the attention-coupled CAM
of eq. 1."""

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.models.attention import AttentionCapture, vit_attention_modules
from wsss.models.backbones import create_timm_model
from wsss.models.cut_merge import cut_tiles, merge_tiles, pad_for_tiles

Enlargement = Literal["cut_merge", "bilinear"]
TilePadding = Literal["paper", "official"]


class CRTTransformer(nn.Module):
    """DeiT + Conv3x3 CAM head; the CAM of an image of any size is merged from tiles of the native size.

    ``enlargement="cut_merge"`` tiles the (bottom/right zero-padded) image with a stride of half a tile and
    averages the overlapping tile CAMs; ``"bilinear"`` resizes the image to one tile and bilinearly
    up-samples its CAM (the "bilinear interp." row of Table 2). Both give a CAM of ceil(H/16) x ceil(W/16)
    for patch 16. ``name`` may also be a timm hybrid ViT (e.g. ``vit_tiny_r_s16_p8_224``, a ResNet stem
    before the patch projection): the token stride is then the stem's stride times the patch size, and the
    CAM is ceil(H/stride) x ceil(W/stride). ``loops`` = n applies eq. 3, T_in <- T_in + Blocks(T_in), n times
    (CLS token included; the final LayerNorm after the loop); 0 is the plain forward.

    ``tile_padding="paper"`` pads a side to the smallest ``tile + k * tile / 2`` (the paper's tile counts);
    ``"official"`` adds the official code's extra half tile to sides that are already a multiple of half a
    tile, in :meth:`refined_cams` only (the official code pads only when it makes CAMs; its training crops
    are tile multiples and unpadded).

    Initialisation without ``weights`` is the official one: the Conv3x3 head keeps PyTorch's default
    (uniform in +-1/sqrt(fan_in)) and the class token a truncated normal of std 0.02 (timm: std 1e-6).

    Eq. 1's class-to-patch attention is the head-mean CLS row averaged over every block and every loop pass
    (the paper averages; the official code sums, which only rescales it: it cancels after per-class
    normalisation).
    """

    def __init__(
        self,
        name: str = "deit_small_patch16_224",
        weights: str | None = None,
        num_classes: int = 20,
        in_channels: int = 3,
        loops: int = 3,
        enlargement: Enlargement = "cut_merge",
        tile_padding: TilePadding = "paper",
        **vit_kwargs,
    ) -> None:
        super().__init__()
        if loops < 0:
            raise ValueError(f"CRTTransformer: loops must be >= 0, got {loops}")
        if enlargement not in ("cut_merge", "bilinear"):
            raise ValueError(
                f"CRTTransformer: enlargement must be 'cut_merge' or 'bilinear', got {enlargement!r}"
            )
        if tile_padding not in ("paper", "official"):
            raise ValueError(
                f"CRTTransformer: tile_padding must be 'paper' or 'official', got {tile_padding!r}"
            )
        self.vit = create_timm_model(name, weights, num_classes=0, in_chans=in_channels, **vit_kwargs)
        if not hasattr(self.vit, "blocks") or not hasattr(self.vit, "patch_embed"):
            raise ValueError(f"CRTTransformer: {name} is not a timm VisionTransformer")
        embed = self.vit.patch_embed
        self.tile = embed.img_size[0]
        self.patch = self.tile // embed.grid_size[0]  # token stride in pixels (a hybrid's stem included)
        if embed.img_size[1] != self.tile or tuple(embed.grid_size) != (self.tile // self.patch,) * 2 or (
            self.tile % (2 * self.patch)
        ):
            raise ValueError(
                f"CRTTransformer: {name} needs a square native size divisible by twice the token stride "
                f"(half-tile stride on the token grid), got {embed.img_size} with a {embed.grid_size} grid"
            )
        self.loops = loops
        self.enlargement = enlargement
        self.tile_padding = tile_padding
        self.head = nn.Conv2d(self.vit.embed_dim, num_classes, kernel_size=3, padding=1)
        if weights is None and getattr(self.vit, "cls_token", None) is not None:
            nn.init.trunc_normal_(self.vit.cls_token, std=0.02)

    def forward_tokens(self, tiles: Tensor) -> Tensor:
        """Tokens (N, prefix + patches, D) of native-size tiles after ``loops`` passes of eq. 3 and norm."""
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(tiles))))
        if self.loops == 0:
            x = vit.blocks(x)
        for _ in range(self.loops):
            x = x + vit.blocks(x)
        return vit.norm(x)

    def tile_cams(self, tiles: Tensor) -> Tensor:
        """Raw semantic-aware CAMs (N, K, t, t) of native-size tiles (t = tile / patch)."""
        tokens = self.forward_tokens(tiles)[:, self.vit.num_prefix_tokens:]
        side = self.tile // self.patch
        return self.head(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side))

    def tile_cams_and_attention(self, tiles: Tensor) -> tuple[Tensor, Tensor]:
        """Raw tile CAMs and the class-to-patch attention (N, 1, t, t), averaged over heads, blocks, loops."""
        prefix, side = self.vit.num_prefix_tokens, self.tile // self.patch
        rows: list[Tensor] = []
        modules = vit_attention_modules(self.vit)
        fused = [getattr(m, "fused_attn", None) for m in modules]
        try:
            with AttentionCapture(modules, on_map=lambda i, attn: rows.append(attn[:, :, 0, prefix:].mean(1)),
                                  detach=True):
                cams = self.tile_cams(tiles)
        finally:  # capture unfuses the attention; training runs faster fused
            for module, flag in zip(modules, fused, strict=True):
                if flag is not None:
                    module.fused_attn = flag
        return cams, torch.stack(rows).mean(0).detach().reshape(-1, 1, side, side)

    def _cut(self, images: Tensor, extra_half_tile: bool = False) -> tuple[Tensor, tuple[int, int]]:
        if self.enlargement == "bilinear":
            tiles = F.interpolate(images, size=(self.tile, self.tile), mode="bilinear", align_corners=False)
            return tiles, (1, 1)
        stride = self.tile // 2
        return cut_tiles(pad_for_tiles(images, self.tile, stride, extra_half_tile), self.tile, stride)

    def _merge(self, maps: Tensor, batch: int, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
        if self.enlargement == "bilinear":
            return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        stride = self.tile // self.patch // 2
        return merge_tiles(maps, batch, grid, stride)[..., : size[0], : size[1]]

    def cam_size(self, images: Tensor) -> tuple[int, int]:
        """Size of the merged CAM of ``images``: ceil(H / patch) x ceil(W / patch)."""
        return math.ceil(images.shape[-2] / self.patch), math.ceil(images.shape[-1] / self.patch)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (B, K) = GAP of the merged raw CAM, and that CAM (B, K, H/s, W/s), s the token stride."""
        tiles, grid = self._cut(images)
        cams = self._merge(self.tile_cams(tiles), images.shape[0], grid, self.cam_size(images))
        return cams.mean((2, 3)), cams

    def refined_cams(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the eq. 1 CAM (B, K, H/s, W/s): per tile, class-to-patch attention ⊙ raw CAM, merged.

        The product is taken before any ReLU, as in the official code; callers normalise (and clamp) it.
        """
        tiles, grid = self._cut(images, self.tile_padding == "official")
        cams, attention = self.tile_cams_and_attention(tiles)
        batch, size = images.shape[0], self.cam_size(images)
        logits = self._merge(cams, batch, grid, size).mean((2, 3))
        return logits, self._merge(cams * attention, batch, grid, size)

    def head_parameters(self) -> list[nn.Parameter]:
        """The freshly initialised CAM head's parameters."""
        return list(self.head.parameters())
