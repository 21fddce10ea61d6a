"""DFC2020DataModule on tiny fake GeoTIFFs: band stacking and normalisation, the DFC remap, the 10 %
image-level rule, NaN / nodata handling and errors that name the file."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.fake_dfc2020 import NAN_PIXEL, tile_path, write_fake_dfc2020, write_geotiff
from wsss.data import DataFileError, DFC2020DataModule, image_labels, remap_dfc
from wsss.data.dfc2020 import DFC2020_CLASSES, S2_MEAN, S2_STD

SIZE = 32


def _eval_module(root: Path, **kwargs) -> DFC2020DataModule:
    return DFC2020DataModule(str(root), **kwargs)


def test_remap_dfc_codes_by_hand() -> None:
    codes = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], np.float32)
    expected = [[1, 2, 255, 3, 4], [5, 6, 255, 7, 8]]  # Savanna and Snow/Ice ignored, the rest shifted +1
    np.testing.assert_array_equal(remap_dfc(codes, "x.tif"), expected)
    assert (
        DFC2020_CLASSES[1] == "Forest" and DFC2020_CLASSES[3] == "Grassland" and DFC2020_CLASSES[8] == "Water"
    )
    with pytest.raises(DataFileError, match=r"x.tif: unknown DFC codes \[12\], expected 1..10"):
        remap_dfc(np.array([[1, 12]], np.float32), "x.tif")


def test_ten_percent_rule_on_a_hand_example() -> None:
    mask = np.full((10, 10), 255, np.uint8)  # 50 ignored pixels still count in the denominator
    mask.flat[50:60] = 1  # 10 % -> present
    mask.flat[60:69] = 2  # 9 % -> absent
    mask.flat[69:100] = 5  # 31 % -> present
    assert image_labels(mask, 8, min_fraction=0.1).tolist() == [1, 0, 0, 0, 1, 0, 0, 0]


def test_full_tile_channels_normalisation_mask_and_labels(tmp_path: Path) -> None:
    root = write_fake_dfc2020(tmp_path, n=2, size=SIZE)
    dm = _eval_module(root)
    assert (dm.in_channels, dm.modality_channels, len(dm.mean), dm.num_classes) == (15, (2, 13), 15, 8)
    dataset = dm.dataset("test")
    assert dataset.names == ["ROIs0000_test_p1", "ROIs0000_test_p2"]
    odd, even = dataset[0], dataset[1]
    image = odd["image"].numpy()
    assert image.shape == (15, SIZE, SIZE)
    # S1 clipped to [-25, 0] dB: VV -30 -> -25 at column 0, VV 5 -> 0 at the last; VH = VV - 5
    np.testing.assert_allclose(image[0, 0, [0, -1]], [(-25 + 12.55) / 5.26, (0 + 12.55) / 5.26], rtol=1e-5)
    np.testing.assert_allclose(image[1, 0, [0, -1]], [(-25 + 20.19) / 5.91, (0 + 20.19) / 5.91], rtol=1e-5)
    # S2 band b in the Forest quadrant holds 1000 (b + 1) + 1, clipped to 10000 (bands 10..13)
    s2 = (np.minimum(1000 * np.arange(1, 14) + 1, 10000) - np.array(S2_MEAN)) / np.array(S2_STD)
    np.testing.assert_allclose(image[2:, 5, 5], s2, rtol=1e-5, atol=1e-5)
    half = SIZE // 2
    mask = odd["mask"].numpy()
    assert (mask[:half, :half] == 1).all() and (mask[:half, half:] == 255).all()
    assert (mask[half:, :half] == 8).all() and (mask[half:, half:] == 3).all()
    assert (even["mask"].numpy()[half:, half:] == 255).all()  # Snow/Ice ignored
    assert odd["cls_labels"].tolist() == [1, 0, 1, 0, 0, 0, 0, 1]  # 25 % each of Forest, Grassland, Water
    assert even["cls_labels"].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]


def test_image_labels_come_from_the_crop(tmp_path: Path) -> None:
    root = write_fake_dfc2020(tmp_path, n=2, size=SIZE)
    dataset = DFC2020DataModule(str(root), crop_size=12).dataset("train")
    seen = set()
    for seed in range(8):
        dataset.transform.reseed(seed)
        sample = dataset[seed % 2]
        mask = sample["mask"]
        assert mask.shape == (12, 12) and sample["image"].shape == (15, 12, 12)
        fractions = torch.stack([(mask == c).double().mean() for c in range(1, 9)])
        assert sample["cls_labels"].tolist() == (fractions >= 0.1).float().tolist()
        seen.add(tuple(sample["cls_labels"].tolist()))
    assert len(seen) > 1  # different crops of the same tiles give different labels


@pytest.mark.parametrize("option", ["nan_tile", "numeric_nodata_nan_tile"])
def test_nan_pixels_are_filled_with_the_mean_and_ignored(tmp_path: Path, option: str) -> None:
    root = write_fake_dfc2020(tmp_path, n=2, size=SIZE, **{option: 1})
    sample = _eval_module(root).dataset("predict")[0]  # predict_split = "validation"
    row, col = NAN_PIXEL
    image = sample["image"]
    assert torch.isfinite(image).all()
    np.testing.assert_allclose(image[:2, row, col].numpy(), 0.0, atol=1e-5)  # the S1 mean
    assert torch.equal(image[2:, row, col], image[2:, row, col + 1])  # S2 untouched (same quadrant)
    assert sample["mask"][row, col].item() == 255 and sample["mask"][row, col + 1].item() == 1


def test_nan_policy_error_names_the_file(tmp_path: Path) -> None:
    root = write_fake_dfc2020(tmp_path, n=1, size=SIZE, nan_tile=1)
    s1 = tile_path(root, "validation", "s1", 1)
    with pytest.raises(DataFileError, match=rf"{s1}: 1 pixel\(s\) are NaN, infinite or nodata"):
        _eval_module(root, nan_policy="error").dataset("predict")[0]


def test_wrong_band_count_and_bad_codes_name_the_file(tmp_path: Path) -> None:
    root = write_fake_dfc2020(tmp_path, n=2, size=SIZE)
    s2 = tile_path(root, "test", "s2", 1)
    write_geotiff(s2, np.zeros((12, SIZE, SIZE), np.uint16))
    dfc = tile_path(root, "test", "dfc", 2)
    write_geotiff(dfc, np.full((1, SIZE, SIZE), 12, np.uint8))
    dataset = _eval_module(root).dataset("test")
    with pytest.raises(DataFileError, match=rf"{s2}: has 12 bands, expected 13"):
        dataset[0]
    with pytest.raises(DataFileError, match=rf"{dfc}: unknown DFC codes \[12\]"):
        dataset[1]
    assert _eval_module(root, bands="s1").dataset("test")[0]["image"].shape == (2, SIZE, SIZE)  # S2 not read


def test_band_sets(tmp_path: Path) -> None:
    root = write_fake_dfc2020(tmp_path, n=1, size=SIZE)
    s2 = _eval_module(root, bands="s2")
    assert (s2.in_channels, s2.modality_channels, s2.mean) == (13, (13,), S2_MEAN)
    sample = s2.dataset("test")[0]
    assert sample["image"].shape == (13, SIZE, SIZE)
    s1 = _eval_module(root, bands="s1")
    assert (s1.in_channels, s1.modality_channels, s1.std) == (2, (2,), (5.26, 5.91))


def test_dense_training_on_pseudo_masks(tmp_path: Path) -> None:
    root = write_fake_dfc2020(tmp_path / "dfc", n=2, size=SIZE)
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    for i in (1, 2):
        Image.fromarray(np.full((SIZE, SIZE), 4, np.uint8)).save(pseudo / f"ROIs0000_validation_p{i}.png")
    dm = DFC2020DataModule(str(root), supervision="dense", mask_dir=str(pseudo), crop_size=16)
    train = dm.dataset("train")[0]
    assert (train["mask"] == 4).all() and train["cls_labels"].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    assert dm.dataset("val")[0]["mask"][0, 0].item() == 1  # validation reads the true DFC labels


def test_split_listing_and_missing_split(tmp_path: Path) -> None:
    root = write_fake_dfc2020(tmp_path, n=11, size=8)
    names = _eval_module(root).dataset("predict").names
    assert names == [f"ROIs0000_validation_p{i}" for i in range(1, 12)]  # numeric order, lc_0 ignored
    with pytest.raises(FileNotFoundError, match=r"split 'train'.*\['ROIs0000_test', 'ROIs0000_validation'\]"):
        _eval_module(root, val_split="train").dataset("val")
    tile_path(root, "test", "s1", 3).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"1 sample\(s\) lack a file, first: .*ROIs0000_test_s1_0_p3.tif"
    ):
        _eval_module(root).dataset("test")
    with pytest.raises(FileNotFoundError, match="wsss synth dfc2020 --root <dir>"):
        DFC2020DataModule(str(tmp_path / "absent"))


def test_per_image_max_scaling_is_the_official_preprocessing(tmp_path: Path) -> None:
    import rasterio

    root = write_fake_dfc2020(tmp_path, n=1, size=SIZE)
    dm = _eval_module(root, scaling="per_image_max")
    assert dm.mean == (0.0,) * 15 and dm.std == (1.0,) * 15
    image = dm.dataset("test")[0]["image"].numpy()
    # S1: clipped to [-25, 0] dB, +25, / (tile max + 1e-5); VV runs from -30 (-> 0) to 5 (-> 25) dB
    np.testing.assert_allclose(image[0, 0, [0, -1]], [0.0, 25 / (25 + 1e-5)], rtol=1e-6)
    with rasterio.open(tile_path(root, "test", "s2", 1)) as src:
        s2 = np.clip(src.read().astype(np.float64), 0, 10000)
    np.testing.assert_allclose(image[2:], s2 / (s2.max(axis=(1, 2), keepdims=True) + 1e-5), rtol=1e-5)
    with pytest.raises(ValueError, match="scaling"):
        _eval_module(root, scaling="minmax")
