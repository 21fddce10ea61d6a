"""A tiny CUB-200-2011 layout: ``num_classes`` classes x ``per_class`` images, one known box each."""

from pathlib import Path

import numpy as np
from PIL import Image

#: every fake image is (HEIGHT, WIDTH) with the box x, y, w, h
HEIGHT, WIDTH = 40, 60
BOX_XYWH = (6.0, 8.0, 30.0, 20.0)


def write_fake_cub(
    root: str | Path, num_classes: int = 3, per_class: int = 2, sizes: tuple[tuple[int, int], ...] = ()
) -> Path:
    """Write ``root/CUB_200_2011`` and return that folder.

    Image ids run 1..num_classes*per_class; image ``k`` of class ``c`` (1-based) is
    ``images/00c.Bird_c/Bird_c_000k.jpg``; odd ids are training images, even ids test images. Image ``id``
    is (HEIGHT, WIDTH), or ``sizes[(id - 1) % len(sizes)]`` when ``sizes`` are given (real CUB sizes).
    """
    cub = Path(root) / "CUB_200_2011"
    images, labels, boxes, split, classes = [], [], [], [], []
    image_id = 0
    for c in range(1, num_classes + 1):
        folder = f"{c:03d}.Bird_{c}"
        (cub / "images" / folder).mkdir(parents=True, exist_ok=True)
        classes.append(f"{c} {folder}")
        for k in range(per_class):
            image_id += 1
            relpath = f"{folder}/Bird_{c}_{k:04d}.jpg"
            height, width = sizes[(image_id - 1) % len(sizes)] if sizes else (HEIGHT, WIDTH)
            pixels = np.full((height, width, 3), 40 * c, np.uint8)
            Image.fromarray(pixels).save(cub / "images" / relpath)
            images.append(f"{image_id} {relpath}")
            labels.append(f"{image_id} {c}")
            boxes.append(f"{image_id} " + " ".join(str(v) for v in BOX_XYWH))
            split.append(f"{image_id} {image_id % 2}")
    for file, lines in {
        "images.txt": images,
        "image_class_labels.txt": labels,
        "bounding_boxes.txt": boxes,
        "train_test_split.txt": split,
        "classes.txt": classes,
    }.items():
        (cub / file).write_text("\n".join(lines) + "\n")
    return cub
