"""CUB-200-2011 for weakly-supervised object localisation: one class label and one box per image.

Layout under ``root`` (the ``CUB_200_2011`` folder, or its parent)::

    images/<class dir>/<file>.jpg
    images.txt              <id> <relative path under images/>
    image_class_labels.txt  <id> <class id, 1-based>
    bounding_boxes.txt      <id> <x> <y> <w> <h>   (pixels)
    train_test_split.txt    <id> <1 = train, 0 = test>
    classes.txt             <class id> <name>

Splits are "train" and "test". A sample has ``image``, ``label`` (int64, 0-based), ``cls_labels`` (one-hot
(200,)) and ``name`` (the file stem); eval samples also have ``boxes`` (1, 4) xyxy in pixels of the
resized image and ``size``, the original (H, W), to map predicted boxes back. Training samples carry no
boxes: a random crop may cut the box away, and a variable box
count would not collate. ``class_names`` is ["background", 200 bird names].
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsss.data.base import WSSSDataModule, WSSSDataset, drop_missing
from wsss.data.io import read_rgb
from wsss.data.transforms import SampleTransform, build_transform
from wsss.data.voc import IMAGENET_MEAN, IMAGENET_STD

CUB_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "bounding_boxes.txt",
    "train_test_split.txt",
    "classes.txt",
)


@dataclass(frozen=True)
class CUBRecord:
    """One image: its path, 0-based class and xyxy box in original pixels."""

    name: str
    image: Path
    label: int
    box: tuple[float, float, float, float]


def read_id_table(path: Path, columns: int) -> dict[int, list[str]]:
    """Read ``<id> <value>...`` lines into id -> the ``columns`` values (the last one may contain spaces)."""
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=columns)
        if len(parts) != columns + 1 or not parts[0].isdigit():
            raise ValueError(f"{path}:{number}: expected '<id>' and {columns} value(s), got {line!r}")
        table[int(parts[0])] = parts[1:]
    return table


def class_display_name(raw: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black_footed_Albatross``."""
    prefix, _, rest = raw.partition(".")
    return rest if prefix.isdigit() and rest else raw


class CUBDataset(WSSSDataset):
    """CUB images with their class and box."""

    def __init__(
        self,
        records: list[CUBRecord],
        num_classes: int,
        transform: SampleTransform,
        source: str,
        with_boxes: bool,
        skip_bad_samples: bool = False,
        skipped: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__([r.name for r in records], transform, source, skip_bad_samples, skipped)
        self.records = records
        self.num_classes = num_classes
        self.with_boxes = with_boxes

    def load(self, index: int) -> dict[str, Any]:
        """Read the image; one-hot ``cls_labels``, ``label`` and (for eval) the box clipped to the image."""
        record = self.records[index]
        image = read_rgb(record.image)
        one_hot = np.zeros(self.num_classes, dtype=np.float32)
        one_hot[record.label] = 1.0
        raw: dict[str, Any] = {
            "image": image.astype(np.float32),
            "name": record.name,
            "label": record.label,
            "cls_labels": one_hot,
        }
        if self.with_boxes:
            height, width = image.shape[:2]
            x0, y0, x1, y1 = record.box
            raw["boxes"] = np.array([[max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)]], np.float32)
            raw["size"] = np.array([height, width], np.int64)
        return raw


class CUBDataModule(WSSSDataModule):
    """CUB-200-2011 (WSOL). Train: resize to ``resize_size`` square, random crop ``crop_size``, flip.
    Val/test/predict: resize to ``crop_size`` square. ImageNet mean/std in the 0..255 scale."""

    supervisions = ("image",)
    obtain_hint = (
        "Expected the CUB_200_2011 folder (images/, images.txt, image_class_labels.txt, bounding_boxes.txt, "
        "train_test_split.txt, classes.txt) of the Caltech-UCSD Birds-200-2011 archive."
    )

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        eval_batch_size: int = 32,
        crop_size: int = 224,
        resize_size: int = 256,
        train_split: str = "train",
        val_split: str = "test",
        test_split: str = "test",
        predict_split: str = "test",
        **kwargs: Any,
    ) -> None:
        nested = Path(root) / "CUB_200_2011"
        super().__init__(
            str(nested) if nested.is_dir() else root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            crop_size=crop_size,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            predict_split=predict_split,
            **kwargs,
        )
        self.resize_size = resize_size
        for file in CUB_FILES:
            if not (self.root / file).is_file():
                raise FileNotFoundError(f"{self.root / file} not found. {self.obtain_hint}")
        classes = read_id_table(self.root / "classes.txt", 1)
        self.class_names = ["background"] + [class_display_name(classes[i][0]) for i in sorted(classes)]
        self.num_classes = len(classes)
        self.in_channels = 3
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def train_transform(self) -> SampleTransform:
        """Resize to ``resize_size`` square, random crop ``crop_size``, random flip."""
        return build_transform(
            self.mean, self.std, resize=self.resize_size, crop_size=self.crop_size, hflip=self.hflip
        )

    def eval_transform(self) -> SampleTransform:
        """Resize to ``crop_size`` square; boxes move with the image."""
        return build_transform(self.mean, self.std, resize=self.crop_size, with_boxes=True)

    def make_dataset(self, split: str, transform: SampleTransform, train: bool) -> CUBDataset:
        """The images whose ``train_test_split.txt`` flag matches ``split`` ("train" or "test")."""
        if split not in ("train", "test"):
            raise ValueError(f"CUB splits are 'train' and 'test', got {split!r}")
        paths = read_id_table(self.root / "images.txt", 1)
        labels = read_id_table(self.root / "image_class_labels.txt", 1)
        boxes = read_id_table(self.root / "bounding_boxes.txt", 4)
        is_train = read_id_table(self.root / "train_test_split.txt", 1)
        records = []
        for image_id in sorted(paths):
            if image_id not in labels or image_id not in boxes or image_id not in is_train:
                raise ValueError(f"{self.root}: image id {image_id} lacks a class, a box or a split flag")
            if (is_train[image_id][0] == "1") != (split == "train"):
                continue
            label = int(labels[image_id][0])
            if not 1 <= label <= self.num_classes:
                raise ValueError(
                    f"{self.root / 'image_class_labels.txt'}: class {label} of image {image_id} "
                    f"is outside 1..{self.num_classes}"
                )
            x, y, w, h = (float(v) for v in boxes[image_id])
            path = self.root / "images" / paths[image_id][0]
            records.append(CUBRecord(path.stem, path, label - 1, (x, y, x + w, y + h)))
        source = f"{self.root / 'train_test_split.txt'} ({split})"
        records, skipped = drop_missing(records, lambda r: (r.image,), self.skip_bad_samples, source)
        return CUBDataset(
            records, self.num_classes, transform, source, not train, self.skip_bad_samples, skipped
        )
