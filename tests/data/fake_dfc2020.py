"""A tiny DFC2020 release: ``ROIs0000_{validation,test}/{s1_0,s2_0,dfc_0,lc_0}`` GeoTIFFs.

Tile ``i`` of side ``size`` has the DFC codes of :func:`fake_codes`; S1 is float32 dB spanning
[-30, 5] (so clipping shows), S2 uint16 with band b = 1000 * (b + 1) + code. Optional defects: a NaN
S1 pixel in a file whose nodata is NaN, and a NaN S1 pixel in a file whose nodata is numeric (-9999).
"""

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

NAN_PIXEL = (3, 5)  # (row, col) of the NaN S1 pixel


def fake_codes(index: int, size: int) -> np.ndarray:
    """Quadrant codes: top-left 1 (Forest), top-right 3 (Savanna), bottom-left 10 (Water),
    bottom-right 8 (Snow/Ice) for even tiles and 4 (Grassland) for odd ones."""
    half = size // 2
    codes = np.empty((size, size), np.uint8)
    codes[:half, :half], codes[:half, half:], codes[half:, :half] = 1, 3, 10
    codes[half:, half:] = 8 if index % 2 == 0 else 4
    return codes


def fake_s1(size: int) -> np.ndarray:
    """(2, size, size) float32 dB: VV ramps over [-30, 5] along x, VH = VV - 5."""
    ramp = np.tile(np.linspace(-30.0, 5.0, size, dtype=np.float32), (size, 1))
    return np.stack([ramp, ramp - 5.0])


def fake_s2(codes: np.ndarray) -> np.ndarray:
    """(13, H, W) uint16: band b holds 1000 * (b + 1) + code."""
    return np.stack([1000 * (b + 1) + codes.astype(np.uint16) for b in range(13)]).astype(np.uint16)


def write_geotiff(path: str | Path, array: np.ndarray, nodata: float | None = None) -> None:
    """Write a (C, H, W) array as a GeoTIFF in UTM 32N at 10 m."""
    count, height, width = array.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=array.dtype,
        crs="EPSG:32632",
        transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0),
        nodata=nodata,
    ) as dst:
        dst.write(array)


def tile_path(root: str | Path, split: str, layer: str, index: int) -> Path:
    """``root/ROIs0000_<split>/<layer>_0/ROIs0000_<split>_<layer>_0_p<index>.tif``."""
    return Path(root) / f"ROIs0000_{split}" / f"{layer}_0" / f"ROIs0000_{split}_{layer}_0_p{index}.tif"


def write_fake_dfc2020(
    root: str | Path,
    n: int = 3,
    size: int = 32,
    *,
    nan_tile: int | None = None,
    numeric_nodata_nan_tile: int | None = None,
) -> Path:
    """Write ``n`` tiles (p1..pn) per split under ``root`` and return it.

    ``nan_tile``: that tile's S1 has a NaN at :data:`NAN_PIXEL` (file nodata NaN);
    ``numeric_nodata_nan_tile``: that tile's S1 declares nodata -9999 yet holds a NaN there.
    """
    for split in ("validation", "test"):
        for layer in ("s1", "s2", "dfc", "lc"):
            tile_path(root, split, layer, 1).parent.mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            codes = fake_codes(i, size)
            s1, nodata = fake_s1(size), None
            if i in (nan_tile, numeric_nodata_nan_tile):
                s1[:, NAN_PIXEL[0], NAN_PIXEL[1]] = np.nan
                nodata = float("nan") if i == nan_tile else -9999.0
            write_geotiff(tile_path(root, split, "s1", i), s1, nodata)
            write_geotiff(tile_path(root, split, "s2", i), fake_s2(codes))
            write_geotiff(tile_path(root, split, "dfc", i), codes[None])
            write_geotiff(tile_path(root, split, "lc", i), np.ones((4, size, size), np.uint8))
    return Path(root)
