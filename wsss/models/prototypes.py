"""Background-aware prototype exploration of SWTformer-V2 (Ahmadi & Kasaei, Sec. 3-5), adapted from SIPE.

Maps with a background channel are (B, C+1, h, w) with the background first; ``valid`` (B, C+1) is True for
the background and the classes present in the image.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

BackgroundOver = Literal["all", "present"]
Similarity = Literal["abs", "relu"]


def valid_channels(cls_labels: Tensor) -> Tensor:
    """(B, C+1) boolean: the background (always) and the classes that ``cls_labels`` (B, C) marks present."""
    return torch.cat([torch.ones_like(cls_labels[:, :1], dtype=torch.bool), cls_labels > 0.5], dim=1)


def with_background(cams: Tensor, cls_labels: Tensor, over: BackgroundOver = "all") -> Tensor:
    """Eq. 3: M_B = 1 - max_c M_c, stacked before the label-gated CAMs: (B, C+1, h, w).

    ``over="all"`` (eq. 3 and SIPE): the max runs over every class before the gating, so absent classes shape
    M_B (and get GSC gradients through it) although their own channels are zeroed. ``"present"``: the max
    over the present classes only (wsss before the parity fixture; a switch, not SIPE's behaviour).
    """
    if cams.ndim != 4 or cls_labels.shape != cams.shape[:2]:
        raise ValueError(f"with_background: cams (B, C, h, w) and cls_labels (B, C) do not match: "
                         f"{tuple(cams.shape)} vs {tuple(cls_labels.shape)}")
    if over not in ("all", "present"):
        raise ValueError(f"with_background: over must be 'all' or 'present', got {over!r}")
    gated = cams * (cls_labels > 0.5).to(cams.dtype)[:, :, None, None]
    return torch.cat([1.0 - (cams if over == "all" else gated).amax(1, keepdim=True), gated], dim=1)


def structural_similarity(tokens: Tensor, mode: Similarity = "abs") -> Tensor:
    """Eq. 4: S = |cos(T_out, T_out)| (B, N, N) of the tokens (B, D, h, w); ``"relu"``: SIPE's ReLU(cos)."""
    if mode not in ("abs", "relu"):
        raise ValueError(f"structural_similarity: mode must be 'abs' or 'relu', got {mode!r}")
    flat = F.normalize(tokens.flatten(2), dim=1)
    cosine = flat.transpose(1, 2) @ flat
    return cosine.abs() if mode == "abs" else cosine.relu()


def structural_overlap(cams_bg: Tensor, similarity: Tensor) -> Tensor:
    """SIPE's soft IoU (B, C+1, N) between each token's structure S_i. and each class map M_k.

    IoU_k(i) = sum_j S_ij M_k(j) / (sum_j S_ij + sum_j M_k(j) - sum_j S_ij M_k(j)).
    """
    maps = cams_bg.flatten(2)
    inter = torch.einsum("bij,bkj->bki", similarity, maps)
    union = similarity.sum(-1)[:, None, :] + maps.sum(-1)[:, :, None] - inter
    return inter / union.clamp_min(1e-5)


def locate_seeds(
    cams_bg: Tensor, tokens: Tensor, valid: Tensor, bg_scale: float = 0.5, similarity: Similarity = "abs"
) -> Tensor:
    """Structure-aware seed locating: each token gets the valid class of greatest structural overlap.

    Returns one-hot seeds R (B, C+1, h, w). As in SIPE, the background overlap is scaled by ``bg_scale``
    (0.5); unlike SIPE, absent classes are excluded before the argmax instead of zeroing their seeds after it,
    so every token gets a seed (the same seeds wherever the absent channels of ``cams_bg`` are zero, as in
    training). ``similarity`` is eq. 4's ``"abs"`` or SIPE's ``"relu"``. ``tokens`` (B, D, h, w) must share
    the maps' grid.
    """
    if cams_bg.shape[0] != tokens.shape[0] or cams_bg.shape[-2:] != tokens.shape[-2:]:
        raise ValueError(f"locate_seeds: maps {tuple(cams_bg.shape)} and tokens {tuple(tokens.shape)} "
                         "must share batch and grid")
    overlap = structural_overlap(cams_bg, structural_similarity(tokens, similarity))
    overlap = torch.cat([overlap[:, :1] * bg_scale, overlap[:, 1:]], dim=1)
    overlap = overlap.masked_fill(~valid[:, :, None], float("-inf"))
    seeds = F.one_hot(overlap.argmax(1), cams_bg.shape[1]).transpose(1, 2).to(cams_bg.dtype)
    return seeds.reshape(cams_bg.shape)


def class_prototypes(features: Tensor, seeds: Tensor) -> Tensor:
    """Prototypes P (B, C+1, D): the seed-weighted mean feature of each class (0 for a class with no seed).

    SIPE divides the seed-weighted sum by all h*w positions instead of the seed count: the same direction,
    so R-CAM (a cosine) is unchanged; wsss's prototype is SIPE's times h*w / count.
    """
    if features.shape[0] != seeds.shape[0] or features.shape[-2:] != seeds.shape[-2:]:
        raise ValueError(f"class_prototypes: features {tuple(features.shape)} and seeds {tuple(seeds.shape)} "
                         "must share batch and grid")
    weights = seeds.flatten(2)
    total = torch.einsum("bkn,bdn->bkd", weights, features.flatten(2))
    return total / weights.sum(-1, keepdim=True).clamp_min(1e-5)


def similarity_cams(features: Tensor, prototypes: Tensor) -> Tensor:
    """IS-CAM (B, C+1, h, w): ReLU(cos(F_hie, P_k)), unnormalised (SIPE's ``reactivate``)."""
    flat = F.normalize(features.flatten(2), dim=1)
    maps = torch.relu(torch.einsum("bkd,bdn->bkn", F.normalize(prototypes, dim=-1), flat))
    return maps.reshape(*prototypes.shape[:2], *features.shape[-2:])


def prototype_cams(features: Tensor, prototypes: Tensor) -> Tensor:
    """R-CAM (B, C+1, h, w): the IS-CAM ReLU(cos(F_hie, P_k)) / (its spatial max + 1e-5), per class (SIPE)."""
    maps = similarity_cams(features, prototypes)
    return maps / (maps.amax((-2, -1), keepdim=True) + 1e-5)
