"""Segmenters that also return per-level patch attention maps A_l (SASFormer, paper 001, eqs. 2-3).

``SegFormerWithAttention`` is smp's SegFormer (MiT encoder, MLP decoder); its four levels are the four MiT
stages, whose keys are spatially reduced (sequence reduction), so A_l is (N_q, N_kv) with the key grid
``sr_ratio`` times coarser than the query grid. ``ViTSegmenter`` is a timm ViT with a linear per-patch head
(Segmenter's linear decoder); its blocks are split into consecutive groups, one level per group, with square
maps over the patch tokens (class / register tokens dropped, rows renormalised).

Official MiT weights (NVlabs ``mit_b*.pth``, or the encoder of a SegFormer / SASFormer checkpoint) use smp's
key names: :func:`official_mit_state_dict` only unwraps and strips prefixes and drops the ImageNet head, and
:meth:`SegFormerWithAttention.load_official_encoder` loads them (files read as every weights file is).
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders.mix_transformer import Attention as SmpMiTAttention
from torch import Tensor, nn

from wsss.models.attention import (
    AttentionCapture,
    fused_attention_pays,
    mit_attention_modules,
    vit_attention_modules,
)
from wsss.models.backbones import create_timm_model
from wsss.models.segmenters import create_segmenter
from wsss.models.weights import LoadReport, load_converted, unwrap_state_dict


@dataclass
class AttentionLevel:
    """A_l of one level (eq. 3): (B, N_q, N_kv), rows summing to 1, with its query and key grids (h, w)."""

    attention: Tensor
    query_size: tuple[int, int]
    key_size: tuple[int, int]


@dataclass
class SegmenterOutput:
    """Logits at the decoder's resolution of the padded input, the levels' A_l, the padded and input sizes;
    ``logits`` at the input size are computed on first use (a training step on decoder logits skips them)."""

    decoder_logits: Tensor
    levels: list[AttentionLevel]
    padded_size: tuple[int, int]
    input_size: tuple[int, int]

    @cached_property
    def logits(self) -> Tensor:
        """Logits (B, C, H, W): decoder logits upsampled bilinearly to the padded input, then cropped."""
        upsampled = F.interpolate(self.decoder_logits, size=self.padded_size, mode="bilinear",
                                  align_corners=False)
        return upsampled[..., : self.input_size[0], : self.input_size[1]]


OFFICIAL_ENCODER_PREFIXES = ("backbone.", "encoder.")


def official_mit_state_dict(state: Mapping) -> dict[str, Tensor]:
    """An official MiT state dict -> smp's MiT encoder keys (the same names).

    Accepts a ``{"state_dict": ...}`` checkpoint, a ``module.`` (DataParallel) prefix, and a whole segmenter
    whose encoder sits under ``backbone.`` (mmseg SegFormer) or ``encoder.`` (SASFormer): only the encoder is
    kept. The ImageNet classifier ``head.*`` is dropped.
    """
    state = unwrap_state_dict(state)
    for prefix in OFFICIAL_ENCODER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            break
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def average_attention(maps: Sequence[Tensor], num_prefix_tokens: int = 0) -> Tensor:
    """Eq. 3: the mean over layers of the head-mean attention (B, N_q, N_kv), rows renormalised to sum 1.

    Summed rather than averaged: the renormalisation cancels the 1 / (layers x heads), and the backward pass
    of a sum broadcasts its gradient where a mean's divides a full (B, heads, N_q, N_kv) tensor.
    """
    total = sum(m.sum(1) for m in maps)
    if num_prefix_tokens:
        total = total[:, num_prefix_tokens:, num_prefix_tokens:]
    return total / total.sum(-1, keepdim=True).clamp_min(1e-12)


class MiTAttention(SmpMiTAttention):
    """smp's MiT attention (the same parameters and function) computed faster.

    q is scaled before the product (an (N, d) multiplication instead of an (N, N_kv) one), and PyTorch's
    fused attention runs when ``fused_attn`` is on (no map is read) and pays
    (:func:`~wsss.models.attention.fused_attention_pays`). Unfused, the map passes through ``attn_drop``,
    where :class:`~wsss.models.attention.AttentionCapture` reads it.
    """

    fused_attn = True

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """Tokens (B, N, C) of an ``height`` x ``width`` grid -> tokens (B, N, C)."""
        batch, n, channels = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(batch, n, heads, channels // heads).transpose(1, 2)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(batch, channels, height, width)
            x = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(batch, -1, 2, heads, channels // heads).permute(2, 0, 3, 1, 4)
        if self.fused_attn and fused_attention_pays(x):
            dropout = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scale)
        else:
            out = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, n, channels)))


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Zero-pad (the normalised mean, as the crop padding) bottom and right to multiples of ``multiple``."""
    h, w = images.shape[-2:]
    if h % multiple == 0 and w % multiple == 0:
        return images
    return F.pad(images, (0, -w % multiple, 0, -h % multiple), value=0.0)


def decode_channels_last(decoder: nn.Module, head: nn.Conv2d, features: list[Tensor]) -> Tensor:
    """smp's ``SegformerDecoder``, then the 1x1 head conv, on channels-last maps: logits (B, K, H/4, W/4).

    The same function of the same parameters as ``head(decoder(features))`` up to float rounding, computed in
    a cheaper order: the fuse conv's weight is split into its per-stage blocks and each block is applied
    before the bilinear resize instead of after the concatenation (both are linear, one over channels and
    one over space, so they commute). No 4x256-channel map at 1/4 resolution is formed, stage 1 is not
    resized to its own size, and every 1x1 map is a matmul over the channels of a (B, h, w, C) view
    (PyTorch's 1x1 convolution takes a slow path on one CPU thread with batches under 16).
    """
    size = tuple(dim // 4 for dim in features[0].shape[-2:])
    stages = features[2:] if features[1].shape[1] == 0 else features[1:]
    conv, norm, relu = decoder.fuse_stage
    blocks = conv.weight.flatten(1).chunk(len(decoder.mlp_stage), dim=1)  # one per stage, deepest first
    fused = 0
    for mlp, block, feature in zip(decoder.mlp_stage, blocks, stages[::-1], strict=True):
        mapped = F.linear(mlp.linear(feature.permute(0, 2, 3, 1)), block).permute(0, 3, 1, 2)
        if mapped.shape[-2:] != size:
            mapped = F.interpolate(mapped, size=size, mode="bilinear", align_corners=False)
        fused = fused + mapped
    fused = relu(norm(fused if conv.bias is None else fused + conv.bias[:, None, None]))
    logits = F.linear(fused.permute(0, 2, 3, 1), head.weight.flatten(1), head.bias)
    return logits.permute(0, 3, 1, 2).contiguous()


class SegFormerWithAttention(nn.Module):
    """smp SegFormer whose forward can also return A_1..A_4, the stage-wise averaged MiT attention.

    ``last_stage_stride`` 1 keeps stage 4 at 1/16 like the official SASFormer (strides [4, 2, 2, 1]);
    2 is the standard SegFormer (1/32). The input is padded to a multiple of 32 and the logits cropped back.
    """

    pad_multiple = 32

    def __init__(
        self, encoder: str = "mit_b0", in_channels: int = 3, classes: int = 21,
        encoder_weights: str | None = None, last_stage_stride: int = 1,
    ) -> None:
        super().__init__()
        if not encoder.startswith("mit_"):
            raise ValueError(f"SegFormerWithAttention needs a MiT encoder (mit_b0 ... mit_b5): {encoder!r}")
        if last_stage_stride not in (1, 2):
            raise ValueError(f"last_stage_stride must be 1 or 2, got {last_stage_stride}")
        self.model = create_segmenter("segformer", encoder, in_channels, classes, encoder_weights)
        self.model.encoder.patch_embed4.proj.stride = (last_stage_stride, last_stage_stride)
        self.stages = mit_attention_modules(self.model.encoder)
        for module in (module for stage in self.stages for module in stage):
            module.__class__ = MiTAttention  # same parameters, faster forward

    def load_official_encoder(self, weights: str | os.PathLike | Mapping) -> LoadReport | None:
        """Load official MiT weights (a file or snapshot folder, or a state dict in memory; see
        :func:`official_mit_state_dict`) into the encoder, strictly; the encoder keeps the report."""
        report = load_converted(
            self.model.encoder, weights, official_mit_state_dict, "this SegFormer's MiT encoder",
            fix="Pass official MiT weights of this encoder's size (mit_b0 ... mit_b5, as the backbone).",
        )
        if report is not None:
            self.model.encoder.weights_report = report
        return report

    def forward(self, images: Tensor, with_attention: bool = False) -> SegmenterOutput:
        """Logits (B, C, H, W), decoder logits at 1/4 of the padded input, and A_l when ``with_attention``."""
        h, w = images.shape[-2:]
        padded = pad_to_multiple(images, self.pad_multiple)
        modules = [module for stage in self.stages for module in stage]
        for module in modules:
            module.fused_attn = not with_attention
        capture = AttentionCapture(modules) if with_attention else None
        try:
            features = self.model.encoder(padded)
        finally:
            if capture is not None:
                capture.remove()
        # the head's 1x1 conv at the decoder's 1/4 ([1] is smp's x4 upsampling, see SegmenterOutput.logits)
        decoder_logits = decode_channels_last(self.model.decoder, self.model.segmentation_head[0], features)
        levels = [] if capture is None else self._levels(capture.maps, features[2:])
        return SegmenterOutput(decoder_logits, levels, tuple(padded.shape[-2:]), (h, w))

    def _levels(self, maps: list[Tensor], stage_features: list[Tensor]) -> list[AttentionLevel]:
        levels, start = [], 0
        for stage, feature in zip(self.stages, stage_features, strict=True):
            stage_maps, start = maps[start:start + len(stage)], start + len(stage)
            hq, wq = feature.shape[-2:]
            sr = stage[0].sr_ratio
            key_size = (hq // sr, wq // sr)
            attention = average_attention(stage_maps)
            if attention.shape[-2:] != (hq * wq, key_size[0] * key_size[1]):
                raise ValueError(f"MiT attention of shape {tuple(attention.shape)} does not match the query "
                                 f"grid {(hq, wq)} and key grid {key_size}")
            levels.append(AttentionLevel(attention, (hq, wq), key_size))
        return levels


class ViTSegmenter(nn.Module):
    """A timm ViT with a linear per-patch classifier; levels are ``num_levels`` consecutive block groups."""

    def __init__(
        self, backbone: str = "vit_small_patch16_224", in_channels: int = 3, classes: int = 21,
        weights: str | None = None, num_levels: int = 4, **backbone_kwargs,
    ) -> None:
        super().__init__()
        self.vit = create_timm_model(backbone, weights, in_chans=in_channels, num_classes=0,
                                     dynamic_img_size=True, **backbone_kwargs)
        if not hasattr(self.vit, "blocks") or not hasattr(self.vit, "num_prefix_tokens"):
            raise ValueError(f"{backbone!r} is not a timm VisionTransformer (no blocks / prefix tokens)")
        depth = len(self.vit.blocks)
        if not 1 <= num_levels <= depth:
            raise ValueError(f"num_levels must be in [1, {depth}] for {backbone!r} with {depth} blocks")
        self.groups = [g.tolist() for g in torch.arange(depth).tensor_split(num_levels)]
        self.patch = self.vit.patch_embed.patch_size[0]
        self.head = nn.Linear(self.vit.num_features, classes)

    def forward(self, images: Tensor, with_attention: bool = False) -> SegmenterOutput:
        """Logits (B, C, H, W), per-patch logits, and one A_l per block group when ``with_attention``."""
        h, w = images.shape[-2:]
        padded = pad_to_multiple(images, self.patch)
        grid = (padded.shape[-2] // self.patch, padded.shape[-1] // self.patch)
        capture = AttentionCapture(vit_attention_modules(self.vit)) if with_attention else None
        try:
            tokens = self.vit.forward_features(padded)[:, self.vit.num_prefix_tokens:]
        finally:
            if capture is not None:
                capture.remove()
        decoder_logits = self.head(tokens).transpose(1, 2).reshape(images.shape[0], -1, *grid)
        levels = [] if capture is None else [
            AttentionLevel(average_attention([capture.maps[i] for i in group], self.vit.num_prefix_tokens),
                           grid, grid)
            for group in self.groups
        ]
        return SegmenterOutput(decoder_logits, levels, tuple(padded.shape[-2:]), (h, w))


def create_attention_segmenter(
    backbone: str, in_channels: int, classes: int, weights: str | None = None, last_stage_stride: int = 1,
    vit_levels: int = 4, backbone_kwargs: dict | None = None,
) -> SegFormerWithAttention | ViTSegmenter:
    """SegFormer for ``mit_b*`` names, else a timm ViT segmenter (``backbone_kwargs`` go to timm)."""
    if backbone.startswith("mit_"):
        if backbone_kwargs:
            raise ValueError(f"backbone_kwargs apply to timm ViTs only, got {backbone_kwargs} for {backbone}")
        return SegFormerWithAttention(backbone, in_channels, classes, weights, last_stage_stride)
    return ViTSegmenter(backbone, in_channels, classes, weights, vit_levels, **(backbone_kwargs or {}))
