"""CRT's overlapping cutting-merging (Huo et al. 2023, "Enhancements for Transformer branch") on tensors.

An image is padded at the bottom/right, cut into square tiles of a model's native size with a stride of half a
tile, the tiles are stacked along the batch (tile-major: all images' first tile, then all second tiles, ...),
and the per-tile maps are merged back by summing them at their places and dividing by the number of tiles
that cover each position. ``torch.Tensor.unfold`` cuts and ``torch.nn.functional.fold`` merges.

Padding is to the smallest size that holds the image and is covered exactly by tiles (at least one tile):
``tile + k * stride``. The paper's text says "a multiple of 224", but its tile counts (448 px: 9 tiles,
672 px: 25) are those of this rule, which wsss therefore follows. The official code pads to
``max((h // 112 + 1) * 112, 224)``, which adds an extra half tile when ``h`` is already a multiple of 112
(448 px: 16 tiles); ``extra_half_tile=True`` reproduces it.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def tiles_along(size: int, tile: int, stride: int, extra_half_tile: bool = False) -> int:
    """Number of tiles that cover ``size`` pixels after padding (tile + (n - 1) * stride >= size).

    ``extra_half_tile``: the official rule, padding to ``max((size // stride + 1) * stride, tile)``.
    """
    if tile <= 0 or stride <= 0 or stride > tile or (extra_half_tile and tile % stride):
        raise ValueError(
            f"tiles_along: need 0 < stride <= tile (stride dividing tile for extra_half_tile), got "
            f"tile={tile}, stride={stride}"
        )
    if extra_half_tile:
        return 1 + (max((size // stride + 1) * stride, tile) - tile) // stride
    return 1 + max(0, math.ceil((size - tile) / stride))


def pad_for_tiles(images: Tensor, tile: int, stride: int, extra_half_tile: bool = False) -> Tensor:
    """Zero-pad (B, C, H, W) at the bottom/right to ``tile + (n - 1) * stride`` on each side (n from
    :func:`tiles_along`)."""
    h, w = images.shape[-2:]
    padded_h = tile + (tiles_along(h, tile, stride, extra_half_tile) - 1) * stride
    padded_w = tile + (tiles_along(w, tile, stride, extra_half_tile) - 1) * stride
    return F.pad(images, (0, padded_w - w, 0, padded_h - h))


def cut_tiles(images: Tensor, tile: int, stride: int) -> tuple[Tensor, tuple[int, int]]:
    """Cut a padded (B, C, H, W) batch into (n_h * n_w * B, C, tile, tile) tiles, tile-major, and the grid.

    H and W must be ``tile + k * stride`` (see :func:`pad_for_tiles`).
    """
    c, h, w = images.shape[1:]
    if (h - tile) % stride or (w - tile) % stride or h < tile or w < tile:
        raise ValueError(
            f"cut_tiles: size {h}x{w} is not tile + k * stride for tile={tile}, stride={stride}; "
            "pad it with pad_for_tiles first"
        )
    tiles = images.unfold(2, tile, stride).unfold(3, tile, stride)  # (B, C, n_h, n_w, tile, tile)
    grid = (tiles.shape[2], tiles.shape[3])
    return tiles.permute(2, 3, 0, 1, 4, 5).reshape(-1, c, tile, tile), grid


def _fold(tiles: Tensor, batch: int, grid: tuple[int, int], stride: int) -> Tensor:
    """Sum (n_h * n_w * B, C, t, t) tiles at their places into (B, C, H, W)."""
    n, c, t, _ = tiles.shape
    if n != grid[0] * grid[1] * batch:
        raise ValueError(f"merge_tiles: {n} tiles do not match a {grid[0]}x{grid[1]} grid of {batch} images")
    columns = tiles.reshape(grid[0] * grid[1], batch, c * t * t).permute(1, 2, 0)
    size = (t + (grid[0] - 1) * stride, t + (grid[1] - 1) * stride)
    return F.fold(columns, size, kernel_size=t, stride=stride)


def overlap_counts(grid: tuple[int, int], tile: int, stride: int) -> Tensor:
    """How many tiles of a ``grid`` cover each position of the merged (H, W) map."""
    ones = torch.ones(grid[0] * grid[1], 1, tile, tile)
    return _fold(ones, 1, grid, stride)[0, 0]


def merge_tiles(tiles: Tensor, batch: int, grid: tuple[int, int], stride: int) -> Tensor:
    """Merge tile-major (n_h * n_w * B, C, t, t) maps into (B, C, H, W), averaging overlaps by their count."""
    counts = overlap_counts(grid, tiles.shape[-1], stride).to(tiles)
    return _fold(tiles, batch, grid, stride) / counts
