"""Pseudo-mask folders: class-index PNGs written atomically, never over ground truth, one run per folder.

A run writes into a fresh hidden folder beside the target (:func:`start_mask_folder`) and, once complete,
lists its masks in ``manifest.json`` and takes the target's place (:func:`publish_mask_folder`): a killed run
leaves the previous folder as it was, and a re-run with fewer images leaves no stale masks behind.
:func:`check_mask_folder` refuses a wsss folder without a manifest or whose PNGs differ from it.
"""

import io
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.atomic import atomic_write

MARKER = ".wsss-pseudo-masks"
MANIFEST = "manifest.json"


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


def check_output_dir(path: str | Path) -> Path:
    """Refuse ``path`` for pseudo-masks when it is a non-empty folder wsss did not create (e.g. GT)."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not (path / MARKER).exists():
        raise FileExistsError(
            f"{path} is not empty and holds no {MARKER} marker: it may be ground truth, so wsss "
            "will not write "
            "pseudo-masks into it; choose an empty or new folder"
        )
    return path


def prepare_output_dir(path: str | Path) -> Path:
    """Create ``path`` for writing pseudo-masks in place (it is incomplete until :func:`write_manifest`)."""
    path = check_output_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).touch()
    (path / MANIFEST).unlink(missing_ok=True)
    return path


def staging_dir(path: str | Path) -> Path:
    """The hidden folder beside ``path`` where a run writes the masks that will replace it."""
    path = Path(path).absolute()
    return path.with_name(f".{path.name}.incoming")


def start_mask_folder(path: str | Path) -> Path:
    """A fresh, empty staging folder for the masks that will replace ``path`` (a stale one is cleared)."""
    check_output_dir(path)
    staging = staging_dir(path)
    if staging.exists():
        if not (staging / MARKER).exists():
            raise FileExistsError(f"{staging} exists and was not made by wsss; move it away")
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / MARKER).touch()
    return staging


def write_manifest(folder: str | Path, names: Iterable[str]) -> None:
    """List the masks ``<name>.png`` of one complete run in ``folder/manifest.json``."""
    names = sorted(set(names))
    text = json.dumps({"count": len(names), "masks": names}, indent=1)
    atomic_write(Path(folder) / MANIFEST, lambda file: file.write(text.encode()))


def publish_mask_folder(staging: str | Path, path: str | Path) -> Path:
    """Write the manifest of the masks in ``staging`` and put ``staging`` in place of ``path``."""
    staging, path = Path(staging), Path(path)
    write_manifest(staging, (mask.stem for mask in staging.glob("*.png")))
    old = staging.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        check_output_dir(path)
        os.replace(path, old)
    os.replace(staging, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def check_mask_folder(path: str | Path) -> None:
    """Refuse a wsss pseudo-mask folder that is not exactly the masks of one finished run.

    A folder without the wsss marker (masks made elsewhere) is the user's responsibility and passes.
    """
    path = Path(path)
    if not (path / MARKER).exists():
        return
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise ValueError(
            f"mask_dir {path} is incomplete: it has no {MANIFEST}, so the wsss run that wrote it did not "
            "finish (or predates manifests); write the pseudo-masks again with `wsss predict`"
        )
    listed = set(json.loads(manifest.read_text())["masks"])
    present = {mask.stem for mask in path.glob("*.png")}
    extra, missing = sorted(present - listed), sorted(listed - present)
    if extra or missing:
        raise ValueError(
            f"mask_dir {path} mixes runs: {len(extra)} PNG(s) not listed in its {MANIFEST}"
            + (f" (first: {extra[0]}.png)" if extra else "")
            + f" and {len(missing)} listed PNG(s) missing"
            + (f" (first: {missing[0]}.png)" if missing else "")
            + "; write the pseudo-masks again with `wsss predict`"
        )


def write_mask_png(mask: np.ndarray, path: str | Path, palette: bool = True) -> None:
    """Write a (H, W) class-index mask as a PNG (palette or grey) through a temporary file and a rename."""
    image = Image.fromarray(mask.astype(np.uint8))
    if palette:
        image.putpalette(voc_palette().flatten().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, lambda file: file.write(buffer.getbuffer()), durable=False)
