"""IEEE GRSS Data Fusion Contest 2020 (Sentinel-1 + Sentinel-2, 256 x 256 tiles) read through rasterio.

Layout under ``root`` (the official release; an ``lc_0`` folder may exist and is ignored)::

    ROIs0000_<split>/s1_0/ROIs0000_<split>_s1_0_p<i>.tif     2 bands (VV, VH), float32 dB
    ROIs0000_<split>/s2_0/ROIs0000_<split>_s2_0_p<i>.tif     13 bands (B01..B12 with B8A), uint16
    ROIs0000_<split>/dfc_0/ROIs0000_<split>_dfc_0_p<i>.tif   1 band, DFC codes 1..10

``split`` is "validation" (986 tiles; the training set, as in Hanna et al.) or "test" (5,128; evaluation).
Sample names are ``ROIs0000_<split>_p<i>``.

Classes. There is no background: the eight kept DFC classes are the foreground classes 1..8 of the
sample contract (``mask`` id = remapped DFC class + 1), so that 0 keeps meaning "background" across wsss;
id 0 never occurs in DFC ground truth and ``class_names[0]`` is "background(unused)". DFC codes:
1 Forest, 2 Shrubland, 4 Grassland, 5 Wetlands, 6 Croplands, 7 Urban, 9 Barren, 10 Water -> ids 1..8;
3 Savanna, 8 Snow/Ice and 0 (no data) -> 255 (ignored). Masks read from ``mask_dir`` (pseudo-masks) are
already in these ids and are not remapped.

Image-level labels: class c is present iff count_c / (H * W) >= 0.1 on the mask after the transform
(the crop), the denominator counting ignored pixels too (arXiv 2104.00704, as in Hanna et al.).

Normalisation. S1 is clipped to [-25, 0] dB, S2 to [0, 10000] (reflectance x 1e4). ``scaling``
"standardize" then standardises with the SSL4EO-S12 S1 and L1C statistics (constants in ``mean``/``std``,
raw scale); "per_image_max" is the official code's (Hanna et al., ``datasets/dfc.py``): S1 shifted by +25 dB,
then every channel divided by its own maximum in the tile (+1e-5), so ``mean``/``std`` are 0/1.

Invalid pixels (NaN or infinite, checked explicitly, or equal to the file's numeric nodata) are, with
``nan_policy="fill"``, set to their band's mean (0 after normalisation) in every band of that modality,
and marked 255 in the mask (each file's count is logged); with ``nan_policy="error"`` they raise an error
naming the file.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from wsss.data.base import WSSSDataModule, WSSSDataset, drop_missing, image_labels
from wsss.data.io import (
    IGNORE_INDEX,
    DataFileError,
    check_label_ids,
    check_same_size,
    read_geotiff,
    read_label_png,
)
from wsss.data.transforms import SampleTransform

DFC2020_CLASSES = (
    "background(unused)",
    "Forest",
    "Shrubland",
    "Grassland",
    "Wetlands",
    "Croplands",
    "Urban",
    "Barren",
    "Water",
)
#: DFC code (index) -> mask id; 255 = ignored; codes 11..254 are invalid and raise
DFC_CODE_TO_ID = {0: 255, 1: 1, 2: 2, 3: 255, 4: 3, 5: 4, 6: 5, 7: 6, 8: 255, 9: 7, 10: 8, 255: 255}
MIN_LABEL_FRACTION = 0.1
S1_BANDS = ("VV", "VH")
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S1_CLIP = (-25.0, 0.0)
S2_CLIP = (0.0, 10000.0)
# SSL4EO-S12 statistics (Wang et al. 2023), S1 in dB, S2 L1C in reflectance x 1e4
S1_MEAN = (-12.55, -20.19)
S1_STD = (5.26, 5.91)
S2_MEAN = (
    1605.6,
    1390.8,
    1314.9,
    1363.5,
    1549.4,
    2091.7,
    2371.7,
    2299.9,
    2560.3,
    830.1,
    22.1,
    2177.1,
    1524.1,
)
S2_STD = (786.8, 850.3, 875.1, 1138.8, 1122.2, 1161.6, 1274.4, 1248.4, 1345.5, 577.3, 51.2, 1336.1, 1136.5)
Scaling = Literal["standardize", "per_image_max"]
MODALITIES = {  # name -> (band count, clip range, mean, std)
    "s1": (len(S1_BANDS), S1_CLIP, S1_MEAN, S1_STD),
    "s2": (len(S2_BANDS), S2_CLIP, S2_MEAN, S2_STD),
}
BAND_SETS = {"s1s2": ("s1", "s2"), "s2": ("s2",), "s1": ("s1",)}
_LUT = np.full(256, -1, dtype=np.int16)
for _code, _id in DFC_CODE_TO_ID.items():
    _LUT[_code] = _id


def remap_dfc(codes: np.ndarray, path: str | Path) -> np.ndarray:
    """Map a DFC code map (H, W) to mask ids 1..8 / 255 (see the module docstring); bad codes raise."""
    if not np.array_equal(codes, np.round(codes)) or codes.min() < 0 or codes.max() > 255:
        raise DataFileError(path, "DFC codes must be integers 1..10")
    mapped = _LUT[codes.astype(np.uint8)]
    if (mapped < 0).any():
        raise DataFileError(
            path, f"unknown DFC codes {np.unique(codes[mapped < 0]).astype(int).tolist()}, expected 1..10"
        )
    return mapped.astype(np.uint8)


@dataclass(frozen=True)
class DFCRecord:
    """The files of one tile: its modalities in image order, its DFC label and an optional mask PNG."""

    name: str
    modalities: tuple[tuple[str, Path], ...]
    label: Path
    mask_png: Path | None = None


class DFC2020Dataset(WSSSDataset):
    """S1/S2 tiles stacked into one (H, W, C) array, so every geometric transform moves them together."""

    def __init__(
        self,
        records: list[DFCRecord],
        transform: SampleTransform,
        source: str,
        nan_policy: Literal["fill", "error"] = "fill",
        skip_bad_samples: bool = False,
        skipped: list[tuple[str, str]] | None = None,
        scaling: Scaling = "standardize",
    ) -> None:
        super().__init__([r.name for r in records], transform, source, skip_bad_samples, skipped)
        self.records = records
        self.nan_policy = nan_policy
        self.scaling = scaling
        self.num_classes = len(DFC2020_CLASSES) - 1

    def load(self, index: int) -> dict[str, Any]:
        """Read, clip and fill the modalities, and the remapped (or pseudo) mask with invalid pixels = 255."""
        record = self.records[index]
        bands, invalid = [], None
        for modality, path in record.modalities:
            count, (low, high), mean, _ = MODALITIES[modality]
            data, bad = read_geotiff(path, count)
            if invalid is not None:
                check_same_size(data[0], invalid.shape, path, record.modalities[0][1])
            if bad.any():
                if self.nan_policy == "error":
                    raise DataFileError(
                        path,
                        f"{int(bad.sum())} pixel(s) are NaN, infinite or nodata "
                        "(nan_policy='error'; 'fill' fills them and ignores them in the mask)",
                    )
                data = np.where(bad[None], np.asarray(mean, np.float32)[:, None, None], data)
                self.note_filled(path, int(bad.sum()))
            data = np.clip(data, low, high)
            if self.scaling == "per_image_max":
                data = data - low
                data = data / (data.max(axis=(1, 2), keepdims=True) + 1e-5)
            bands.append(data)
            invalid = bad if invalid is None else invalid | bad
        image = np.concatenate(bands).transpose(1, 2, 0)
        if record.mask_png is not None:
            mask = read_label_png(record.mask_png)
            check_label_ids(mask, self.num_classes, record.mask_png)
            check_same_size(mask, image.shape, record.mask_png, record.modalities[0][1])
        else:
            codes, nodata = read_geotiff(record.label, 1)
            check_same_size(codes[0], image.shape, record.label, record.modalities[0][1])
            mask = remap_dfc(np.where(nodata, IGNORE_INDEX, codes[0]), record.label)
        mask[invalid] = IGNORE_INDEX
        return {"image": image, "mask": mask, "name": record.name}

    def finish(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Image-level labels from the transformed (cropped) mask by the 10 % area rule."""
        sample["cls_labels"] = torch.from_numpy(
            image_labels(sample["mask"].numpy(), self.num_classes, MIN_LABEL_FRACTION)
        )
        return sample


class DFC2020DataModule(WSSSDataModule):
    """DFC2020 with ``bands`` "s1s2" (15 channels: S1 then S2), "s2" (13) or "s1" (2).

    ``modality_channels`` gives the channels per modality in image order, e.g. (2, 13). Defaults follow
    Hanna et al.: train on "validation", evaluate on "test", random 224 crops of the 256 tiles, no rescale.
    Supervision "image" (labels by the 10 % rule) or "dense" (the DFC masks, or ``mask_dir`` pseudo-masks).
    """

    supervisions = ("image", "dense")
    obtain_hint = (
        "Expected the DFC2020 release (ROIs0000_validation/ and ROIs0000_test/ with s1_0/, s2_0/, dfc_0/ "
        "GeoTIFFs), "
        "or synthetic data in this layout from `wsss synth dfc2020 --root <dir>`."
    )

    def __init__(
        self,
        root: str,
        bands: Literal["s1s2", "s2", "s1"] = "s1s2",
        nan_policy: Literal["fill", "error"] = "fill",
        scaling: Scaling = "standardize",
        crop_size: int | None = 224,
        scale_range: tuple[float, float] = (1.0, 1.0),
        train_split: str = "validation",
        val_split: str = "test",
        test_split: str = "test",
        predict_split: str = "validation",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root,
            crop_size=crop_size,
            scale_range=scale_range,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            predict_split=predict_split,
            **kwargs,
        )
        if bands not in BAND_SETS:
            raise ValueError(f"bands must be one of {list(BAND_SETS)}, got {bands!r}")
        if nan_policy not in ("fill", "error"):
            raise ValueError(f"nan_policy must be 'fill' or 'error', got {nan_policy!r}")
        self.bands = bands
        if scaling not in ("standardize", "per_image_max"):
            raise ValueError(f"scaling must be 'standardize' or 'per_image_max', got {scaling!r}")
        self.nan_policy = nan_policy
        self.scaling = scaling
        modalities = BAND_SETS[bands]
        self.modality_channels = tuple(MODALITIES[m][0] for m in modalities)
        self.in_channels = sum(self.modality_channels)
        self.mean = tuple(v for m in modalities for v in MODALITIES[m][2])
        self.std = tuple(v for m in modalities for v in MODALITIES[m][3])
        if scaling == "per_image_max":  # the tiles arrive in [0, 1] per channel
            self.mean, self.std = (0.0,) * self.in_channels, (1.0,) * self.in_channels
        self.class_names = list(DFC2020_CLASSES)
        self.num_classes = len(DFC2020_CLASSES) - 1

    def make_dataset(self, split: str, transform: SampleTransform, train: bool) -> DFC2020Dataset:
        """Tiles listed in ``ROIs0000_<split>/dfc_0`` with their S1/S2 files (and pseudo-masks to train)."""
        folder = self.root / f"ROIs0000_{split}"
        label_dir = folder / "dfc_0"
        if not label_dir.is_dir():
            available = sorted(p.name for p in self.root.glob("ROIs0000_*"))
            raise FileNotFoundError(
                f"{label_dir} not found (split {split!r}); available: {available}. {self.obtain_hint}"
            )
        pattern = re.compile(rf"ROIs0000_{re.escape(split)}_dfc_0_p(\d+)\.tif")
        patches = sorted(int(m.group(1)) for p in label_dir.iterdir() if (m := pattern.fullmatch(p.name)))
        if not patches:
            raise ValueError(f"{label_dir}: the split {split!r} has no ROIs0000_{split}_dfc_0_p<i>.tif tiles")
        use_masks = train and self.mask_dir is not None
        records = [
            DFCRecord(
                name=f"ROIs0000_{split}_p{i}",
                modalities=tuple(
                    (m, folder / f"{m}_0" / f"ROIs0000_{split}_{m}_0_p{i}.tif") for m in BAND_SETS[self.bands]
                ),
                label=label_dir / f"ROIs0000_{split}_dfc_0_p{i}.tif",
                mask_png=self.mask_dir / f"ROIs0000_{split}_p{i}.png" if use_masks else None,
            )
            for i in patches
        ]
        records, skipped = drop_missing(
            records,
            lambda r: (*(p for _, p in r.modalities), r.label, r.mask_png),
            self.skip_bad_samples,
            str(folder),
        )
        return DFC2020Dataset(
            records, transform, str(folder), self.nan_policy, self.skip_bad_samples, skipped, self.scaling
        )
