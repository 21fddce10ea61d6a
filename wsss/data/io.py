"""Reading images, class-index PNGs and GeoTIFFs, with errors that name the file and the problem.

A file that does not exist raises ``FileNotFoundError``; a file that exists but cannot be used (corrupt,
truncated, wrong mode or band count, label ids outside the class list) raises :class:`DataFileError`, a
``ValueError`` that carries ``path`` and ``reason`` so a dataset can skip the sample and report why.
"""

import errno
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

IGNORE_INDEX = 255


class DataFileError(ValueError):
    """A data file that exists but cannot be used; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def require_file(path: str | Path) -> Path:
    """Return ``path`` as a Path, or raise ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "file not found", str(path))
    return path


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataFileError(path, f"cannot decode image ({err})") from err
    return image


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a ``.jpg``/``.png`` image as an (H, W, 3) uint8 RGB array (grey and palette images expanded).

    16-bit grey images are scaled from 0..65535 to 0..255 (Pillow's own conversion saturates them to white;
    it reads 16-bit colour PNGs by their high byte); 32-bit integer and float images have no fixed range and
    are refused.
    """
    path = require_file(path)
    image = _open_image(path)
    if image.mode.startswith("I;16"):
        grey = np.round(np.asarray(image, dtype=np.float32) * (255 / 65535)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise DataFileError(path, f"a {kind} image has no fixed value range; convert it to 8-bit RGB")
    return np.asarray(image.convert("RGB"))


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(H, W) of an image from its header alone; None when it cannot be read (reading it says why)."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a class-index PNG (palette or grey; 16-bit when its values fit) as an (H, W) uint8 array."""
    path = require_file(path)
    image = _open_image(path)
    if image.mode not in ("P", "L", "1", "I", "I;16"):
        raise DataFileError(
            path, f"expected a single-channel class-index PNG (palette or grey), got mode {image.mode}"
        )
    label = np.array(image)
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > IGNORE_INDEX):
            raise DataFileError(path, f"class ids must lie in 0..255, found {label.min()}..{label.max()}")
        label = label.astype(np.uint8)
    return label


def check_label_ids(label: np.ndarray, num_classes: int, path: str | Path) -> None:
    """Raise :class:`DataFileError` unless every id of ``label`` is in 0..``num_classes`` or 255 (ignore)."""
    ids = np.unique(label)
    bad = ids[(ids > num_classes) & (ids != IGNORE_INDEX)]
    if bad.size:
        raise DataFileError(
            path,
            f"class ids {bad.tolist()} are beyond the class list (0..{num_classes}, 255 = ignore)",
        )


def check_same_size(
    label: np.ndarray, image_shape: tuple[int, ...], label_path: str | Path, image_path: str | Path
) -> None:
    """Raise :class:`DataFileError` when a label map's (H, W) differs from its image's."""
    if tuple(label.shape[:2]) != tuple(image_shape[:2]):
        raise DataFileError(
            label_path,
            f"size {tuple(label.shape[:2])} differs from its image {image_path} {tuple(image_shape[:2])}",
        )


def read_geotiff(path: str | Path, num_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a GeoTIFF with exactly ``num_bands`` bands.

    Returns the (C, H, W) float32 data and an (H, W) bool map of invalid pixels: any band that is NaN or
    infinite (checked explicitly, whatever the file's nodata says) or equal to the file's numeric nodata.
    """
    path = require_file(path)
    try:
        with rasterio.open(path) as src:
            if src.count != num_bands:
                raise DataFileError(path, f"has {src.count} bands, expected {num_bands}")
            data = src.read()
            nodata = src.nodata
    except rasterio.errors.RasterioError as err:
        raise DataFileError(path, f"cannot read GeoTIFF ({err})") from err
    invalid = np.zeros(data.shape, dtype=bool)
    if np.issubdtype(data.dtype, np.floating):
        invalid |= ~np.isfinite(data)
    if nodata is not None and not np.isnan(nodata):
        invalid |= data == nodata
    return data.astype(np.float32), invalid.any(axis=0)
