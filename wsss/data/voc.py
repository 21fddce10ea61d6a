"""PASCAL VOC 2012 + SBD (and any dataset in its folder layout) with image, point, scribble or dense labels.

Layout under ``root`` (the ``VOC2012`` folder)::

    JPEGImages/<name>.jpg (or .png)
    SegmentationClassAug/<name>.png        class-index PNG (palette or grey), 255 = ignore
                                            (SegmentationClass/ is used when SegmentationClassAug/ is absent)
    ImageSets/Segmentation/<split>.txt     one name per line (train_aug, train, val, ...)
    cls_labels.npy                          optional: np.save of a dict name -> multi-hot (K,)
    classes.txt                             optional: one class name per line, line 0 = background
    SparseLabels/{point,scribble}/<name>.png                     optional rasterised sparse labels, or
    whats_the_point/voc_whats_the_point.json                     clicks (+ ..._bg_from_scribbles.json)
    scribble_annotation/pascal_2012/<name>.xml                   ScribbleSup scribbles

The SASFormer / TEL / GatedCRFLoss layout is read as well: ``voc_whats_the_point.json``,
``voc_whats_the_point_bg_from_scribbles.json`` and ``voc_scribbles.zip`` (one ``<name>.xml`` per image) in
the folder that holds ``VOCdevkit/`` (``root/../..``), used when ``root`` has no sparse labels of its own;
without ``train_aug.txt``, ``train_aug`` is derived from ``SBD/{train,val}.txt`` there as SASFormer does.

Image-level labels come from ``cls_labels.npy`` when present, else from the classes in the mask. Masks are
needed for every image only to train with ``supervision="dense"``; otherwise a split whose images have masks
only in part (IRN's layout: the devkit ``SegmentationClass`` covers ``train`` and ``val``, not the SBD part of
``train_aug``) gives the others an all-ignore (255) mask, so evaluation uses the masks that exist and
image-level labels come from ``cls_labels.npy``.
"""

import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsss.data.base import WSSSDataModule, WSSSDataset, drop_missing, image_labels
from wsss.data.io import (
    IGNORE_INDEX,
    DataFileError,
    check_label_ids,
    check_same_size,
    image_size,
    read_label_png,
    read_rgb,
)
from wsss.data.sparse_labels import (
    SCRIBBLESUP_VOC_NAMES,
    clicks_inside,
    draw_points,
    draw_scribbles,
    read_points_json,
    read_scribble_xml,
)
from wsss.data.transforms import SampleTransform

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)
POINTS_JSON = "whats_the_point/voc_whats_the_point.json"
BACKGROUND_POINTS_JSON = "whats_the_point/voc_whats_the_point_bg_from_scribbles.json"
SCRIBBLE_XML_DIR = "scribble_annotation/pascal_2012"
#: the SASFormer / TEL file names, in the folder that holds VOCdevkit/
SASFORMER_POINTS_JSON = "voc_whats_the_point.json"
SASFORMER_BACKGROUND_POINTS_JSON = "voc_whats_the_point_bg_from_scribbles.json"
SASFORMER_SCRIBBLES_ZIP = "voc_scribbles.zip"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparseSource:
    """Where one image's sparse labels come from: a rasterised PNG, clicks, or a ScribbleSup XML."""

    kind: Literal["png", "points", "scribble_xml", "scribble_zip"]
    path: Path
    member: str = ""
    points: tuple[dict, ...] = ()
    class_names: tuple[str, ...] = ()
    #: whether the clicks file lists the image (background clicks may come from another file)
    listed: bool = True

    @property
    def origin(self) -> str:
        """The file (and, for a shared JSON, the entry) named in errors."""
        if self.kind == "points":
            return f"{self.path} (clicks of this image)"
        return f"{self.path}:{self.member}" if self.kind == "scribble_zip" else str(self.path)

    def click_problem(self, shape: tuple[int, int] | None) -> tuple[str, str] | None:
        """(clicks file, reason) when no click lies inside the image of (H, W) ``shape``."""
        if not self.listed or not self.points:
            return str(self.path), "no clicks"
        if shape is None or clicks_inside(list(self.points), shape):
            return None  # an unreadable image is reported when it is read
        return str(self.path), f"all {len(self.points)} clicks lie outside its {shape[1]}x{shape[0]} image"

    def render(self, shape: tuple[int, int]) -> np.ndarray:
        """The (H, W) uint8 sparse label map, 255 = unlabeled; clicks are discs of diameter 3."""
        if self.kind == "png":
            return read_label_png(self.path)
        if self.kind == "points":
            return draw_points(list(self.points), shape, diameter=3)
        try:
            data = self._zip_member() if self.kind == "scribble_zip" else None
            scribbles = read_scribble_xml(self.origin, self.class_names, data)
        except ValueError as err:
            raise DataFileError(self.origin, str(err).removeprefix(f"{self.origin}: ")) from err
        return draw_scribbles(scribbles, shape, width=3)

    def _zip_member(self) -> bytes:
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except KeyError as err:
            raise DataFileError(self.path, f"has no {self.member} (the scribbles of this image)") from err
        except (OSError, zipfile.BadZipFile) as err:
            raise DataFileError(self.path, f"cannot read the scribbles archive ({err})") from err


@dataclass(frozen=True)
class SegmentationRecord:
    """The files of one sample; ``cls_labels`` is set when a labels file provides them."""

    name: str
    image: Path
    mask: Path | None = None
    sparse: SparseSource | None = None
    cls_labels: np.ndarray | None = field(default=None, compare=False)


class SegmentationFolderDataset(WSSSDataset):
    """RGB images with optional class-index masks, image-level labels and sparse labels."""

    def __init__(
        self,
        records: list[SegmentationRecord],
        num_classes: int,
        transform: SampleTransform,
        source: str,
        skip_bad_samples: bool = False,
        skipped: list[tuple[str, str]] | None = None,
        with_masks: bool | None = None,
    ) -> None:
        super().__init__([r.name for r in records], transform, source, skip_bad_samples, skipped)
        self.records = records
        self.num_classes = num_classes
        #: every sample has a ``mask``: its file, or all-ignore (255) when the record has none
        self.with_masks = any(r.mask is not None for r in records) if with_masks is None else with_masks

    def load(self, index: int) -> dict[str, Any]:
        """Read the image, its mask and sparse labels (checked against the image size and class list)."""
        record = self.records[index]
        image = read_rgb(record.image)
        raw: dict[str, Any] = {"image": image.astype(np.float32), "name": record.name}
        if record.mask is not None:
            mask = read_label_png(record.mask)
            check_same_size(mask, image.shape, record.mask, record.image)
            check_label_ids(mask, self.num_classes, record.mask)
            raw["mask"] = mask
        elif self.with_masks:
            raw["mask"] = np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        raw["cls_labels"] = (
            record.cls_labels
            if record.cls_labels is not None
            else image_labels(raw["mask"], self.num_classes)
        )
        if record.sparse is not None:
            sparse = record.sparse.render(image.shape[:2])
            check_same_size(sparse, image.shape, record.sparse.origin, record.image)
            check_label_ids(sparse, self.num_classes, record.sparse.origin)
            raw["sparse"] = sparse
        return raw


def report_clicks_outside(
    records: list[SegmentationRecord], shapes: dict[str, tuple[int, int] | None]
) -> None:
    """Log, per image, how many of its clicks lie outside it (only a disc's edge can reach the image)."""
    outside = []
    for record in records:
        shape = shapes[record.name]
        points = list(record.sparse.points)
        if shape is not None and len(inside := clicks_inside(points, shape)) < len(points):
            outside.append(f"{record.name}: {len(points) - len(inside)} of {len(points)}")
    if outside:
        log.warning(
            "%s: clicks outside their image, in %d image(s): %s",
            records[0].sparse.path, len(outside), ", ".join(outside),
        )


def read_split_names(path: Path) -> list[str]:
    """Names listed one per line; the first token's stem is kept (``/JPEGImages/x.jpg /Seg/x.png`` works)."""
    if not path.is_file():
        folder = path.parent
        available = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
        raise FileNotFoundError(f"split list {path} not found; available in {folder}: {available}")
    return [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]


def read_class_names(path: Path) -> list[str]:
    """Class names one per line, line 0 the background."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(
            f"{path}: expected at least 2 distinct class names (line 0 = background), got {names}"
        )
    return names


def read_labels_file(path: Path, num_classes: int) -> dict[Any, np.ndarray]:
    """Load a ``cls_labels.npy`` dict name -> multi-hot (K,), checking every vector's length."""
    try:
        labels = np.load(path, allow_pickle=True).item()
    except (OSError, ValueError, EOFError) as err:
        raise DataFileError(path, f"cannot load image-level labels ({err})") from err
    if not isinstance(labels, dict):
        raise DataFileError(path, "expected np.save of a dict name -> multi-hot vector")
    for name, vector in labels.items():
        if np.asarray(vector).shape != (num_classes,):
            raise DataFileError(
                path, f"labels of {name!r} have shape {np.asarray(vector).shape}, expected ({num_classes},)"
            )
    return labels


def lookup_labels(labels: dict[Any, np.ndarray], name: str) -> np.ndarray | None:
    """Labels of ``name``, keyed by the name, by the file name (``<name>.jpg``, as MCTformer's COCO labels) or
    as IRN does by an integer without the underscore (2007_000032 -> 2007000032)."""
    for key in (name, f"{name}.jpg"):
        if key in labels:
            return np.asarray(labels[key], dtype=np.float32)
    digits = name.replace("_", "")
    if digits.isdigit() and int(digits) in labels:
        return np.asarray(labels[int(digits)], dtype=np.float32)
    return None


class VOCDataModule(WSSSDataModule):
    """PASCAL VOC 2012 + SBD, or any folder in its layout with its own ``classes.txt``.

    Splits are the names of ``ImageSets/Segmentation/<split>.txt``. Point and scribble labels are read
    for the training split only. ImageNet mean/std in the 0..255 scale.
    """

    obtain_hint = (
        "Expected the VOC2012 folder (JPEGImages/, SegmentationClassAug/, ImageSets/Segmentation/<split>.txt"
        "): "
        "PASCAL VOC 2012 with the SBD augmented masks (SegmentationClassAug), or synthetic data in this "
        "layout from `wsss synth voc --root <dir>`."
    )
    #: the class list (index 0 background) used when the root has no classes.txt
    default_classes: tuple[str, ...] = VOC_CLASSES

    def __init__(
        self,
        root: str,
        train_split: str = "train_aug",
        val_split: str = "val",
        test_split: str = "val",
        predict_split: str = "train_aug",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            predict_split=predict_split,
            **kwargs,
        )
        classes_file = self.root / "classes.txt"
        self.custom_classes = classes_file.is_file()
        self.class_names = (
            read_class_names(classes_file) if self.custom_classes else list(self.default_classes)
        )
        self.num_classes = len(self.class_names) - 1
        self.in_channels = 3
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def split_file(self, split: str) -> Path:
        """The list of names of ``split``."""
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def image_dir(self, split: str) -> Path:
        """The folder of the images of ``split``."""
        return self.root / "JPEGImages"

    def gt_mask_dir(self, split: str) -> Path | None:
        """The folder of the ground-truth masks of ``split``, None when there is none."""
        for folder in ("SegmentationClassAug", "SegmentationClass"):
            if (self.root / folder).is_dir():
                return self.root / folder
        return None

    def labels_file(self) -> Path:
        """The optional image-level labels file."""
        return self.root / "cls_labels.npy"

    def make_dataset(self, split: str, transform: SampleTransform, train: bool) -> SegmentationFolderDataset:
        """Resolve every sample's files, labels and sparse source, then check that they exist."""
        list_file = self.split_file(split)
        names = self.split_names(split)
        if not names:
            raise ValueError(f"{list_file}: the split {split!r} lists no images")
        image_dir = self.image_dir(split)
        images = [self._image_path(image_dir, name) for name in names]
        masks = self._mask_paths(split, names, train)
        labels = self._image_labels(split, names, masks)  # None where cls_labels.npy lacks the name
        sparse = self._sparse_sources(names) if train and self.supervision in ("point", "scribble") else None
        records = [
            SegmentationRecord(
                name,
                images[i],
                None if masks is None else masks[i],
                None if sparse is None else sparse[i],
                None if labels is None else labels[i],
            )
            for i, name in enumerate(names)
        ]
        records, skipped = drop_missing(
            records,
            lambda r: (r.image, r.mask, r.sparse.path if r.sparse else None),
            self.skip_bad_samples,
            str(list_file),
        )
        if labels is not None:
            labels_file = str(self.labels_file())
            records, unlabeled = self._drop_bad(
                records,
                lambda r: None if r.cls_labels is not None else (labels_file, "no labels"),
                f"{labels_file}: no labels for {{count}} image(s) of split {split!r}, first: {{name}}",
            )
            skipped += unlabeled
        if sparse is not None and sparse[0].kind == "points":
            shapes = {record.name: image_size(record.image) for record in records}
            records, unclicked = self._drop_bad(
                records,
                lambda r: r.sparse.click_problem(shapes[r.name]),
                f"{sparse[0].path}: {{count}} training image(s) have no click inside them, first: {{name}} "
                "({reason})",
            )
            skipped += unclicked
            report_clicks_outside(records, shapes)
        return SegmentationFolderDataset(
            records, self.num_classes, transform, str(list_file), self.skip_bad_samples, skipped,
            with_masks=masks is not None,
        )

    def split_names(self, split: str) -> list[str]:
        """The names of ``split``. Without ``train_aug.txt`` but with SBD next to ``VOCdevkit/`` (SASFormer's
        layout: ``SBD/{train,val}.txt``), ``train_aug`` is SBD train + val + VOC train - VOC val, sorted."""
        list_file = self.split_file(split)
        sbd = self.sasformer_dir() / "SBD"
        if split != "train_aug" or list_file.is_file() or not (sbd / "train.txt").is_file():
            return read_split_names(list_file)
        voc = list_file.parent
        names = {n for f in (sbd / "train.txt", sbd / "val.txt", voc / "train.txt") if f.is_file()
                 for n in read_split_names(f)}
        names -= set(read_split_names(voc / "val.txt"))
        log.info("train_aug: %d images from %s and %s (no %s)", len(names), sbd, voc / "train.txt", list_file)
        return sorted(names)

    @staticmethod
    def _image_path(image_dir: Path, name: str) -> Path:
        jpg = image_dir / f"{name}.jpg"
        png = image_dir / f"{name}.png"
        return png if not jpg.is_file() and png.is_file() else jpg

    def _mask_paths(self, split: str, names: list[str], train: bool) -> list[Path | None] | None:
        """Every name's mask; None for the split when none exists. Only dense training needs them all:
        otherwise a missing mask is None (an all-ignore mask)."""
        folder = self.mask_dir if train and self.mask_dir is not None else self.gt_mask_dir(split)
        present = set(os.listdir(folder)) if folder is not None else set()
        if not any(f"{name}.png" in present for name in names):
            if train and self.supervision == "dense":
                raise FileNotFoundError(
                    f"supervision='dense' needs masks for split {split!r}, found none in "
                    f"{folder if folder is not None else self.root / 'SegmentationClassAug'}"
                )
            return None
        if train and self.supervision == "dense":
            return [folder / f"{name}.png" for name in names]  # drop_missing names the absent ones
        lacking = sum(f"{name}.png" not in present for name in names)
        if lacking:
            log.info(
                "split %r: %d of %d image(s) have no mask in %s; they are not scored (all-ignore mask)",
                split, lacking, len(names), folder,
            )
        return [folder / f"{name}.png" if f"{name}.png" in present else None for name in names]

    def _image_labels(
        self, split: str, names: list[str], masks: list[Path | None] | None
    ) -> list[np.ndarray] | None:
        path = self.labels_file()
        if not path.is_file():
            unlabelled = names if masks is None else [n for n, m in zip(names, masks, strict=True) if not m]
            if unlabelled:
                raise FileNotFoundError(
                    f"split {split!r} has no image-level labels for {len(unlabelled)} image(s) (first: "
                    f"{unlabelled[0]!r}): neither {path} nor their masks in "
                    f"{self.gt_mask_dir(split) or self.root / 'SegmentationClassAug'}; put IRN's "
                    "cls_labels.npy there"
                )
            return None
        table = read_labels_file(path, self.num_classes)
        return [lookup_labels(table, name) for name in names]

    def _drop_bad(
        self,
        records: list[SegmentationRecord],
        problem: Callable[[SegmentationRecord], tuple[str, str] | None],
        message: str,
    ) -> tuple[list[SegmentationRecord], list[tuple[str, str]]]:
        """Drop the records with a ``problem`` (path, reason), returned as (path, "name: reason"), or raise
        ``message`` without ``skip_bad_samples`` (``{count}``; ``{name}``, ``{reason}`` of the first one)."""
        kept, bad = [], []
        for record in records:
            found = problem(record)
            if found is None:
                kept.append(record)
            else:
                bad.append((record.name, *found))
        if bad and not self.skip_bad_samples:
            name, _, reason = bad[0]
            raise ValueError(
                message.format(count=len(bad), name=repr(name), reason=reason)
                + " (set skip_bad_samples=True to skip them)"
            )
        return kept, [(path, f"{name}: {reason}") for name, path, reason in bad]

    def sasformer_dir(self) -> Path:
        """The folder that holds ``VOCdevkit/`` (``root/../..``), where SASFormer / TEL keep sparse labels."""
        return self.root.resolve().parent.parent

    def _sparse_sources(self, names: list[str]) -> list[SparseSource]:
        kind = self.supervision
        png_dir = self.root / "SparseLabels" / kind
        if png_dir.is_dir():
            return [SparseSource("png", png_dir / f"{name}.png") for name in names]
        if kind == "scribble":
            xml_dir = self.root / SCRIBBLE_XML_DIR
            archive = self.sasformer_dir() / SASFORMER_SCRIBBLES_ZIP
            class_names = tuple(self.class_names) if self.custom_classes else SCRIBBLESUP_VOC_NAMES
            if xml_dir.is_dir():
                return [
                    SparseSource("scribble_xml", xml_dir / f"{name}.xml", class_names=class_names)
                    for name in names
                ]
            if archive.is_file():
                try:
                    with zipfile.ZipFile(archive) as opened:
                        members = set(opened.namelist())
                except (OSError, zipfile.BadZipFile) as err:
                    raise DataFileError(archive, f"cannot read the scribbles archive ({err})") from err
                missing = [name for name in names if f"{name}.xml" not in members]
                if missing:
                    raise ValueError(
                        f"{archive}: no scribbles for {len(missing)} training image(s), first: {missing[0]!r}"
                    )
                return [
                    SparseSource("scribble_zip", archive, f"{name}.xml", class_names=class_names)
                    for name in names
                ]
            raise FileNotFoundError(
                f"scribble labels not found: none of {png_dir}, {xml_dir} (ScribbleSup's XML files) or "
                f"{archive} (the SASFormer / TEL layout) exists"
            )
        json_path = self.root / POINTS_JSON
        bg_path = self.root / BACKGROUND_POINTS_JSON
        if not json_path.is_file() and (self.sasformer_dir() / SASFORMER_POINTS_JSON).is_file():
            json_path = self.sasformer_dir() / SASFORMER_POINTS_JSON
            bg_path = self.sasformer_dir() / SASFORMER_BACKGROUND_POINTS_JSON
        if not json_path.is_file():
            raise FileNotFoundError(
                f"point labels not found: none of {png_dir}, {json_path} or "
                f"{self.sasformer_dir() / SASFORMER_POINTS_JSON} (the SASFormer / TEL layout) exists"
            )
        clicks = read_points_json(json_path)
        bg_clicks = read_points_json(bg_path) if bg_path.is_file() else {}
        # background clicks first, so a foreground disc wins where two overlap
        return [
            SparseSource(
                "points",
                json_path,
                points=tuple(bg_clicks.get(name, [])) + tuple(clicks.get(name, [])),
                listed=name in clicks,
            )
            for name in names
        ]
