"""Writing pseudo-masks as class-index PNGs, atomically and never over ground truth."""

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

MARKER = ".wsss-pseudo-masks"


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n, 3) uint8: bit-interleaved class ids, 255 drawn as (224, 224, 192)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def prepare_output_dir(path: str | Path) -> Path:
    """Create ``path`` for pseudo-masks; refuse a non-empty folder wsss did not create (e.g. GT)."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not (path / MARKER).exists():
        raise FileExistsError(
            f"{path} is not empty and holds no {MARKER} marker: it may be ground truth, so wsss "
            "will not write "
            "pseudo-masks into it; choose an empty or new folder"
        )
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).touch()
    return path


def write_mask_png(mask: np.ndarray, path: str | Path, palette: bool = True) -> None:
    """Write a (H, W) class-index mask as a PNG (palette or grey) through a temporary file and a rename."""
    path = Path(path)
    image = Image.fromarray(mask.astype(np.uint8))
    if palette:
        image.putpalette(voc_palette().flatten().tolist())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
