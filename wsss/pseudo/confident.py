"""IRN's confident labels for AffinityNet training, merged from two folders of CAM pseudo-masks.

IRN (Ahn, Cho & Kwak, CVPR 2019, Sec. 3.1; PSA: Ahn & Kwak, CVPR 2018, Sec. 3.1) thresholds the CAMs twice:
a mask made with a high background score (conf_fg, 0.30; CRT 0.35) is trusted where it says foreground, a
mask made with a low one (conf_bg, 0.05; CRT 0.15) where it says background, and every other pixel is unsure
(255). With the pseudo-mask writer these are two ``wsss predict`` runs of the same checkpoint with
``--model.init_args.bg_threshold=0.30`` and ``=0.05`` into two folders; :func:`merge_confident_labels`
combines them (see :func:`wsss.models.affinitynet.confident_labels`).

Deliberate difference from IRN's code: IRN refines both maps with the label CRF before merging; here the
masks are merged as written (pass CRF-refined folders to get IRN's labels).
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wsss.models.affinitynet import confident_labels
from wsss.pseudo.io import publish_mask_folder, start_mask_folder, write_mask_png


def read_label_png(path: Path) -> np.ndarray:
    """A class-index PNG as a (H, W) uint8 array; a clear error for a file that is not one."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ValueError(
                    f"{path}: a label PNG must be palette (P) or grey (L), got mode {image.mode}"
                )
            return np.array(image)
    except OSError as err:
        raise ValueError(f"{path}: cannot read it as a label PNG ({err})") from err


def merge_confident_labels(fg_dir: str | Path, bg_dir: str | Path, out_dir: str | Path) -> int:
    """Write ``out_dir/<name>.png`` = the class of ``fg_dir/<name>.png`` where it is foreground, 0 where both
    masks are background, 255 elsewhere; returns the number of masks written.

    ``out_dir`` is written like the pseudo-mask writer's (a non-empty folder wsss did not create is refused;
    it is replaced, with a manifest, only once every mask is written).
    """
    fg_dir, bg_dir, out_dir = Path(fg_dir), Path(bg_dir), Path(out_dir)
    for name, folder in (("fg_dir", fg_dir), ("bg_dir", bg_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"merge_confident_labels: {name} {folder} does not exist")
    if out_dir.resolve() in (fg_dir.resolve(), bg_dir.resolve()):
        raise ValueError(f"merge_confident_labels: out_dir {out_dir} must differ from fg_dir and bg_dir")
    fg_files = sorted(fg_dir.glob("*.png"))
    if not fg_files:
        raise ValueError(f"merge_confident_labels: {fg_dir} holds no PNG masks")
    missing = [p.name for p in fg_files if not (bg_dir / p.name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"merge_confident_labels: {len(missing)} masks of {fg_dir} are missing from {bg_dir}, "
            f"e.g. {missing[0]}"
        )
    staging = start_mask_folder(out_dir)
    for fg_path in fg_files:
        fg, bg = read_label_png(fg_path), read_label_png(bg_dir / fg_path.name)
        if fg.shape != bg.shape:
            raise ValueError(
                f"merge_confident_labels: {fg_path} {fg.shape} and {bg_dir / fg_path.name} {bg.shape} "
                "differ in size"
            )
        labels = confident_labels(torch.from_numpy(fg)[None].long(), torch.from_numpy(bg)[None].long())
        write_mask_png(labels[0].numpy(), staging / fg_path.name)
    publish_mask_folder(staging, out_dir)
    return len(fg_files)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wsss.pseudo.confident --fg DIR --bg DIR --out DIR``: merge two pseudo-mask folders."""
    parser = argparse.ArgumentParser(
        prog="wsss affinity-labels",
        description="Merge pseudo-masks made with a high (--fg, IRN 0.30) and a low (--bg, IRN 0.05) CAM "
        "background threshold into confident AffinityNet labels (255 = unsure).",
    )
    parser.add_argument("--fg", required=True, help="masks of the high background threshold (conf_fg)")
    parser.add_argument("--bg", required=True, help="masks of the low background threshold (conf_bg)")
    parser.add_argument("--out", required=True, help="new folder for the confident labels")
    args = parser.parse_args(argv)
    try:
        count = merge_confident_labels(args.fg, args.bg, args.out)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        parser.error(str(err))
    print(f"wrote {count} confident label masks to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
