"""The multi-class-token ViT of MCTformer (Xu et al., CVPR 2022) on timm's VisionTransformer.

C class tokens, each with its own position embedding, precede the patch tokens; every block's attention map
is captured (with its gradient, so losses may act on it). From a single-[CLS] checkpoint (DeiT) the class
token and its position-embedding slot are repeated C times, as MCTformer's ``--finetune`` branch does;
without one, each class token and its position embedding are drawn independently (truncated normal, std
0.02, as MCTformer's model initialises them).
Inputs of any size work: like the official stride-16 patch convolution, the rows and columns beyond the last
whole patch are dropped (a 375×500 image is read as its top-left 368×496). The patch position table is
resampled to the patch grid by ``pos_interp``: ``"official"`` is MCTformer's ``interpolate_pos_encoding``
(bicubic with scale factors (h + 0.1)/h₀ and (w + 0.1)/w₀, so the samples sit a fraction of a cell off the
exact resize; the table is used as it is for a square image with the training grid), ``"timm"`` is timm's
``resample_abs_pos_embed`` (bicubic to the exact size, antialiased).
The returned tokens skip the final LayerNorm, as MCTformer's ``forward_features`` does.

The functions below read the attention maps the way MCTformer's CAM inference does (methods.md §3d): the
mean over heads, class→patch attention summed over the last layers, patch→patch attention summed over all
layers, the V2 fusion with the Patch-CAM (Bi-Trans eq. 8) and the affinity refinement (Bi-Trans eq. 10).
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from wsss.models.attention import AttentionCapture, fused_attention_pays, vit_attention_modules
from wsss.models.backbones import create_timm_model

PosInterp = Literal["official", "timm"]


@dataclass
class MCTOutput:
    """Final class tokens (B, C, D), patch tokens as a map (B, D, h, w), and per-block attention maps."""

    class_tokens: Tensor
    patch_tokens: Tensor
    attentions: list[Tensor]

    @property
    def grid(self) -> tuple[int, int]:
        """The patch-token grid (h, w)."""
        return tuple(self.patch_tokens.shape[-2:])


class MultiClassTokenViT(nn.Module):
    """A timm ViT/DeiT with ``num_classes`` class tokens and captured attention (MCTformer's backbone).

    ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``depth``, ``embed_dim``, ``num_heads``, ``patch_size``
    for a tiny model). ``weights`` is a local single-[CLS] checkpoint, or None for a random initialisation.
    ``pos_interp`` chooses how the patch position table follows the input size (module docstring).
    """

    def __init__(
        self,
        name: str = "deit_small_patch16_224",
        num_classes: int = 20,
        in_channels: int = 3,
        weights: str | Path | None = None,
        img_size: int = 224,
        drop_path_rate: float = 0.1,
        pos_interp: PosInterp = "official",
        **timm_kwargs,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"MultiClassTokenViT: num_classes must be >= 1, got {num_classes}")
        if pos_interp not in get_args(PosInterp):
            raise ValueError(
                f"MultiClassTokenViT: pos_interp must be one of {get_args(PosInterp)}, got {pos_interp!r}")
        self.pos_interp = pos_interp
        vit = create_timm_model(
            name, weights, num_classes=0, global_pool="", in_chans=in_channels, img_size=img_size,
            drop_path_rate=drop_path_rate, dynamic_img_size=True, **timm_kwargs,
        )
        if getattr(vit, "cls_token", None) is None or vit.num_prefix_tokens != 1 or vit.no_embed_class:
            raise ValueError(
                f"MultiClassTokenViT: {name} must be a ViT with exactly one [CLS] token that has its own "
                f"position embedding (no distillation or register tokens), got {vit.num_prefix_tokens} "
                "prefix tokens"
            )
        self.num_classes = num_classes
        self.class_tokens = nn.Parameter(vit.cls_token.detach().repeat(1, num_classes, 1))
        self.class_pos_embed = nn.Parameter(vit.pos_embed.detach()[:, :1].repeat(1, num_classes, 1))
        if weights is None:  # distinct tokens: repeating timm's ~0 [CLS] init would make them all equal
            nn.init.trunc_normal_(self.class_tokens, std=0.02)
            nn.init.trunc_normal_(self.class_pos_embed, std=0.02)
        self.patch_pos_embed = nn.Parameter(vit.pos_embed.detach()[:, 1:].clone())
        self.pos_grid = tuple(vit.patch_embed.grid_size)
        self.patch_size = tuple(vit.patch_embed.patch_size)
        vit.cls_token = None
        vit.pos_embed = None
        vit.norm = nn.Identity()
        self.vit = vit
        self.embed_dim = vit.embed_dim
        self.capture = AttentionCapture(vit_attention_modules(vit))

    @property
    def depth(self) -> int:
        """Number of transformer blocks."""
        return len(self.vit.blocks)

    def no_weight_decay(self) -> set[str]:
        """The token and position parameters exempt from weight decay (timm's convention; DeiT's list)."""
        return {"class_tokens", "class_pos_embed", "patch_pos_embed"}

    def patch_position_table(self, grid: tuple[int, int], square_image: bool) -> Tensor:
        """The patch position embeddings (1, h·w, D) for a patch grid (h, w), resampled by ``pos_interp``."""
        if self.pos_interp == "timm":
            return resample_abs_pos_embed(self.patch_pos_embed, grid, self.pos_grid, num_prefix_tokens=0)
        if grid == self.pos_grid and square_image:
            return self.patch_pos_embed
        return interpolate_pos_official(self.patch_pos_embed, self.pos_grid, grid)

    def set_attention_capture(self, enabled: bool) -> None:
        """Materialise (and capture) the attention maps, or run timm's fused attention without them."""
        for module in self.capture.modules:
            module.fused_attn = not enabled

    def forward(self, images: Tensor, with_attention: bool = True) -> MCTOutput:
        """Encode images (B, C_in, H, W) into class tokens, patch tokens and the attention of every block.

        Rows and columns past the last whole patch are dropped, as the official patch convolution does.
        ``with_attention=False`` runs fused attention (``scaled_dot_product_attention``) and returns no maps:
        the same tokens up to float rounding, faster, for passes that read no attention (MCTformer training);
        under CPU autocast the explicit product is the faster one and runs instead.
        """
        self.set_attention_capture(with_attention or not fused_attention_pays(images))
        height, width = images.shape[-2:]
        patches = self.vit.patch_embed(crop_to_patches(images, self.patch_size))  # (B, h, w, D)
        b, h, w, d = patches.shape
        pos = self.patch_position_table((h, w), square_image=height == width)
        tokens = torch.cat(
            [(self.class_tokens + self.class_pos_embed).expand(b, -1, -1), patches.flatten(1, 2) + pos], dim=1
        )
        tokens = self.vit.blocks(self.vit.norm_pre(self.vit.pos_drop(tokens)))
        c = self.num_classes
        patch_map = tokens[:, c:].transpose(1, 2).reshape(b, d, h, w)
        attentions = list(self.capture.maps) if with_attention else []
        return MCTOutput(tokens[:, :c], patch_map, attentions)


def crop_to_patches(images: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """The top-left part of images (..., H, W) made of whole patches: what a stride-p patch conv reads."""
    (height, width), (ph, pw) = images.shape[-2:], patch_size
    if height < ph or width < pw:
        raise ValueError(f"the input {height}×{width} is smaller than one {ph}×{pw} patch")
    return images[..., : height - height % ph, : width - width % pw]


def interpolate_pos_official(table: Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """MCTformer's ``interpolate_pos_encoding`` on a patch table (1, h₀·w₀, D): bicubic with scale factors
    (h + 0.1)/h₀ and (w + 0.1)/w₀ (the DINO trick), giving (1, h·w, D) sampled slightly off the exact resize.
    """
    (h0, w0), (h, w) = grid, new_grid
    d = table.shape[-1]
    square = table.reshape(1, h0, w0, d).permute(0, 3, 1, 2)
    resized = F.interpolate(square, scale_factor=((h + 0.1) / h0, (w + 0.1) / w0), mode="bicubic")
    if tuple(resized.shape[-2:]) != (h, w):
        raise RuntimeError(f"interpolate_pos_official: a {tuple(resized.shape[-2:])} table for grid {(h, w)}")
    return resized.permute(0, 2, 3, 1).reshape(1, h * w, d)


def _layer_sum(attentions: list[Tensor], layers: int | None) -> Tensor:
    if not attentions:
        raise ValueError("no attention maps: run the MultiClassTokenViT forward pass first")
    if layers is not None and not 1 <= layers <= len(attentions):
        raise ValueError(f"layers must be in 1..{len(attentions)} (the depth) or None, got {layers}")
    chosen = attentions if layers is None else attentions[-layers:]
    return torch.stack([a.mean(dim=1) for a in chosen]).sum(dim=0)


def class_patch_attention(attentions: list[Tensor], num_classes: int, layers: int | None = 3) -> Tensor:
    """Class→patch attention (B, C, N): head mean summed over the last ``layers`` blocks (Bi-Trans eq. 2)."""
    return _layer_sum(attentions, layers)[:, :num_classes, num_classes:]


def patch_patch_attention(attentions: list[Tensor], num_classes: int, layers: int | None = None) -> Tensor:
    """Patch→patch affinity (B, N, N): head mean summed over the last ``layers`` (None: all) blocks, eq. 9."""
    return _layer_sum(attentions, layers)[:, num_classes:, num_classes:]


def attention_entropy(class_attention: Tensor) -> Tensor:
    """Per image (B,): the mean over classes of each class→patch row's entropy over log N (1 = uniform).

    A diagnostic, not in the papers: 1 means SC-CAM carries no location (collapsed class tokens).
    """
    rows = class_attention / class_attention.sum(-1, keepdim=True).clamp_min(1e-12)
    entropy = -(rows * rows.clamp_min(1e-12).log()).sum(-1) / math.log(rows.shape[-1])
    return entropy.mean(-1)


def pseudo_mask(class_attention: Tensor, coarse_cam: Tensor) -> Tensor:
    """M_pseudo = SC-CAM ⊙ ReLU(Coarse-CAM), element-wise (Bi-Trans eq. 8; MCTformer-V2's fused CAM)."""
    if class_attention.shape != coarse_cam.shape:
        raise ValueError(
            f"pseudo_mask: SC-CAM {tuple(class_attention.shape)} and Coarse-CAM {tuple(coarse_cam.shape)} "
            "differ"
        )
    return class_attention * coarse_cam.clamp_min(0)


def refine_with_affinity(affinity: Tensor, maps: Tensor) -> Tensor:
    """PGT_c = A_aff · vec(M_c) for maps (B, C, N) and affinity (B, N, N) (Bi-Trans eq. 10; MCTformer)."""
    if affinity.ndim != 3 or maps.ndim != 3 or affinity.shape[-1] != maps.shape[-1]:
        raise ValueError(
            f"refine_with_affinity: need affinity (B, N, N) and maps (B, C, N), got {tuple(affinity.shape)} "
            f"and {tuple(maps.shape)}"
        )
    return maps @ affinity.transpose(-1, -2)


def class_maps(
    output: MCTOutput,
    num_classes: int,
    cam_layers: int | None = 3,
    patch_cam: Tensor | None = None,
    affinity_layers: int | None = None,
    refine: bool = False,
) -> Tensor:
    """Raw class maps (B, C, h, w): class→patch attention, fused with ReLU(patch_cam) when given (V2, eq. 8),
    then multiplied by the patch→patch affinity when ``refine`` (MCTformer's patch-attention refinement,
    eq. 10).
    """
    maps = class_patch_attention(output.attentions, num_classes, cam_layers)
    if patch_cam is not None:
        maps = pseudo_mask(maps, patch_cam.flatten(2))
    if refine:
        affinity = patch_patch_attention(output.attentions, num_classes, affinity_layers)
        maps = refine_with_affinity(affinity, maps)
    return maps.unflatten(-1, output.grid)
