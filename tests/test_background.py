"""Background rules of wsss.pseudo.background against hand-worked maps."""

import pytest
import torch

from wsss.pseudo.background import (
    cams_to_mask,
    cams_with_bg_to_mask,
    keep_present_classes,
    normalize_cams,
    scores_with_background,
)


def one_row(*maps: list[float]) -> torch.Tensor:
    """CAMs (1, K, 1, W) from K rows of W values."""
    return torch.tensor(maps, dtype=torch.float32)[None, :, None, :]


def test_normalize_max_divides_each_map_by_its_own_max() -> None:
    cams = one_row([0.0, 2.0, 1.0, 4.0], [-1.0, 0.5, 0.25, 0.0])
    out = normalize_cams(cams, "max")
    # map 1: / 4; map 2: negatives clamped to 0, then / 0.5
    assert torch.allclose(out, one_row([0.0, 0.5, 0.25, 1.0], [0.0, 1.0, 0.5, 0.0]))


def test_normalize_minmax_maps_range_to_unit_interval() -> None:
    out = normalize_cams(one_row([1.0, 3.0, 2.0, 5.0]), "minmax")
    assert torch.allclose(out, one_row([0.0, 0.5, 0.25, 1.0]))  # (x - 1) / 4


@pytest.mark.parametrize("mode", ["max", "minmax"])
def test_normalize_all_zero_and_constant_maps_give_zeros(mode: str) -> None:
    cams = one_row([0.0, 0.0, 0.0], [0.7, 0.7, 0.7])
    expected = one_row([0.0, 0.0, 0.0], [1.0, 1.0, 1.0] if mode == "max" else [0.0, 0.0, 0.0])
    out = normalize_cams(cams, mode)
    assert not out.isnan().any()
    assert torch.equal(out, expected)


def test_normalize_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        normalize_cams(torch.rand(1, 2, 4, 4), "sum")  # type: ignore[arg-type]


def test_cams_to_mask_fixed_threshold_by_hand() -> None:
    cams = one_row([0.10, 0.50, 0.20, 0.15], [0.00, 0.60, 0.10, 0.00])
    # pixel 0: best fg 0.10 < 0.15 -> bg; pixel 1: class 2 (0.60); pixel 2: class 1 (0.20);
    # pixel 3: class 1 ties the background at 0.15 -> bg (argmax keeps the first maximum)
    assert cams_to_mask(cams, bg_threshold=0.15).tolist() == [[[0, 2, 1, 0]]]


def test_cams_to_mask_zeroes_classes_absent_from_the_labels() -> None:
    cams = one_row([0.10, 0.50, 0.20, 0.15], [0.00, 0.60, 0.10, 0.00])
    # class 2 is absent: pixel 1 falls back to class 1 (0.50 > 0.15)
    assert cams_to_mask(cams, torch.tensor([[1.0, 0.0]])).tolist() == [[[0, 1, 1, 0]]]
    assert cams_to_mask(cams, torch.tensor([[0.0, 0.0]])).tolist() == [[[0, 0, 0, 0]]]


def test_cams_to_mask_power_sharpens_before_the_threshold() -> None:
    cams = one_row([0.5, 0.9])
    assert cams_to_mask(cams, bg_threshold=0.3).tolist() == [[[1, 1]]]
    # 0.5 ** 2 = 0.25 < 0.3, 0.9 ** 2 = 0.81 > 0.3
    assert cams_to_mask(cams, bg_threshold=0.3, power=2.0).tolist() == [[[0, 1]]]


def test_scores_with_background_stacks_constant_first() -> None:
    cams = torch.rand(2, 3, 4, 5)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    scores = scores_with_background(cams, labels, bg_threshold=0.25)
    assert scores.shape == (2, 4, 4, 5)
    assert torch.all(scores[:, 0] == 0.25)
    assert torch.equal(scores[:, 1:], cams * labels[:, :, None, None])
    assert torch.equal(keep_present_classes(cams, labels), scores[:, 1:])


def test_cams_with_bg_to_mask_suppresses_absent_classes_only() -> None:
    scores = one_row(
        [0.5, 0.1, 0.2],  # learned background
        [0.9, 0.8, 0.0],  # class 1
        [0.1, 0.9, 0.7],  # class 2
    )
    assert cams_with_bg_to_mask(scores).tolist() == [[[1, 2, 2]]]
    # class 2 absent: pixel 1 -> class 1 (0.8), pixel 2 -> background (0.2 > 0.0)
    assert cams_with_bg_to_mask(scores, torch.tensor([[1.0, 0.0]])).tolist() == [[[1, 1, 0]]]
    assert cams_with_bg_to_mask(scores, torch.tensor([[0.0, 0.0]])).tolist() == [[[0, 0, 0]]]


def test_label_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cls_labels must have shape"):
        cams_to_mask(torch.rand(2, 3, 4, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="cls_labels must have shape"):
        cams_with_bg_to_mask(torch.rand(2, 4, 4, 4), torch.ones(2, 4))
