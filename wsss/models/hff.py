"""SWTformer-V2's Hierarchical Feature Fusion (HFF) over the four Swin stages (Ahmadi & Kasaei, Sec. 3-4)."""

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HierarchicalFeatureFusion(nn.Module):
    """F_hie from the four stage maps, concatenated in two steps (Sec. 3-4, Fig. 3).

    The paper fixes only: all four stages, bilinear up-sampling, convolutional down-sampling, two
    concatenation steps. The sizes are ours, modelled on SIPE's hierarchical feature (side convs to
    128/128/256/256 channels, 768 in all, each part L2-normalised, at the stage-3 resolution)::

        step 1:  low = cat(down_1(x1), proj_2(x2))                                  stage-2 grid
        step 2:  F_hie = cat(n(down_low(low)), n(proj_3(x3)), n(up(proj_4(x4))))    stage-3 grid

    ``down_*`` are 3x3 stride-2 convolutions (ceil halving, as Swin's padded patch merging), ``proj_*`` 1x1
    convolutions, ``up`` bilinear interpolation, ``n`` L2 normalisation over channels; no biases, as SIPE.
    """

    def __init__(self, in_channels: Sequence[int], dims: Sequence[int] = (128, 128, 256, 256)) -> None:
        super().__init__()
        if len(in_channels) != 4 or len(dims) != 4:
            raise ValueError(
                f"HierarchicalFeatureFusion: need 4 stage widths and 4 dims, got {in_channels}, {dims}")
        c1, c2, c3, c4 = in_channels
        d1, d2, d3, d4 = dims
        self.down_1 = nn.Conv2d(c1, d1, 3, stride=2, padding=1, bias=False)
        self.proj_2 = nn.Conv2d(c2, d2, 1, bias=False)
        self.down_low = nn.Conv2d(d1 + d2, d1 + d2, 3, stride=2, padding=1, bias=False)
        self.proj_3 = nn.Conv2d(c3, d3, 1, bias=False)
        self.proj_4 = nn.Conv2d(c4, d4, 1, bias=False)
        self.out_channels = sum(dims)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """F_hie (B, sum(dims), H3, W3) from stage maps x1..x4 (NCHW, each stage half the previous grid)."""
        x1, x2, x3, x4 = features
        grids = [tuple(x.shape[-2:]) for x in features]
        if any(g != ((h + 1) // 2, (w + 1) // 2) for (h, w), g in pairwise(grids)):
            raise ValueError(f"HierarchicalFeatureFusion: grids {grids} do not halve (ceil) per stage")
        low = torch.cat([self.down_1(x1), self.proj_2(x2)], dim=1)
        size = x3.shape[-2:]
        parts = [
            self.down_low(low),
            self.proj_3(x3),
            F.interpolate(self.proj_4(x4), size=size, mode="bilinear", align_corners=False),
        ]
        return torch.cat([F.normalize(p, dim=1) for p in parts], dim=1)
