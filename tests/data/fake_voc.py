"""Tiny VOC2012 / COCO-layout datasets with hand-known masks, clicks and scribbles.

Image ``i`` (name ``2007_00000i``) of side ``size`` has background 0, a square of class
``first_class(i)`` at rows/cols [4, 4 + size // 3), a bar of class ``second_class(i)`` over rows
[size // 2, size // 2 + 6) and an ignore (255) first row. Its image is a flat colour per class.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from wsss.data.sparse_labels import (
    SCRIBBLESUP_VOC_NAMES,
    draw_points,
    draw_scribbles,
    write_points_json,
    write_scribble_xml,
)

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [17] * (3 * 251) + [224, 224, 192]


def voc_name(index: int) -> str:
    """The VOC-style name of fake image ``index``."""
    return f"2007_{index:06d}"


def first_class(index: int, num_classes: int) -> int:
    """The class of the square of image ``index``."""
    return index % num_classes + 1


def second_class(index: int, num_classes: int) -> int:
    """The class of the bar of image ``index``."""
    return (index + 2) % num_classes + 1


def fake_mask(index: int, size: int, num_classes: int) -> np.ndarray:
    """The (size, size) uint8 ground truth of image ``index``."""
    mask = np.zeros((size, size), np.uint8)
    mask[4 : 4 + size // 3, 4 : 4 + size // 3] = first_class(index, num_classes)
    mask[size // 2 : size // 2 + 6, :] = second_class(index, num_classes)
    mask[0, :] = 255
    return mask


def fake_image(mask: np.ndarray) -> np.ndarray:
    """A flat RGB colour per class id."""
    ids = mask.astype(np.int32)
    return np.stack([ids * 11 % 256, 255 - ids * 7 % 256, ids * 3 % 256], axis=-1).astype(np.uint8)


def fake_points(index: int, size: int, num_classes: int) -> tuple[list[dict], list[dict]]:
    """(foreground clicks at the square's and the bar's centres, one background click)."""
    square = 4 + size // 6
    foreground = [
        {"cls": first_class(index, num_classes), "x": square, "y": square},
        {"cls": second_class(index, num_classes), "x": size // 2, "y": size // 2 + 3},
    ]
    return foreground, [{"cls": 0, "x": size - 4, "y": size - 4}]


def fake_scribbles(index: int, size: int, num_classes: int) -> list[tuple[int, np.ndarray]]:
    """A horizontal scribble through the bar and a background one near the bottom."""
    bar = size // 2 + 3
    return [
        (second_class(index, num_classes), np.array([[4.0, bar], [size - 5.0, bar]])),
        (0, np.array([[4.0, size - 3.0], [size - 5.0, size - 3.0]])),
    ]


def _write_label(mask: np.ndarray, path: Path, palette: bool) -> None:
    if palette:
        image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
        image.putpalette(VOC_PALETTE)
    else:
        image = Image.fromarray(mask)
    image.save(path)


def write_fake_voc(
    root: str | Path,
    n: int = 4,
    size: int = 48,
    *,
    class_names: list[str] | None = None,
    labels_npy: bool = False,
    points: str | None = "json",
    scribbles: str | None = "xml",
    image_format: str = "jpg",
) -> Path:
    """Write ``n`` images in the VOC2012 layout under ``root`` and return it.

    Splits: ``train_aug`` (all), ``train`` (first half), ``val`` (second half). ``class_names`` writes
    ``classes.txt``; ``labels_npy`` writes ``cls_labels.npy`` from the masks; ``points`` is "json"
    (whats_the_point files), "png" (SparseLabels/point) or None; ``scribbles`` "xml", "png" or None.
    Even images have palette masks, odd ones grey masks.
    """
    root = Path(root)
    num_classes = 20 if class_names is None else len(class_names) - 1
    scribble_names = SCRIBBLESUP_VOC_NAMES if class_names is None else class_names
    folders = ["JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"]
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    names = [voc_name(i) for i in range(n)]
    clicks, background_clicks, labels = {}, {}, {}
    for i, name in enumerate(names):
        mask = fake_mask(i, size, num_classes)
        Image.fromarray(fake_image(mask)).save(root / "JPEGImages" / f"{name}.{image_format}", quality=95)
        _write_label(mask, root / "SegmentationClassAug" / f"{name}.png", palette=i % 2 == 0)
        labels[name] = np.isin(np.arange(1, num_classes + 1), mask).astype(np.float32)
        foreground, background = fake_points(i, size, num_classes)
        clicks[name], background_clicks[name] = foreground, background
        if points == "png":
            (root / "SparseLabels/point").mkdir(parents=True, exist_ok=True)
            _write_label(
                draw_points(background + foreground, mask.shape),
                root / "SparseLabels/point" / f"{name}.png",
                False,
            )
        scribble_lines = fake_scribbles(i, size, num_classes)
        if scribbles == "xml":
            (root / "scribble_annotation/pascal_2012").mkdir(parents=True, exist_ok=True)
            write_scribble_xml(
                scribble_lines,
                root / "scribble_annotation/pascal_2012" / f"{name}.xml",
                scribble_names,
                f"{name}.{image_format}",
                mask.shape,
            )
        elif scribbles == "png":
            (root / "SparseLabels/scribble").mkdir(parents=True, exist_ok=True)
            _write_label(
                draw_scribbles(scribble_lines, mask.shape),
                root / "SparseLabels/scribble" / f"{name}.png",
                False,
            )
    if points == "json":
        (root / "whats_the_point").mkdir(exist_ok=True)
        write_points_json(clicks, root / "whats_the_point/voc_whats_the_point.json")
        write_points_json(
            background_clicks, root / "whats_the_point/voc_whats_the_point_bg_from_scribbles.json"
        )
    splits = {"train_aug": names, "train": names[: max(1, n // 2)], "val": names[n // 2 :]}
    for split, split_names in splits.items():
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{s}\n" for s in split_names))
    if class_names is not None:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in class_names))
    if labels_npy:
        np.save(root / "cls_labels.npy", labels)
    return root


def coco_name(split: str, index: int) -> str:
    """The COCO-style name of fake image ``index`` of ``split``."""
    return f"COCO_{split}2014_{index:012d}"


def write_fake_coco(root: str | Path, n: int = 2, size: int = 40) -> Path:
    """Write ``n`` train and ``n`` val images in the COCO-2014 mask-PNG layout under ``root`` and return it.

    Masks follow :func:`fake_mask` with 80 classes (image 0 has classes 1 and 3; image ``n - 1`` of val
    uses class 80 through ``index`` = 79).
    """
    root = Path(root)
    for split in ("train", "val"):
        (root / f"{split}2014").mkdir(parents=True, exist_ok=True)
        (root / "SegmentationClass" / f"{split}2014").mkdir(parents=True, exist_ok=True)
        indices = [*range(n - 1), 79]
        names = [coco_name(split, i) for i in indices]
        for index, name in zip(indices, names, strict=True):
            mask = fake_mask(index, size, 80)
            Image.fromarray(fake_image(mask)).save(root / f"{split}2014" / f"{name}.jpg", quality=95)
            _write_label(mask, root / "SegmentationClass" / f"{split}2014" / f"{name}.png", palette=False)
        (root / f"{split}_id.txt").write_text("".join(f"{s}\n" for s in names))
    return root
