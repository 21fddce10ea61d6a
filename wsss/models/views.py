"""Bi-Trans's second view f (eq. 1, Table 2) and its inverse f⁻¹ on images, token grids and affinity matrices.

Only transforms that permute the patch tokens exactly are offered (the paper rules out scaling because it
changes the number of patches): ``hflip`` (the paper's choice), ``vflip``, ``hvflip`` (both flips) and
``rot90``. The paper does not give its rotation angle; a quarter turn (counter-clockwise, ``torch.rot90``)
is the only rotation that maps the patch grid onto itself, so that is what "rotation" means here.

Tokens are flattened row-major over the grid (h, w), as a ViT flattens them. For a transformed image the
token at flat index j of its own grid shows the original patch ``permutation[j]``; f⁻¹ therefore reorders
the transformed tokens with the inverse permutation, and on an N×N affinity it permutes rows and columns.
"""

from typing import Literal, get_args

import torch
from torch import Tensor

ViewName = Literal["hflip", "vflip", "hvflip", "rot90"]


def check_view(view: str) -> None:
    """Raise a ValueError naming the known views when ``view`` is not one of them."""
    if view not in get_args(ViewName):
        raise ValueError(f"unknown view {view!r}; choose one of {get_args(ViewName)}")


def apply_view(images: Tensor, view: ViewName) -> Tensor:
    """f: transform the last two (spatial) dimensions of ``images`` (..., H, W)."""
    check_view(view)
    if view == "hflip":
        return images.flip(-1)
    if view == "vflip":
        return images.flip(-2)
    if view == "hvflip":
        return images.flip(-2, -1)
    return torch.rot90(images, 1, dims=(-2, -1))


def invert_view(maps: Tensor, view: ViewName) -> Tensor:
    """f⁻¹ on spatial maps (..., h', w') of the transformed view: back to the original layout."""
    check_view(view)
    if view == "rot90":
        return torch.rot90(maps, -1, dims=(-2, -1))
    return apply_view(maps, view)  # flips are their own inverse


def token_order(view: ViewName, view_grid: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """Index (N,) such that ``view_tokens[..., index]`` lists the view's tokens (grid ``view_grid``) in the
    original grid order."""
    h, w = view_grid
    return invert_view(torch.arange(h * w, device=device).reshape(h, w), view).flatten()


def invert_view_tokens(tokens: Tensor, view: ViewName, grid: tuple[int, int]) -> Tensor:
    """f⁻¹ on flattened token maps (..., N) of the view (SC-CAM rows, eq. 3); ``grid``: the original's."""
    order = token_order(view, _view_grid(view, grid), tokens.device)
    _check_tokens(tokens.shape[-1], grid)
    return tokens[..., order]


def invert_view_affinity(affinity: Tensor, view: ViewName, grid: tuple[int, int]) -> Tensor:
    """f⁻¹ on affinities (..., N, N) of the view: rows and columns reordered alike (eq. 11)."""
    if affinity.shape[-1] != affinity.shape[-2]:
        raise ValueError(f"invert_view_affinity: expected (..., N, N), got {tuple(affinity.shape)}")
    order = token_order(view, _view_grid(view, grid), affinity.device)
    _check_tokens(affinity.shape[-1], grid)
    return affinity[..., order, :][..., order]


def _view_grid(view: ViewName, grid: tuple[int, int]) -> tuple[int, int]:
    """The token grid of the transformed view of an image with token grid ``grid``."""
    check_view(view)
    return (grid[1], grid[0]) if view == "rot90" else tuple(grid)


def _check_tokens(n_tokens: int, grid: tuple[int, int]) -> None:
    if n_tokens != grid[0] * grid[1]:
        raise ValueError(f"{n_tokens} tokens do not fill the grid {tuple(grid)}")
