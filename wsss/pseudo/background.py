"""Background rules that turn class activation maps into label masks (methods.md §6, "Seed scoring").

Three conventions coexist in the literature, and all of them first zero the maps of classes absent from the
image labels:

- a constant background score (IRN/CRT: 0.15 on max-normalised CAMs; MCTformer sweeps it on min–max normalised
  CAMs): :func:`scores_with_background` / :func:`cams_to_mask`;
- a learned background channel (SIPE, SWTformer): :func:`cams_with_bg_to_mask`;
- per-class normalisation before either rule: :func:`normalize_cams`.

CAMs are (B, K, H, W) with K foreground classes; masks are int64 (B, H, W) with 0 = background and k + 1 for
the k-th foreground class. A class counts as present where ``cls_labels > 0.5``.
"""

from typing import Literal

import torch
from torch import Tensor


def _check_cams(name: str, cams: Tensor, cls_labels: Tensor | None, channels_offset: int = 0) -> None:
    if cams.ndim != 4 or not cams.is_floating_point():
        raise ValueError(
            f"{name}: expected float maps of shape (B, C, H, W), got {cams.dtype} {tuple(cams.shape)}"
        )
    if cls_labels is not None:
        expected = (cams.shape[0], cams.shape[1] - channels_offset)
        if tuple(cls_labels.shape) != expected:
            raise ValueError(
                f"{name}: cls_labels must have shape {expected} to match the maps "
                f"{tuple(cams.shape)}, got {tuple(cls_labels.shape)}"
            )


def normalize_cams(cams: Tensor, mode: Literal["max", "minmax"] = "max") -> Tensor:
    """Normalise each map of (..., H, W) to [0, 1] alone: ``max`` as IRN, ``minmax`` as MCTformer/TS-CAM.

    ``max`` clamps negatives to 0 and divides by the map's maximum; ``minmax`` maps [min, max] to [0, 1]. Maps
    that are all zero (``max``) or constant (``minmax``) become all zero instead of NaN.
    """
    if cams.ndim < 2 or not cams.is_floating_point():
        raise ValueError(
            f"normalize_cams: expected float maps (..., H, W), got {cams.dtype} {tuple(cams.shape)}"
        )
    tiny = torch.finfo(cams.dtype).tiny
    if mode == "max":
        cams = cams.clamp_min(0)
        return cams / cams.amax(dim=(-2, -1), keepdim=True).clamp_min(tiny)
    if mode == "minmax":
        low = cams.amin(dim=(-2, -1), keepdim=True)
        high = cams.amax(dim=(-2, -1), keepdim=True)
        return (cams - low) / (high - low).clamp_min(tiny)
    raise ValueError(f"normalize_cams: mode must be 'max' or 'minmax', got {mode!r}")


def keep_present_classes(cams: Tensor, cls_labels: Tensor) -> Tensor:
    """Zero the maps (B, K, H, W) of the classes that ``cls_labels`` (B, K) marks absent."""
    _check_cams("keep_present_classes", cams, cls_labels)
    return cams * (cls_labels > 0.5).to(cams.dtype)[:, :, None, None]


def scores_with_background(
    cams: Tensor, cls_labels: Tensor | None = None, *, bg_threshold: float = 0.15, power: float = 1.0
) -> Tensor:
    """Scores (B, K+1, H, W): a constant background score ``bg_threshold`` stacked before ``cams ** power``.

    CAMs of classes absent from ``cls_labels`` are zeroed first (every WSSS repo multiplies by the image
    labels). ``power`` > 1 sharpens the maps (SIPE raises its IS-CAMs to 1.5 before the random walk).
    """
    _check_cams("scores_with_background", cams, cls_labels)
    if power <= 0:
        raise ValueError(f"scores_with_background: power must be positive, got {power}")
    if cls_labels is not None:
        cams = keep_present_classes(cams, cls_labels)
    if power != 1.0:
        cams = cams.clamp_min(0) ** power
    background = torch.full_like(cams[:, :1], bg_threshold)
    return torch.cat([background, cams], dim=1)


def cams_to_mask(
    cams: Tensor, cls_labels: Tensor | None = None, *, bg_threshold: float = 0.15, power: float = 1.0
) -> Tensor:
    """Label mask (B, H, W): argmax over [constant background score, CAMs] (IRN/CRT, MCTformer).

    A pixel is background unless some present class scores strictly above ``bg_threshold`` (ties go to the
    background, as ``argmax`` returns the first maximum).
    """
    return scores_with_background(cams, cls_labels, bg_threshold=bg_threshold, power=power).argmax(dim=1)


def cams_with_bg_to_mask(scores: Tensor, cls_labels: Tensor | None = None) -> Tensor:
    """Label mask (B, H, W) by argmax over maps with a learned background channel first (SIPE/SWTformer).

    ``scores`` is (B, K+1, H, W); the foreground channels of classes absent from ``cls_labels`` (B, K) can
    never win, the background channel always can.
    """
    _check_cams("cams_with_bg_to_mask", scores, cls_labels, channels_offset=1)
    if cls_labels is None:
        return scores.argmax(dim=1)
    present = torch.cat([torch.ones_like(cls_labels[:, :1], dtype=torch.bool), cls_labels > 0.5], dim=1)
    return scores.masked_fill(~present[:, :, None, None], float("-inf")).argmax(dim=1)
