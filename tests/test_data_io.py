"""Image, class-index PNG and GeoTIFF reading: values, and errors that name the file."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.fake_dfc2020 import write_geotiff
from wsss.data.io import DataFileError, check_label_ids, read_geotiff, read_label_png, read_rgb


def test_corrupt_and_truncated_images_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image" * 10)
    for path in (truncated, garbage):
        with pytest.raises(DataFileError, match="cannot decode image") as info:
            read_rgb(path)
        assert str(path) in str(info.value) and info.value.path == str(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        read_rgb(tmp_path / "missing.jpg")


def test_grey_image_is_expanded_to_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((3, 4), 9, np.uint8)).save(tmp_path / "grey.png")
    rgb = read_rgb(tmp_path / "grey.png")
    assert rgb.shape == (3, 4, 3) and (rgb == 9).all()


def test_16_bit_grey_image_is_scaled_to_8_bit_and_other_deep_images_refused(tmp_path: Path) -> None:
    deep = np.array([[0, 257, 32896], [65535, 1000, 40000]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    rgb = read_rgb(tmp_path / "grey16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 1, 128], [255, 4, 156]])
    assert (rgb == rgb[..., :1]).all()
    Image.fromarray(np.zeros((2, 2), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(DataFileError, match=r"float\.tif: a floating-point image has no fixed value range"):
        read_rgb(tmp_path / "float.tif")


def test_palette_png_reads_class_indices_not_colours(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [15, 255]], np.uint8)
    image = Image.frombytes("P", (2, 2), indices.tobytes())
    image.putpalette([0, 0, 0, 128, 0, 0] + [50] * (3 * 254))
    image.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "palette.png"), indices)


def test_colour_or_out_of_range_label_png_is_rejected(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataFileError, match=r"rgb.png: expected a single-channel .* got mode RGB"):
        read_label_png(tmp_path / "rgb.png")
    Image.fromarray(np.full((2, 2), 300, np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(DataFileError, match=r"wide.png: class ids must lie in 0..255, found 300..300"):
        read_label_png(tmp_path / "wide.png")
    Image.fromarray(np.full((2, 2), 200, np.uint16)).save(tmp_path / "wide_ok.png")
    assert (read_label_png(tmp_path / "wide_ok.png") == 200).all()


def test_label_ids_beyond_the_class_list_name_the_file() -> None:
    check_label_ids(np.array([[0, 3], [255, 1]]), 3, "ok.png")
    with pytest.raises(DataFileError, match=r"bad.png: class ids \[4, 9\] are beyond the class list \(0..3"):
        check_label_ids(np.array([[0, 4], [9, 255]]), 3, "bad.png")


def test_geotiff_band_count_and_corruption_errors(tmp_path: Path) -> None:
    path = tmp_path / "s2.tif"
    write_geotiff(path, np.ones((12, 8, 8), np.uint16))
    with pytest.raises(DataFileError, match=r"s2.tif: has 12 bands, expected 13"):
        read_geotiff(path, 13)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataFileError, match=r"broken.tif: cannot read GeoTIFF"):
        read_geotiff(broken, 12)
    with pytest.raises(FileNotFoundError, match=r"absent\.tif"):
        read_geotiff(tmp_path / "absent.tif", 1)


def test_geotiff_invalid_pixels_include_nan_even_with_a_numeric_nodata(tmp_path: Path) -> None:
    data = np.zeros((2, 4, 4), np.float32)
    data[0, 1, 2] = np.nan  # NaN in one band only
    data[1, 3, 0] = -9999.0  # the declared nodata
    data[1, 0, 0] = np.inf
    write_geotiff(tmp_path / "s1.tif", data, nodata=-9999.0)
    values, invalid = read_geotiff(tmp_path / "s1.tif", 2)
    assert values.dtype == np.float32 and values.shape == (2, 4, 4)
    expected = np.zeros((4, 4), bool)
    expected[1, 2] = expected[3, 0] = expected[0, 0] = True
    np.testing.assert_array_equal(invalid, expected)
    write_geotiff(tmp_path / "nan_nodata.tif", data[:1], nodata=float("nan"))
    assert read_geotiff(tmp_path / "nan_nodata.tif", 1)[1].sum() == 1
