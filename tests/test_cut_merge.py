"""CRT's overlapping cutting-merging: padding, tile order, overlap counts and merge-by-average."""

import pytest
import torch

from wsss.models.cut_merge import cut_tiles, merge_tiles, overlap_counts, pad_for_tiles, tiles_along


def test_cut_then_merge_reproduces_the_padded_tensor():
    x = torch.randn(2, 3, 8, 10)  # tile 4, stride 2: a 3 x 4 grid
    tiles, grid = cut_tiles(x, 4, 2)
    assert grid == (3, 4) and tiles.shape == (24, 3, 4, 4)
    assert torch.allclose(merge_tiles(tiles, 2, grid, 2), x, atol=1e-6)


def test_tiles_are_stacked_tile_major_in_row_major_grid_order():
    x = torch.arange(2 * 36, dtype=torch.float32).reshape(2, 1, 6, 6)
    tiles, grid = cut_tiles(x, 4, 2)
    assert grid == (2, 2)
    assert torch.equal(tiles[0], x[0, :, :4, :4]) and torch.equal(tiles[1], x[1, :, :4, :4])
    assert torch.equal(tiles[2], x[0, :, :4, 2:]) and torch.equal(tiles[7], x[1, :, 2:, 2:])


def test_merging_tiles_that_are_constant_averages_the_covering_tiles():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])  # grid 2x2 of one image, row-major
    tiles = values[:, None, None, None].expand(4, 1, 4, 4)
    merged = merge_tiles(tiles, 1, (2, 2), 2)[0, 0]
    assert merged.shape == (6, 6)
    assert torch.all(merged[:2, :2] == 1) and torch.all(merged[:2, 4:] == 2)
    assert torch.all(merged[4:, :2] == 3) and torch.all(merged[4:, 4:] == 4)
    assert torch.all(merged[:2, 2:4] == 1.5) and torch.all(merged[2:4, :2] == 2.0)
    assert torch.all(merged[2:4, 4:] == 3.0) and torch.all(merged[4:, 2:4] == 3.5)
    assert torch.all(merged[2:4, 2:4] == 2.5)


def test_overlap_counts_at_borders_and_inside():
    counts = overlap_counts((3, 2), tile=4, stride=2)
    rows = torch.tensor([1, 1, 2, 2, 2, 2, 1, 1.0])
    cols = torch.tensor([1, 1, 2, 2, 1, 1.0])
    assert torch.equal(counts, rows[:, None] * cols[None, :])
    assert torch.equal(overlap_counts((1, 1), 4, 2), torch.ones(4, 4))


@pytest.mark.parametrize(
    ("size", "tiles", "padded"),
    [(20, 1, 32), (32, 1, 32), (40, 2, 48), (48, 2, 48), (50, 3, 64), (64, 3, 64), (65, 4, 80)],
)
def test_sizes_that_are_not_tile_multiples_are_padded_to_cover(size: int, tiles: int, padded: int):
    assert tiles_along(size, 32, 16) == tiles
    x = torch.rand(1, 2, size, size + 3)
    out = pad_for_tiles(x, 32, 16)
    assert out.shape[-2] == padded and out.shape[-1] == 32 + (tiles_along(size + 3, 32, 16) - 1) * 16
    assert torch.equal(out[..., :size, : size + 3], x) and out[..., size:, :].abs().sum() == 0
    cut, grid = cut_tiles(out, 32, 16)
    merged = merge_tiles(cut, 1, grid, 16)
    assert torch.allclose(merged[..., :size, : size + 3], x, atol=1e-6)


def test_overlap_counts_of_a_padded_odd_size():
    # 50 px, tile 32, stride 16 -> 3 tiles covering 64 px: coverage 1,2,2,1 per 16 px band
    grid = (tiles_along(50, 32, 16), tiles_along(50, 32, 16))
    band = torch.tensor([1.0, 2.0, 2.0, 1.0]).repeat_interleave(16)
    assert torch.equal(overlap_counts(grid, 32, 16), band[:, None] * band[None, :])


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="pad it with pad_for_tiles"):
        cut_tiles(torch.zeros(1, 1, 7, 8), 4, 2)
    with pytest.raises(ValueError, match="0 < stride <= tile"):
        tiles_along(10, 4, 5)
    with pytest.raises(ValueError, match="do not match"):
        merge_tiles(torch.zeros(3, 1, 4, 4), 1, (2, 2), 2)
