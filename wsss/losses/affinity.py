"""SASFormer's affinity loss (paper 001, eqs. 4-7): predictions propagated through patch attention vs
themselves.

For each level l the logits are resized to the query grid (P_l) and to the key grid (P'_l) and turned into
probabilities; Y_l = A_l P'_l (eq. 4); both Y_l and P_l are softmax-normalised over classes (eqs. 5-6, a
second softmax on probabilities, as the paper writes and the official code does); the distance is averaged
over unlabeled cells only; levels are averaged (eq. 7) or summed (the official code).

Which cells of a level's grid are unlabeled the paper does not say: by default, as in the official code, the
pixel map is nearest-resized to the grid (each cell takes one pixel, its top-left one for integer ratios, so
a cell may count as unlabeled although it holds part of a click); ``cells="all"`` counts a cell as
unlabeled only when all its pixels are.
"""

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.models.segformer import AttentionLevel

AffinityDistance = Literal["l1", "l2", "kl", "ce"]
LevelReduction = Literal["mean", "sum"]
UnlabeledCellRule = Literal["nearest", "all"]
EPS = 1e-8


def class_distance(propagated: Tensor, target: Tensor, distance: AffinityDistance) -> Tensor:
    """Per-cell distance between class distributions (..., C) -> (...): the L1 of eq. 7 or a Table 5 variant.

    ``l2`` is the squared Euclidean distance, ``kl`` is KL(target || propagated) and ``ce`` is the
    cross-entropy -sum target * log propagated, with the interpolated prediction P*_l as the target.
    """
    if distance == "l1":
        return (propagated - target).abs().sum(-1)
    if distance == "l2":
        return (propagated - target).pow(2).sum(-1)
    log_propagated = propagated.clamp_min(EPS).log()
    if distance == "kl":
        return (target * (target.clamp_min(EPS).log() - log_propagated)).sum(-1)
    if distance == "ce":
        return -(target * log_propagated).sum(-1)
    raise ValueError(f"unknown affinity distance {distance!r}; expected one of l1, l2, kl, ce")


def unlabeled_cells(unlabeled: Tensor, size: tuple[int, int], rule: UnlabeledCellRule = "nearest") -> Tensor:
    """(B, H, W) 0/1 map -> (B, h*w) unlabeled cells: the nearest pixel's value (official) or, with
    ``rule="all"``, 1 only where every pixel of the cell is unlabeled (clicks never vanish)."""
    if rule == "nearest":
        return F.interpolate(unlabeled[:, None].float(), size=size, mode="nearest").flatten(1)
    if rule == "all":
        fraction = F.interpolate(unlabeled[:, None].float(), size=size, mode="area")
        return (fraction > 1 - 1e-6).float().flatten(1)
    raise ValueError(f"unknown unlabeled-cell rule {rule!r}; expected nearest or all")


def resized_probabilities(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Logits (B, C, H, W) bilinearly resized to ``size``, softmax over classes, as (B, h*w, C)."""
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits.softmax(1).flatten(2).transpose(1, 2)


def level_affinity_loss(
    logits: Tensor, level: AttentionLevel, unlabeled: Tensor, distance: AffinityDistance = "l1",
    cells: UnlabeledCellRule = "nearest",
) -> Tensor:
    """Eqs. 4-6 and eq. 7's distance for one level, averaged over the unlabeled cells of the query grid."""
    target = resized_probabilities(logits, level.query_size).softmax(-1)  # P*_l (eq. 6)
    source = resized_probabilities(logits, level.key_size)  # P'_l
    if level.attention.shape[-2:] != (target.shape[1], source.shape[1]):
        raise ValueError(f"attention of shape {tuple(level.attention.shape)} does not match query grid "
                         f"{level.query_size} and key grid {level.key_size}")
    propagated = (level.attention @ source).softmax(-1)  # Y*_l (eqs. 4-5)
    weights = unlabeled_cells(unlabeled, level.query_size, cells)
    return (class_distance(propagated, target, distance) * weights).sum() / weights.sum().clamp_min(1.0)


def affinity_loss(
    logits: Tensor, levels: Sequence[AttentionLevel], unlabeled: Tensor, distance: AffinityDistance = "l1",
    reduction: LevelReduction = "mean", cells: UnlabeledCellRule = "nearest",
) -> Tensor:
    """Eq. 7: L_aff over the given levels, their mean (paper) or sum (official code); unlabeled (B, H, W)."""
    if not levels:
        raise ValueError("affinity_loss needs at least one attention level")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown level reduction {reduction!r}; expected mean or sum")
    total = torch.stack([level_affinity_loss(logits, lv, unlabeled, distance, cells) for lv in levels]).sum()
    return total / len(levels) if reduction == "mean" else total
