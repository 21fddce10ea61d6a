"""The VOC layouts users actually have, at real image sizes, with hand-known masks and sparse labels.

``write_devkit_voc(base)`` writes, under ``base`` (the folder that holds ``VOCdevkit/``):

- ``VOCdevkit/VOC2012/JPEGImages/<name>.jpg`` of the real sizes of :data:`REAL_SIZES` in turn;
- IRN / CRT / SIPE's labels: the devkit's ``SegmentationClass/<name>.png`` palette masks for the ``train``
  and ``val`` images only, ``ImageSets/Segmentation/{train,val,train_aug}.txt`` (``train_aug`` = ``train``
  + SBD images without a devkit mask) and IRN's ``cls_labels.npy`` (integer keys, every image);
- SASFormer / TEL's sparse labels next to ``VOCdevkit/``: ``voc_whats_the_point.json``,
  ``voc_whats_the_point_bg_from_scribbles.json`` and ``voc_scribbles.zip`` (``<name>.xml`` per image, the
  ScribbleSup format with its class names), and SBD's ``SBD/{train,val}.txt`` lists.

Image ``i`` of size (H, W) has a rectangle of class :func:`~tests.data.fake_voc.first_class` over rows
[H // 8, H // 2) and columns [W // 8, W // 2), a bar of :func:`~tests.data.fake_voc.second_class` over rows
[3H // 4, 3H // 4 + 8), the rest background, and an ignore (255) first row.
"""

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.data.fake_voc import VOC_PALETTE, fake_image, first_class, second_class
from wsss.data.sparse_labels import SCRIBBLESUP_VOC_NAMES, write_points_json, write_scribble_xml

#: (H, W) of real VOC / COCO images: 500x375 landscape, 333x500 portrait, 640x426 COCO (W x H)
REAL_SIZES = ((375, 500), (500, 333), (426, 640))
NUM_CLASSES = 20


def real_mask(index: int, height: int, width: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The (H, W) uint8 ground truth of image ``index``."""
    mask = np.zeros((height, width), np.uint8)
    mask[height // 8 : height // 2, width // 8 : width // 2] = first_class(index, num_classes)
    mask[3 * height // 4 : 3 * height // 4 + 8, :] = second_class(index, num_classes)
    mask[0, :] = 255
    return mask


def real_clicks(index: int, height: int, width: int) -> tuple[list[dict], list[dict]]:
    """(one click per object at its centre, one background click), with the `whats_the_point` keys."""
    foreground = [
        {"cls": first_class(index, NUM_CLASSES), "x": 5 * width // 16, "y": 5 * height // 16, "rank": 1},
        {"cls": second_class(index, NUM_CLASSES), "x": width // 2, "y": 3 * height // 4 + 4, "rank": 1},
    ]
    return foreground, [{"cls": 0, "x": width - 10, "y": height // 8 + 2, "rank": 1}]


def real_scribbles(index: int, height: int, width: int) -> list[tuple[int, np.ndarray]]:
    """A scribble along the bar and a background one near the bottom."""
    bar = 3 * height // 4 + 4
    return [
        (second_class(index, NUM_CLASSES), np.array([[8.0, bar], [width - 9.0, bar]])),
        (0, np.array([[8.0, height - 6.0], [width - 9.0, height - 6.0]])),
    ]


def _palette_png(mask: np.ndarray, path: Path) -> None:
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    image.putpalette(VOC_PALETTE)
    image.save(path)


def write_devkit_voc(base: str | Path, n_train: int = 2, n_sbd: int = 2, n_val: int = 2) -> Path:
    """Write the layouts described above under ``base`` and return the ``VOC2012`` folder."""
    base = Path(base)
    root = base / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    names = {
        "train": [f"2007_{i:06d}" for i in range(n_train)],
        "sbd": [f"2008_{i:06d}" for i in range(n_sbd)],
        "val": [f"2009_{i:06d}" for i in range(n_val)],
    }
    labels, clicks, background, scribbles = {}, {}, {}, io.BytesIO()
    with zipfile.ZipFile(scribbles, "w") as archive:
        for index, name in enumerate(names["train"] + names["sbd"] + names["val"]):
            height, width = REAL_SIZES[index % len(REAL_SIZES)]
            mask = real_mask(index, height, width)
            Image.fromarray(fake_image(mask)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            if name not in names["sbd"]:
                _palette_png(mask, root / "SegmentationClass" / f"{name}.png")
            present = np.isin(np.arange(1, NUM_CLASSES + 1), mask).astype(np.float32)
            labels[int(name.replace("_", ""))] = present
            clicks[name], background[name] = real_clicks(index, height, width)
            xml = base / "scribble.xml"
            write_scribble_xml(
                real_scribbles(index, height, width), xml, SCRIBBLESUP_VOC_NAMES, f"{name}.jpg",
                (height, width),
            )
            archive.write(xml, f"{name}.xml")
            xml.unlink()
    (base / "voc_scribbles.zip").write_bytes(scribbles.getvalue())
    write_points_json(clicks, base / "voc_whats_the_point.json")
    write_points_json(background, base / "voc_whats_the_point_bg_from_scribbles.json")
    np.save(root / "cls_labels.npy", labels)
    splits = {"train": names["train"], "val": names["val"], "train_aug": names["train"] + names["sbd"]}
    for split, split_names in splits.items():
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{s}\n" for s in split_names))
    # torchvision's SBDataset lists, as SASFormer reads them; SBD val holds a VOC val image
    (base / "SBD").mkdir()
    (base / "SBD/train.txt").write_text(f"{names['sbd'][0]}\n{names['train'][0]}\n")
    (base / "SBD/val.txt").write_text("".join(f"{s}\n" for s in names["sbd"][1:] + names["val"][:1]))
    return root
