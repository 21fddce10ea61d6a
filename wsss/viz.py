"""Pictures people look at: image previews, CAM heat-map overlays, coloured masks and tiled panels."""

from collections.abc import Sequence

import cv2
import numpy as np
from torch import Tensor

from wsss.pseudo.io import voc_palette


def image_preview(image: Tensor, rgb: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """(C, H, W) image of any band count -> (H, W, 3) uint8, each shown band min-max stretched.

    ``rgb`` names the bands shown as red, green and blue; with fewer bands, the first is shown in grey.
    """
    bands = list(rgb) if max(rgb) < image.shape[0] else [0, 0, 0]
    x = image[bands].float().cpu().numpy()
    x = (x - x.min(axis=(1, 2), keepdims=True)) / np.ptp(x, axis=(1, 2), keepdims=True).clip(1e-6)
    return (x.transpose(1, 2, 0) * 255).astype(np.uint8)


def cam_overlay(preview: np.ndarray, cam: Tensor, alpha: float = 0.5) -> np.ndarray:
    """Blend a (H, W) map in [0, 1] as a jet heat map over an (H, W, 3) preview."""
    heat = cv2.applyColorMap((cam.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return (alpha * heat + (1 - alpha) * preview).astype(np.uint8)


def colorize_mask(mask: Tensor | np.ndarray) -> np.ndarray:
    """(H, W) class ids (255 = ignore) -> (H, W, 3) VOC colours."""
    mask = mask.cpu().numpy() if isinstance(mask, Tensor) else mask
    return voc_palette()[mask.astype(np.uint8)]


def tile_panel(
    rows: list[list[np.ndarray]], titles: Sequence[str], scale: int = 2, gap: int = 4
) -> np.ndarray:
    """Tile equal-sized RGB images into a grid with a title over each column; returns (H, W, 3) uint8."""
    h, w = rows[0][0].shape[:2]
    h, w = h * scale, w * scale
    header = 18
    canvas = np.full((header + len(rows) * (h + gap), len(titles) * (w + gap), 3), 255, dtype=np.uint8)
    for j, title in enumerate(titles):
        cv2.putText(canvas, title, (j * (w + gap) + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = header + i * (h + gap), j * (w + gap)
            canvas[y : y + h, x : x + w] = cv2.resize(tile, (w, h), interpolation=cv2.INTER_NEAREST)
    return canvas
