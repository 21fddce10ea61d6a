"""AffinityNet (PSA: Ahn & Kwak, CVPR 2018; labels as in IRN: Ahn, Cho & Kwak, CVPR 2019): head, labels, loss.

Pipeline: confident seed labels from CAMs (:func:`seed_labels`, optionally CRF-refined by the caller, then
:func:`confident_labels`), pairwise labels within a radius (:func:`affinity_labels`), an embedding head over
backbone features (:class:`AffinityHead`), neighbour affinities (:func:`neighbour_affinity`) trained with
:func:`affinity_loss`, and the dense (B, N, N) affinity (:func:`dense_affinity`) that
:class:`wsss.pseudo.affinity.AffinityRandomWalk` walks on.

Affinity: PSA's paper writes W_ij = exp(−‖f_i − f_j‖₁); its code (and this module) uses the mean over the D
embedding channels, exp(−‖f_i − f_j‖₁ / D).

Pairs: the neighbour offsets (dy, dx) with dy > 0, or dy = 0 and dx > 0, and dy² + dx² < radius² (PSA's
``get_indices_of_pairs``): every unordered pair of pixels closer than ``radius`` appears once (34 offsets for
radius 5). PSA works at 1/8 of the image with radius 5; IRN's random walk uses radius 5 at 1/4.
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = 255


class AffinityLabels(NamedTuple):
    """Pairwise labels (B, P, H, W) for the P neighbour offsets of every pixel: 1 where the pair belongs."""

    bg_pos: Tensor
    fg_pos: Tensor
    neg: Tensor


def neighbour_offsets(radius: int) -> list[tuple[int, int]]:
    """The offsets (dy, dx) of the forward half-neighbourhood dy² + dx² < radius² (PSA's pair set)."""
    if radius < 2:
        raise ValueError(f"neighbour_offsets: radius must be >= 2 to hold a neighbour, got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [
        (dy, dx)
        for dy in range(1, radius)
        for dx in range(-radius + 1, radius)
        if dy * dy + dx * dx < radius * radius
    ]
    return offsets


def seed_labels(cams: Tensor, bg_score: float) -> Tensor:
    """Argmax labels (B, H, W) of CAMs (B, K, H, W) behind a constant background ``bg_score`` (ties: bg).

    IRN's confident foreground uses ``bg_score`` = conf_fg (0.30; CRT 0.35), its confident background
    conf_bg (0.05; CRT 0.15). IRN refines both maps with the label CRF (``DenseCRF(preset="irn")``) before
    :func:`confident_labels`.
    """
    if cams.ndim != 4 or not cams.is_floating_point():
        raise ValueError(
            f"seed_labels: cams must be float (B, K, H, W), got {cams.dtype} {tuple(cams.shape)}"
        )
    return torch.cat([torch.full_like(cams[:, :1], bg_score), cams], dim=1).argmax(dim=1)


def confident_labels(seed_fg: Tensor, seed_bg: Tensor) -> Tensor:
    """IRN's label map (B, H, W): the class of ``seed_fg`` where it is foreground, 0 where both seeds are
    background, 255 (unsure) elsewhere."""
    if seed_fg.shape != seed_bg.shape or seed_fg.ndim != 3:
        raise ValueError(
            f"confident_labels: seed maps must both be (B, H, W), got {tuple(seed_fg.shape)} and "
            f"{tuple(seed_bg.shape)}"
        )
    labels = seed_fg.clone()
    labels[seed_fg == 0] = IGNORE_INDEX
    labels[(seed_fg == 0) & (seed_bg == 0)] = 0
    return labels


def affinity_labels(labels: Tensor, radius: int = 5) -> AffinityLabels:
    """PSA/IRN pairwise labels of a label map (B, H, W) with 255 = unsure, for :func:`neighbour_offsets`.

    bg_pos: both ends background; fg_pos: both ends the same foreground class; neg: both ends confident and
    different. Pairs with an unsure end or leaving the image are in none of the three.
    """
    if labels.ndim != 3 or labels.is_floating_point():
        raise ValueError(
            f"affinity_labels: labels must be an integer (B, H, W) map, got {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    height, width = labels.shape[-2:]
    pad = radius - 1
    padded = F.pad(labels, (pad, pad, 0, pad), value=IGNORE_INDEX)
    source = labels[:, None]
    target = torch.stack(
        [padded[:, dy : dy + height, pad + dx : pad + dx + width] for dy, dx in neighbour_offsets(radius)],
        dim=1,
    )
    valid = (source != IGNORE_INDEX) & (target != IGNORE_INDEX)
    same = (source == target) & valid
    return AffinityLabels(
        bg_pos=(same & (source == 0)).float(),
        fg_pos=(same & (source != 0)).float(),
        neg=(~same & valid).float(),
    )


def neighbour_affinity(embedding: Tensor, radius: int = 5) -> Tensor:
    """Affinities exp(−mean_c |f_i − f_j|) (B, P, H, W) to the :func:`neighbour_offsets`, 0 off the image."""
    height, width = embedding.shape[-2:]
    pad = radius - 1
    padded = F.pad(embedding, (pad, pad, 0, pad))
    inside = F.pad(torch.ones_like(embedding[:1, :1]), (pad, pad, 0, pad))
    affinities = []
    for dy, dx in neighbour_offsets(radius):
        window = (..., slice(dy, dy + height), slice(pad + dx, pad + dx + width))
        distance = (padded[window] - embedding).abs().mean(dim=1)
        affinities.append(torch.exp(-distance) * inside[window][:, 0])
    return torch.stack(affinities, dim=1)


def dense_affinity(embedding: Tensor, radius: int | None = 5) -> Tensor:
    """Dense affinity (B, N, N), N = h·w in row-major order, exp(−mean_c |f_i − f_j|) between pixels closer
    than ``radius`` (all pairs when None); the diagonal is 1. PSA's random walk uses radius 5."""
    if embedding.ndim != 4:
        raise ValueError(f"dense_affinity: embedding must be (B, D, h, w), got {tuple(embedding.shape)}")
    height, width = embedding.shape[-2:]
    flat = embedding.flatten(2).transpose(1, 2)
    affinity = torch.exp(-torch.cdist(flat, flat, p=1) / embedding.shape[1])
    if radius is None:
        return affinity
    ys, xs = torch.meshgrid(
        torch.arange(height, device=embedding.device),
        torch.arange(width, device=embedding.device),
        indexing="ij",
    )
    coords = torch.stack([ys.flatten(), xs.flatten()], dim=1)
    near = (coords[:, None] - coords[None]).square().sum(-1) < radius * radius
    return affinity * near


def affinity_loss(affinity: Tensor, labels: AffinityLabels, eps: float = 1e-5) -> Tensor:
    """PSA's AffinityNet loss L = L⁺_bg/4 + L⁺_fg/4 + L⁻/2 (Sec. 3.2: L⁺_fg + L⁺_bg + 2L⁻, code's scale).

    L⁺ = −Σ log(W + eps) / (|P⁺| + eps) over the positive pairs of each kind, L⁻ = −Σ log(1 + eps − W) /
    (|P⁻| + eps) over the negative pairs; sums run over the whole batch.
    """
    if affinity.shape != labels.neg.shape:
        raise ValueError(
            f"affinity_loss: affinity {tuple(affinity.shape)} and labels {tuple(labels.neg.shape)} "
            "must have the same shape"
        )
    positive = -torch.log(affinity + eps)
    bg_loss = (labels.bg_pos * positive).sum() / (labels.bg_pos.sum() + eps)
    fg_loss = (labels.fg_pos * positive).sum() / (labels.fg_pos.sum() + eps)
    neg_loss = (labels.neg * -torch.log(1 + eps - affinity)).sum() / (labels.neg.sum() + eps)
    return bg_loss / 4 + fg_loss / 4 + neg_loss / 2


class AffinityHead(nn.Module):
    """PSA's affinity head: per map a 1×1 conv + ELU, resize to the first map's grid, concat, 1×1 conv + ELU.

    PSA reduces ResNet-38's 512-, 1024- and 4096-channel maps at stride 8 to 64, 128 and 256 channels and
    mixes the 448 with a final 1×1 conv (Kaiming init for the reductions, Xavier with gain 4 for the mix).
    ``reduced_channels`` defaults to 64·2^i for the i-th map, ``embed_dim`` to their sum.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        reduced_channels: Sequence[int] | None = None,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        reduced = list(reduced_channels or [64 * 2**i for i in range(len(in_channels))])
        if not in_channels or len(reduced) != len(in_channels):
            raise ValueError(
                f"AffinityHead: need one reduced width per input map, got in_channels={in_channels} "
                f"and reduced_channels={reduced_channels}"
            )
        self.in_channels = list(in_channels)
        self.reductions = nn.ModuleList(
            nn.Conv2d(c, r, 1, bias=False) for c, r in zip(in_channels, reduced, strict=True)
        )
        self.mix = nn.Conv2d(sum(reduced), embed_dim or sum(reduced), 1, bias=False)
        for conv in self.reductions:
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.mix.weight, gain=4)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Embedding (B, D, h, w) on the grid of ``features[0]`` from maps with ``in_channels`` channels."""
        channels = [f.shape[1] for f in features]
        if channels != self.in_channels:
            raise ValueError(f"AffinityHead: expected maps with {self.in_channels} channels, got {channels}")
        size = features[0].shape[-2:]
        reduced = [F.elu(conv(f)) for conv, f in zip(self.reductions, features, strict=True)]
        reduced = [
            r if r.shape[-2:] == size else F.interpolate(r, size=size, mode="bilinear", align_corners=False)
            for r in reduced
        ]
        return F.elu(self.mix(torch.cat(reduced, dim=1)))
