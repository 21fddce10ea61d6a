"""Bi-Trans's views and f⁻¹ on images, token grids and affinities; SCC and PAC against hand computations."""

import pytest
import torch
import torch.nn.functional as F

from wsss.losses.bitrans import pac_loss, scc_loss
from wsss.models.views import apply_view, invert_view, invert_view_affinity, invert_view_tokens, token_order

VIEWS = ["hflip", "vflip", "hvflip", "rot90"]


def patch_tokens(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Per-patch mean colour (B, 3, N), row-major over the patch grid: a flip-equivariant tokeniser."""
    return F.avg_pool2d(images, patch).flatten(2)


def view_coordinates(view: str, grid: tuple[int, int]) -> list[tuple[int, int]]:
    """For every flat index of the view's grid, the (row, col) of the original patch it shows (by hand)."""
    h, w = grid
    rows = {"hflip": [[(i, w - 1 - j) for j in range(w)] for i in range(h)],
            "vflip": [[(h - 1 - i, j) for j in range(w)] for i in range(h)],
            "hvflip": [[(h - 1 - i, w - 1 - j) for j in range(w)] for i in range(h)],
            # a quarter turn counter-clockwise: the view is w x h, its (r, c) shows (c, w - 1 - r)
            "rot90": [[(c, w - 1 - r) for c in range(h)] for r in range(w)]}[view]
    return [coordinate for row in rows for coordinate in row]


@pytest.mark.parametrize("view", VIEWS)
def test_inverse_after_view_is_the_identity_on_images_and_grids(view):
    x = torch.randn(2, 3, 4, 6)
    assert torch.equal(invert_view(apply_view(x, view), view), x)
    if view != "rot90":
        assert torch.equal(apply_view(apply_view(x, view), view), x)


@pytest.mark.parametrize("view", VIEWS)
def test_token_order_matches_the_hand_written_coordinates(view):
    grid = (3, 5)
    coords = view_coordinates(view, grid)
    order = token_order(view, grid if view != "rot90" else (5, 3))
    for original_index, view_index in enumerate(order.tolist()):
        assert coords[view_index] == divmod(original_index, grid[1])


@pytest.mark.parametrize("view", VIEWS)
def test_inverse_restores_token_grids_and_affinities(view):
    images, patch, grid = torch.rand(2, 3, 12, 20), 4, (3, 5)
    tokens = patch_tokens(images, patch)
    view_tokens = patch_tokens(apply_view(images, view), patch)
    assert not torch.equal(view_tokens, tokens)
    assert torch.allclose(invert_view_tokens(view_tokens, view, grid), tokens)
    affinity = torch.exp(-torch.cdist(tokens.transpose(1, 2), tokens.transpose(1, 2)))
    view_affinity = torch.exp(-torch.cdist(view_tokens.transpose(1, 2), view_tokens.transpose(1, 2)))
    assert torch.allclose(invert_view_affinity(view_affinity, view, grid), affinity)


@pytest.mark.parametrize("view", VIEWS)
def test_scc_and_pac_are_zero_for_an_equivariant_pair(view):
    grid = (3, 4)
    seeds, affinity = torch.rand(2, 5, 12), torch.rand(2, 12, 12)
    coords = view_coordinates(view, grid)
    index = torch.tensor([r * grid[1] + c for r, c in coords])  # view token j shows original token index[j]
    view_seeds = seeds[..., index]
    view_affinity = torch.stack([torch.stack([affinity[:, i, j] for j in index], -1) for i in index], -2)
    assert scc_loss(seeds, view_seeds, view, grid) == 0
    assert pac_loss(affinity, view_affinity, view, grid) == 0
    assert scc_loss(seeds, seeds.flip(0), view, grid) > 0


def test_scc_and_pac_on_a_hand_computed_example():
    grid = (1, 2)
    seeds = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    view_seeds = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # f⁻¹ -> [[0, 1], [1, 0]]
    # |M - f⁻¹(M̂)| = [[1, 1], [0.5, 0.5]]: (1/C) * (2 + 1) = 1.5
    assert scc_loss(seeds, view_seeds, "hflip", grid) == pytest.approx(1.5)
    affinity = torch.tensor([[[0.6, 0.4], [0.3, 0.7]]])
    # f⁻¹ swaps rows and columns: [[0.7, 0.3], [0.4, 0.6]]; |diff| rows sum to 0.2; (1/N) * 0.4 = 0.2
    assert pac_loss(affinity, affinity.clone(), "hflip", grid) == pytest.approx(0.2)
    # "mean" also averages along each row of N = 2: 1.5 / 2 and 0.2 / 2
    assert scc_loss(seeds, view_seeds, "hflip", grid, reduction="mean") == pytest.approx(0.75)
    assert pac_loss(affinity, affinity.clone(), "hflip", grid, reduction="mean") == pytest.approx(0.1)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown view 'rot45'"):
        apply_view(torch.zeros(1, 4, 4), "rot45")
    with pytest.raises(ValueError, match="do not fill the grid"):
        invert_view_tokens(torch.zeros(1, 2, 10), "hflip", (3, 4))
    with pytest.raises(ValueError, match="scc_loss"):
        scc_loss(torch.zeros(1, 2, 4), torch.zeros(1, 3, 4), "hflip", (2, 2))
    with pytest.raises(ValueError, match="pac_loss"):
        pac_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 3), "hflip", (2, 2))
    with pytest.raises(ValueError, match="reduction must be 'sum' or 'mean'"):
        scc_loss(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4), "hflip", (2, 2), reduction="max")


def test_rotation_of_a_non_square_grid():
    seeds = torch.arange(6.0).reshape(1, 1, 6)  # grid (2, 3)
    view = apply_view(seeds.reshape(1, 1, 2, 3), "rot90").flatten(2)  # grid (3, 2)
    assert torch.equal(invert_view_tokens(view, "rot90", (2, 3)), seeds)
