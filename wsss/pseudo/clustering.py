"""Pseudo-masks from clustered attention heads (Hanna et al. 2023, sec. 4.3) and binarised Grad-CAM (5.2).

Attention: the [CLS] -> patch attention of every open head of the last layer, max-normalised and resized to
the image, is clustered by k-means over heads (k = number of classes to place); each cluster's mean map is
binarised by a 1-D 2-means on its pixel values; every binarised cluster masks the input (pixels outside set
to 0, the normalised mean) for a forward pass, and clusters get *distinct* classes by solving the
assignment problem on the classifier's probabilities, as the paper asks (the official code ranks the
clusters, then relabels every region by its own forward pass and may repeat a class:
``assignment="rank_relabel"``); the class masks are merged (uncovered pixels take the class of the nearest
covered pixel). Where foregrounds overlap, the paper is silent: by default the cluster with the higher
foreground mean takes the whole overlap, as in the official code (``overlap="cluster_mean"``);
``overlap="pixel_value"`` gives each pixel to the highest map value there. One class: the whole image.
"""

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from torch import Tensor

Classifier = Callable[[Tensor], Tensor]
OverlapRule = Literal["cluster_mean", "pixel_value"]
OVERLAP_RULES = ("cluster_mean", "pixel_value")
ClassAssignment = Literal["distinct", "rank_relabel"]
CLASS_ASSIGNMENTS = ("distinct", "rank_relabel")


def cls_attention_maps(attn: Tensor, grid: tuple[int, int], size: tuple[int, int],
                       num_prefix: int = 1) -> Tensor:
    """[CLS] -> patch rows of (heads, N, N) attention as (heads, H, W) maps, each divided by its max.

    The (gh, gw) token grid covers the image padded to a multiple of the patch size: the maps are resized to
    that padded size and cropped back to ``size``.
    """
    heads = attn.shape[0]
    if heads == 0:
        return attn.new_zeros((0, *size), dtype=torch.float32)
    rows = attn[:, 0, num_prefix:].reshape(heads, *grid).float()
    rows = rows / rows.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    patch_h, patch_w = -(-size[0] // grid[0]), -(-size[1] // grid[1])
    maps = F.interpolate(rows[None], size=(grid[0] * patch_h, grid[1] * patch_w), mode="bilinear",
                         align_corners=False)[0]
    return maps[:, : size[0], : size[1]]


def cluster_heads(maps: np.ndarray, k: int, seed: int = 24) -> np.ndarray:
    """k-means over the (n, H, W) head maps (as vectors): the (k, H, W) mean map of each cluster."""
    if not 1 <= k <= maps.shape[0]:
        raise ValueError(f"cluster_heads: k must be in 1..{maps.shape[0]} (the number of maps), got {k}")
    flat = maps.reshape(maps.shape[0], -1)
    if k == maps.shape[0]:
        return maps.copy()
    assignment = KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(flat)
    return np.stack([maps[assignment == c].mean(0) for c in range(k)])


def binarize_map(values: np.ndarray, seed: int = 21) -> np.ndarray:
    """Foreground of a map by a 1-D 2-means on its pixel values: the pixels of the higher-mean cluster."""
    if np.ptp(values) < 1e-8:
        return np.ones(values.shape, dtype=bool)
    labels = KMeans(n_clusters=2, random_state=seed, n_init=1).fit_predict(values.reshape(-1, 1))
    flat = values.ravel()
    high = int(flat[labels == 1].mean() > flat[labels == 0].mean())
    return (labels == high).reshape(values.shape)


def assign_classes(scores: np.ndarray) -> np.ndarray:
    """Distinct candidate indices, one per row of (clusters, candidates) scores, maximising their sum."""
    if scores.shape[0] > scores.shape[1]:
        raise ValueError(f"assign_classes: {scores.shape[0]} clusters cannot take distinct classes out of "
                         f"{scores.shape[1]} candidates")
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return cols[np.argsort(rows)]


def foreground_means(maps: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The mean of each (k, H, W) map over its own foreground (-inf for an empty foreground)."""
    return np.array([m[f].mean() if f.any() else -np.inf for m, f in zip(maps, foreground, strict=True)])


def merge_class_maps(maps: np.ndarray, foreground: np.ndarray, classes: Sequence[int],
                     overlap: OverlapRule = "cluster_mean") -> np.ndarray:
    """One (H, W) label mask from (k, H, W) maps, their foregrounds and their classes.

    A pixel covered by several foregrounds goes to the map with the highest mean over its own foreground
    (``"cluster_mean"``, the official rule) or with the highest value at that pixel (``"pixel_value"``); an
    uncovered pixel takes the class of the nearest covered pixel.
    """
    covered = foreground.any(0)
    if not covered.any():
        raise ValueError("merge_class_maps: no foreground pixel in any map")
    if overlap == "cluster_mean":
        winner = np.zeros(maps.shape[1:], dtype=np.int64)
        order = np.argsort(foreground_means(maps, foreground), kind="stable")
        for index in order:  # ascending: the highest mean is painted last
            winner[foreground[index]] = index
    elif overlap == "pixel_value":
        winner = np.where(foreground, maps, -np.inf).argmax(0)
    else:
        raise ValueError(f"overlap must be one of {OVERLAP_RULES}, got {overlap!r}")
    if not covered.all():
        _, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
        winner = winner[iy, ix]
    return np.asarray(classes, dtype=np.int64)[winner]


def relabel_regions(mask: np.ndarray, image: Tensor, classify: Classifier) -> np.ndarray:
    """Each label region of the (H, W) mask, alone in the input, relabelled with the classifier's top class
    (the official last step; two regions may end up with one class)."""
    labels = np.unique(mask)
    regions = np.stack([mask == label for label in labels])
    top = masked_class_scores(image, regions, classify).argmax(1) + 1
    relabelled = mask.copy()
    for region, label in zip(regions, top, strict=True):
        relabelled[region] = label
    return relabelled


@torch.no_grad()
def masked_class_scores(image: Tensor, foreground: np.ndarray, classify: Classifier) -> np.ndarray:
    """Class probabilities (k, K) of the (C, H, W) image kept only inside each (k, H, W) foreground."""
    keep = torch.from_numpy(foreground).to(image.device, image.dtype)
    return classify(image[None] * keep[:, None]).float().cpu().numpy()


def attention_pseudo_mask(
    head_maps: Tensor, image: Tensor, classes: Sequence[int], classify: Classifier, seed: int = 24,
    overlap: OverlapRule = "cluster_mean", assignment: ClassAssignment = "distinct",
) -> tuple[np.ndarray, str | None]:
    """The merged (H, W) mask (values from ``classes``) from the (heads, H, W) maps of the open heads.

    ``classes`` are the classes to place (predicted or true labels), most probable first; ``classify`` maps
    a (B, C, H, W) batch to (B, K) probabilities over class ids ``1..K`` at columns ``0..K-1``. Returns the
    mask and a note when the rule had to fall back (e.g. fewer open heads than classes). ``overlap``: see
    :func:`merge_class_maps`. ``assignment="distinct"`` (the paper: "until each cluster has been assigned
    to a different class") solves the assignment on the masked forward passes; ``"rank_relabel"`` is the
    official rule: the i-th class goes to the cluster with the i-th highest foreground mean, then every
    region of the merged mask is relabelled by :func:`relabel_regions`.
    """
    size = tuple(image.shape[-2:])
    if len(classes) == 0:
        raise ValueError("attention_pseudo_mask: no class to place")
    if len(classes) == 1:
        return np.full(size, classes[0], dtype=np.int64), None
    if head_maps.shape[0] == 0:
        note = "no open head in the last layer: whole image = top class"
        return np.full(size, classes[0], dtype=np.int64), note
    note = None
    k = len(classes)
    if head_maps.shape[0] < k:
        note = f"{head_maps.shape[0]} open head(s) for {k} classes: only {head_maps.shape[0]} cluster(s)"
        k = head_maps.shape[0]
    maps = cluster_heads(head_maps.detach().float().cpu().numpy(), k, seed)  # k-means: no gradient
    foreground = np.stack([binarize_map(m) for m in maps])
    if assignment == "distinct":
        probs = masked_class_scores(image, foreground, classify)[:, [c - 1 for c in classes]]
        chosen = [classes[i] for i in assign_classes(probs)]
        return merge_class_maps(maps, foreground, chosen, overlap), note
    if assignment != "rank_relabel":
        raise ValueError(f"assignment must be one of {CLASS_ASSIGNMENTS}, got {assignment!r}")
    ranks = np.argsort(-foreground_means(maps, foreground), kind="stable").argsort()
    mask = merge_class_maps(maps, foreground, [classes[r] for r in ranks], overlap)
    return relabel_regions(mask, image, classify), note


def cam_pseudo_mask(cams: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Grad-CAM baseline (sec. 5.2): binarise the (K, H, W) map of each class in ``classes`` and merge them.

    ``cams[c - 1]`` is the map of class id ``c``; one class takes the whole image; on overlaps the highest
    CAM value wins (the baseline has no official code).
    """
    if len(classes) == 0:
        raise ValueError("cam_pseudo_mask: no class to place")
    if len(classes) == 1:
        return np.full(cams.shape[-2:], classes[0], dtype=np.int64)
    maps = cams[[c - 1 for c in classes]]
    foreground = np.stack([binarize_map(m) for m in maps])
    return merge_class_maps(maps, foreground, classes, overlap="pixel_value")
