"""The base Dataset and DataModule every reader shares: splits, supervision modes, loaders, bad samples.

A sample is a dict: ``image`` float32 (C, H, W) normalised; ``cls_labels`` float32 multi-hot (K,) over the
K foreground classes; optional ``mask`` int64 (H, W) with 0 = background, 1..K foreground, 255 = ignore;
optional ``sparse`` int64 (H, W) with 255 = unlabeled; ``name`` str. Readers may add keys (CUB: ``label``,
``boxes``). Every sample of one loader has the same keys, so the default collate stacks them.
"""

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from wsss.data.io import DataFileError
from wsss.data.transforms import SampleTransform, TrainAugment, build_deit_transform, build_transform
from wsss.pseudo.io import check_mask_folder

log = logging.getLogger(__name__)

Supervision = Literal["image", "point", "scribble", "dense"]
Role = Literal["train", "val", "test", "predict"]
Record = TypeVar("Record")
STAGE_ROLES: dict[str, tuple[Role, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}


def image_labels(mask: np.ndarray, num_classes: int, min_fraction: float = 0.0) -> np.ndarray:
    """Multi-hot (K,) float32 of the foreground classes 1..K present in a label map.

    With ``min_fraction`` = 0 a class is present when it has any pixel; otherwise when
    count / mask.size >= ``min_fraction`` (the denominator counts every pixel, ignored ones included).
    """
    counts = np.bincount(np.asarray(mask, dtype=np.int64).ravel(), minlength=256)[1 : num_classes + 1]
    present = counts / mask.size >= min_fraction if min_fraction > 0 else counts > 0
    return present.astype(np.float32)


def describe_error(err: DataFileError | FileNotFoundError) -> tuple[str, str]:
    """The (path, reason) of a data-file error, for the skipped-samples report."""
    if isinstance(err, DataFileError):
        return err.path, err.reason
    return str(err.filename), err.strerror or str(err)


def drop_missing(
    records: list[Record],
    required: Callable[[Record], Iterable[Path | None]],
    skip: bool,
    source: str,
) -> tuple[list[Record], list[tuple[str, str]]]:
    """Keep the records whose required files all exist.

    Without ``skip`` a missing file raises ``FileNotFoundError`` naming it (and how many are missing);
    with ``skip`` the incomplete records are dropped and returned as (path, "file not found").
    """
    kept, missing = [], []
    for record in records:
        absent = [str(path) for path in required(record) if path is not None and not path.is_file()]
        if absent:
            missing.append((absent[0], "file not found"))
        else:
            kept.append(record)
    if missing and not skip:
        raise FileNotFoundError(
            f"{source}: {len(missing)} sample(s) lack a file, first: {missing[0][0]} "
            "(set skip_bad_samples=True to skip them)"
        )
    return kept, missing


class WSSSDataset(Dataset, ABC):
    """Named samples read by :meth:`load` and passed through a :class:`SampleTransform`.

    With ``skip_bad_samples`` a sample whose files are missing or unreadable is logged, recorded in
    ``skipped`` as (path, reason) and replaced by the next readable one; otherwise the error propagates.
    """

    def __init__(
        self,
        names: list[str],
        transform: SampleTransform,
        source: str,
        skip_bad_samples: bool = False,
        skipped: list[tuple[str, str]] | None = None,
    ) -> None:
        if not names:
            raise ValueError(f"{source}: the split has no samples")
        self.names = names
        self.transform = transform
        self.source = source
        self.skip_bad_samples = skip_bad_samples
        self.skipped: list[tuple[str, str]] = list(skipped or [])
        self.filled: dict[str, int] = {}
        self._bad: set[int] = set()
        self._seeded_pid: int | None = None

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def load(self, index: int) -> dict[str, Any]:
        """Raw sample ``index``: ``image`` (H, W, C) float32 in the raw pixel scale, optional ``mask``,
        ``sparse`` (H, W) uint8 and ``boxes`` (N, 4), and the other keys (``name``, ``cls_labels``, ...)."""

    def note_filled(self, path: str | Path, count: int) -> None:
        """Record that ``count`` invalid (NaN, infinite or nodata) pixels of ``path`` were filled; logged the
        first time in each process (a DataLoader worker logs its own)."""
        if str(path) not in self.filled:
            log.warning("%s: filled %d NaN, infinite or nodata pixel(s)", path, count)
        self.filled[str(path)] = count

    def finish(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Complete a transformed sample (readers whose labels depend on the crop override this)."""
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.source}: sample {index} of {len(self)}")  # also ends a for loop
        index %= len(self)
        pid = os.getpid()
        if self._seeded_pid != pid:  # one seed per process: torch's, which seed_everything and workers set
            self.transform.reseed(torch.initial_seed() % 2**32)
            self._seeded_pid = pid
        for offset in range(len(self)):
            current = (index + offset) % len(self)
            if current in self._bad:
                continue
            try:
                return self._read(current)
            except (DataFileError, FileNotFoundError) as err:
                if not self.skip_bad_samples:
                    raise
                self._bad.add(current)
                self.skipped.append(describe_error(err))
                log.warning("skipping sample %r: %s", self.names[current], err)
        raise ValueError(f"{self.source}: no readable sample left; skipped: {self.skipped}")

    def _read(self, index: int) -> dict[str, Any]:
        raw = self.load(index)
        arrays = {key: raw.pop(key) for key in ("image", "mask", "sparse", "boxes") if key in raw}
        sample: dict[str, Any] = self.transform(**arrays)
        for key, value in raw.items():
            sample[key] = value if isinstance(value, str) else torch.tensor(value)
        return self.finish(sample)


class WSSSDataModule(L.LightningDataModule, ABC):
    """Base DataModule: splits by name, supervision mode, train/eval transforms and loaders.

    Train loader (``train_augment="scale_crop"``): a random brightness shift of the raw 8-bit image when
    ``brightness_shift`` > 0 (SASFormer), normalise, rescale the long side to a random size in
    ``resize_long`` when given (IRN), random scale in ``scale_range`` (with a random aspect in
    ``aspect_range``, SASFormer), pad (image 0 = mean, labels 255) and random crop to ``crop_size``, a random
    rotation up to ``rotate`` degrees and shift up to ``translate_px`` (the sparse ViT's ``Affine``), random
    horizontal flip (``hflip``); shuffled. ``train_augment="deit"`` is DeiT's
    pipeline instead (RandomResizedCrop to ``crop_size``, flip, RandAugment, RandomErasing; MCTformer's),
    for image-level supervision. Val/test/predict loaders: normalisation only,
    the full image, ``eval_batch_size`` (above 1 only when all images share one size).

    ``supervision``: "image" gives ``cls_labels`` (and ``mask`` where ground truth exists, for evaluation
    only); "point"/"scribble" add ``sparse`` to training samples; "dense" trains on ``mask``, read from
    ``mask_dir/<name>.png`` when given (stage 3 on pseudo-masks; validation still reads the true masks); a
    wsss pseudo-mask folder must be the complete output of one run (its ``manifest.json``).

    ``skip_bad_samples`` skips missing or corrupt samples instead of failing, and logs them (path and
    reason) at the end of setup and at teardown.

    After ``__init__`` a subclass exposes ``num_classes`` (K foreground), ``class_names`` (K + 1, index 0
    background), ``in_channels``, and per-channel ``mean``/``std`` in the raw pixel scale.
    """

    num_classes: int
    class_names: list[str]
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: supervision modes the reader can serve
    supervisions: tuple[str, ...] = ("image", "point", "scribble", "dense")
    #: how to obtain the data, shown when the root is missing
    obtain_hint: str = ""

    def __init__(
        self,
        root: str,
        batch_size: int = 16,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        crop_size: int | None = 224,
        scale_range: tuple[float, float] = (0.5, 1.5),
        resize_long: tuple[int, int] | None = None,
        aspect_range: tuple[float, float] = (1.0, 1.0),
        rotate: float = 0.0,
        translate_px: int = 0,
        hflip: bool = True,
        brightness_shift: int = 0,
        train_augment: TrainAugment = "scale_crop",
        supervision: Supervision = "image",
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        predict_split: str = "train",
        mask_dir: str | None = None,
        skip_bad_samples: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset root {self.root} does not exist or is not a folder. {self.obtain_hint}"
            )
        if supervision not in self.supervisions:
            raise ValueError(
                f"{type(self).__name__} supports supervision {list(self.supervisions)}, got {supervision!r}"
            )
        if train_augment not in ("scale_crop", "deit"):
            raise ValueError(f"train_augment must be 'scale_crop' or 'deit', got {train_augment!r}")
        if train_augment == "deit" and (supervision != "image" or crop_size is None):
            raise ValueError(
                "train_augment='deit' (RandAugment moves the image alone) needs supervision='image' and a "
                f"crop_size, got supervision={supervision!r}, crop_size={crop_size}"
            )
        if mask_dir is not None and supervision != "dense":
            raise ValueError(
                f"mask_dir is only read with supervision='dense', got supervision={supervision!r}"
            )
        if mask_dir is not None and not Path(mask_dir).is_dir():
            raise FileNotFoundError(
                f"mask_dir {mask_dir} does not exist: write pseudo-masks there first (`wsss predict` with "
                "the prediction writer)"
            )
        if mask_dir is not None:
            check_mask_folder(mask_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.crop_size = crop_size
        self.scale_range = tuple(scale_range)
        self.resize_long = None if resize_long is None else tuple(resize_long)
        self.aspect_range = tuple(aspect_range)
        self.rotate = rotate
        self.translate_px = translate_px
        self.hflip = hflip
        self.brightness_shift = brightness_shift
        self.train_augment = train_augment
        self.supervision = supervision
        self.splits: dict[Role, str] = {
            "train": train_split,
            "val": val_split,
            "test": test_split,
            "predict": predict_split,
        }
        self.mask_dir = None if mask_dir is None else Path(mask_dir)
        self.skip_bad_samples = skip_bad_samples
        self.datasets: dict[Role, WSSSDataset] = {}

    @abstractmethod
    def make_dataset(self, split: str, transform: SampleTransform, train: bool) -> WSSSDataset:
        """The dataset of ``split``; ``train`` selects training supervision (sparse labels, ``mask_dir``)."""

    def train_transform(self) -> SampleTransform:
        """The ``train_augment`` pipeline (see the class docstring)."""
        if self.train_augment == "deit":
            return build_deit_transform(self.mean, self.std, self.crop_size)
        return build_transform(
            self.mean, self.std, resize_long=self.resize_long, scale_range=self.scale_range,
            aspect_range=self.aspect_range, crop_size=self.crop_size, rotate=self.rotate,
            translate_px=self.translate_px, hflip=self.hflip, brightness_shift=self.brightness_shift,
        )

    def eval_transform(self) -> SampleTransform:
        """Per-channel normalisation of the full image."""
        return build_transform(self.mean, self.std)

    def dataset(self, role: Role) -> WSSSDataset:
        """The dataset serving ``role`` ("train", "val", "test" or "predict"), built on first use."""
        if role not in self.datasets:
            train = role == "train"
            transform = self.train_transform() if train else self.eval_transform()
            self.datasets[role] = self.make_dataset(self.splits[role], transform, train)
        return self.datasets[role]

    def setup(self, stage: str) -> None:
        """Build the datasets of a Lightning stage ("fit", "validate", "test" or "predict")."""
        for role in STAGE_ROLES[stage]:
            self.dataset(role)
        self.log_skipped()

    def teardown(self, stage: str) -> None:
        """Report the samples skipped so far (with ``num_workers`` > 0 they are logged as they happen)."""
        self.log_skipped()

    @property
    def skipped_samples(self) -> list[tuple[str, str]]:
        """Every (path, reason) skipped by this process's datasets."""
        return [item for dataset in self.datasets.values() for item in dataset.skipped]

    def log_skipped(self) -> None:
        """Log the list of skipped files with their reasons, and the count of filled pixels, if any."""
        skipped = sorted(set(self.skipped_samples))
        if skipped:
            lines = "\n".join(f"  {path}: {reason}" for path, reason in skipped)
            log.warning("%s skipped %d sample file(s):\n%s", type(self).__name__, len(skipped), lines)
        filled = {path: count for dataset in self.datasets.values() for path, count in dataset.filled.items()}
        if filled:
            log.warning(
                "%s filled %d NaN, infinite or nodata pixel(s) in %d file(s) (first: %s)",
                type(self).__name__, sum(filled.values()), len(filled), min(filled),
            )

    def _loader(self, role: Role, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.dataset(role)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else self.evaluation_sampler(dataset),
            num_workers=self.num_workers,
            drop_last=shuffle and len(dataset) > batch_size,
        )

    def evaluation_sampler(self, dataset: WSSSDataset) -> Sampler | None:
        """Under DDP, every evaluated sample on exactly one process; None (Lightning's choice) otherwise.

        Lightning's ``DistributedSampler`` pads the split to a multiple of the process count by repeating
        samples, which biases validation and test metrics; here the processes take one sample fewer or more.
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size < 2 or len(dataset) < trainer.world_size:
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented batches of ``batch_size``; a partial last batch is dropped when len > batch."""
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Full images of ``val_split``, ``eval_batch_size`` at a time."""
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Full images of ``test_split``, ``eval_batch_size`` at a time."""
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Full images of ``predict_split``, ``eval_batch_size`` at a time."""
        return self._loader("predict", self.eval_batch_size, shuffle=False)
