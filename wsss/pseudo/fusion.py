"""Multi-scale + flip CAM fusion: sum the raw per-view maps at the image size, then normalise once.

The official codes differ only in where a flipped view's map is flipped back, in the size each map is
resized to before the sum, and in the normalisation (methods.md §3d, §5d; SIPE ``make_cam.py``):

- MCTformer (``engine.py:generate_attention_maps_ms``): resize each view to the image size, flip back *after*
  resizing, sum, then per class (S − min) / (max − min + 1e-8): ``flip_back="image"``, ``stride=1``,
  ``norm="minmax"``.
- IRN / CRT (``step/make_cam.py``): flip back *at CAM resolution*, resize each scale to
  (s·⌈H/s⌉, s·⌈W/s⌉) with s = 16, sum, crop the top-left H × W, then S / (max + 1e-5): ``flip_back="cam"``,
  ``stride=16``, ``norm="max"``.
- SIPE (``make_cam.py``): resize each scale's IS-CAM to the image size, sum, S / (max + 1e-5): ``stride=1``,
  ``norm="max"`` (the flip pair is fused inside the network, see ``SWTformer.scale_views``).
"""

from collections.abc import Iterable
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

FlipBack = Literal["image", "cam"]
FusionNorm = Literal["max", "minmax"]

#: The additive eps of each official normalisation: IRN / CRT / SIPE divide by max + 1e-5, MCTformer by
#: max − min + 1e-8.
FUSION_EPS = {"max": 1e-5, "minmax": 1e-8}


def check_fusion(flip_back: str, stride: int, norm: str) -> None:
    """Raise a one-line error for a fusion setting that does not exist."""
    if flip_back not in ("image", "cam"):
        raise ValueError(f"fusion_flip_back must be 'image' or 'cam', got {flip_back!r}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"fusion_stride must be a positive int, got {stride!r}")
    if norm not in FUSION_EPS:
        raise ValueError(f"fusion_norm must be 'max' or 'minmax', got {norm!r}")


def sum_views(views: Iterable[tuple[Tensor, bool]], size: tuple[int, int], stride: int = 1) -> Tensor:
    """Sum view maps (B, C, h_i, w_i) resized bilinearly to (stride·⌈H/stride⌉, stride·⌈W/stride⌉).

    A view marked True is flipped horizontally after that resize. The sum is cropped to its top-left
    ``size`` = (H, W) (a no-op for ``stride=1``).
    """
    height, width = size
    padded = (-(-height // stride) * stride, -(-width // stride) * stride)
    total = None
    for cam, flip_after in views:
        cam = F.interpolate(cam, size=padded, mode="bilinear", align_corners=False)
        cam = cam.flip(-1) if flip_after else cam
        total = cam if total is None else total + cam
    if total is None:
        raise ValueError("sum_views: no views to fuse (cam_scales is empty)")
    return total[..., :height, :width]


def normalize_fused(total: Tensor, norm: FusionNorm = "max") -> Tensor:
    """Per-channel S / (max + 1e-5) (``"max"``) or (S − min) / (max − min + 1e-8) (``"minmax"``)."""
    high = total.amax((-2, -1), keepdim=True)
    if norm == "max":
        return total / (high + FUSION_EPS["max"])
    if norm == "minmax":
        low = total.amin((-2, -1), keepdim=True)
        return (total - low) / (high - low + FUSION_EPS["minmax"])
    raise ValueError(f"normalize_fused: norm must be 'max' or 'minmax', got {norm!r}")
