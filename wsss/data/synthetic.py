"""Synthetic stand-ins for PASCAL VOC and DFC2020, small enough to train on a laptop CPU.

**VOC-like** (``make_synthetic_voc``): each foreground class is a shape family with its own texture
(``textures.CLASS_SPECS``: disc + dots, square + checkerboard, triangle + horizontal stripes, ring +
vertical stripes, cross + zigzag, ellipse + bricks, star + grid, crescent + diamond lattice). The textures
are invariant under horizontal and vertical flips but not under 90° rotations (which would swap the
stripe classes): augment with flips, not with rot90.
Objects (1–3 classes per image, 15–50 % of the side, random rotation and position, overlapping with the
later one on top) lie on clutter made of irregular blobs with non-class textures, class shapes with
non-class textures and small fragments of class textures. All regions draw their two colours from the
same distribution, so a pixel's colour carries no class information: texture and shape must be used
together. Masks mark a 2-px ignore band (255) on every border between instances. Points and scribbles
are placed with a 3-px margin so their rasterisation lies inside their class, never on the band.
``cooccurrence`` forces classes 1 and 2 together in that fraction of the images (boat/water bias).
Layout as VOC2012 + SBD + ScribbleSup + `whats_the_point`: ``JPEGImages``, ``SegmentationClassAug``,
``ImageSets/Segmentation/{train_aug,train,val}.txt`` (``train`` = first quarter of ``train_aug``),
``classes.txt``, ``cls_labels.npy``, ``whats_the_point/*.json``, ``scribble_annotation/pascal_2012/*.xml``
and their rasterisations ``SparseLabels/{point,scribble}/*.png`` (points: object and background clicks).

**DFC2020-like** (``make_synthetic_dfc2020``): land-cover regions from argmax of smoothed random fields
(1–3 dominant classes and up to 2 minor ones per tile, rare patches of the ignored code 3). Each class is a
(Sentinel-2 signature, Sentinel-1 signature) pair; signatures carry spatially correlated texture, band
noise and (S1) multiplicative speckle::

    code  class       S2 signature        S1 signature
    1     Forest      dense_vegetation    volume
    2     Shrubland   sparse_vegetation   volume
    4     Grassland   sparse_vegetation   smooth
    5     Wetlands    dense_vegetation    flooded
    6     Croplands   cropland            smooth
    7     Urban       bare                bright
    9     Barren      bare                smooth
    10    Water       water               specular

S2 alone cannot separate Forest/Wetlands, Shrubland/Grassland and Urban/Barren (they differ only in S1);
S1 alone cannot separate Forest/Shrubland and Grassland/Croplands/Barren (they differ only in S2). Only
S1 + S2 separates all eight classes.

Both generators are deterministic in ``seed`` (same seed, byte-identical files), skip work when the root
already holds a complete dataset made with the same parameters (``synthetic.json``, written last) and
refuse to write into a non-empty folder they did not create.
"""

import argparse
import inspect
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import rasterio
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from wsss.data.sparse_labels import draw_points, draw_scribbles, write_points_json, write_scribble_xml
from wsss.data.textures import CLASS_SPECS, MIN_DIAMETER, compose_scene, safe_interior, sample_image_classes

#: Bumped whenever the generated content changes, so that old datasets are regenerated.
GENERATOR_VERSION = 2
METADATA, INCOMPLETE = "synthetic.json", "synthetic.incomplete"
VOC_ENTRIES = (
    "JPEGImages", "SegmentationClassAug", "ImageSets", "classes.txt", "cls_labels.npy", "whats_the_point",
    "scribble_annotation", "SparseLabels",
)  # fmt: skip
DFC_SPLITS = ("ROIs0000_validation", "ROIs0000_test")

#: DFC code -> (class name, S2 signature, S1 signature); code 3 (Savanna) is ignored by the readers.
DFC_CLASSES = {
    1: ("Forest", "dense_vegetation", "volume"), 2: ("Shrubland", "sparse_vegetation", "volume"),
    3: ("Savanna", "sparse_vegetation", "volume"), 4: ("Grassland", "sparse_vegetation", "smooth"),
    5: ("Wetlands", "dense_vegetation", "flooded"), 6: ("Croplands", "cropland", "smooth"),
    7: ("Urban", "bare", "bright"), 9: ("Barren", "bare", "smooth"), 10: ("Water", "water", "specular"),
}  # fmt: skip
DFC_VALID_CODES = (1, 2, 4, 5, 6, 7, 9, 10)
#: Mean reflectance ×1e4 of the 13 S2 bands B01–B12 (with B8A).
S2_SIGNATURES = {
    "dense_vegetation": (300, 250, 450, 250, 700, 2200, 2800, 3000, 3100, 900, 15, 1400, 650),
    "sparse_vegetation": (450, 500, 750, 800, 1150, 1700, 1950, 2100, 2200, 750, 15, 2500, 1700),
    "cropland": (350, 350, 700, 400, 1000, 2700, 3400, 3700, 3800, 1000, 15, 1900, 900),
    "bare": (1300, 1250, 1350, 1450, 1600, 1750, 1850, 1950, 2000, 650, 20, 2800, 2400),
    "water": (900, 800, 700, 500, 400, 300, 250, 200, 180, 80, 5, 100, 60),
}  # fmt: skip
#: S1 signature -> (VV dB, VH dB, std of its spatially correlated texture in dB).
S1_SIGNATURES = {
    "volume": (-7.5, -13.5, 1.0), "smooth": (-14.0, -21.0, 0.5), "flooded": (-17.0, -25.0, 1.0),
    "bright": (-3.0, -9.0, 3.0), "specular": (-21.0, -27.0, 0.5),
}  # fmt: skip
SPECKLE_LOOKS = 5


def _check_root(root: Path, params: dict) -> bool:
    """Return True when ``root`` already holds a complete dataset made with ``params``.

    Otherwise clear the outputs of an earlier synthetic run (marked by ``synthetic.json`` or an
    interrupted run's ``synthetic.incomplete``) and leave an ``incomplete`` marker; a non-empty folder
    without either marker raises ValueError.
    """
    metadata, marker = root / METADATA, root / INCOMPLETE
    if metadata.is_file() and not marker.exists():
        try:
            if json.loads(metadata.read_text()) == params:
                return True
        except json.JSONDecodeError:
            pass
    elif not marker.exists() and root.is_dir() and any(root.iterdir()):
        raise ValueError(
            f"{root}: folder is not empty and holds no {METADATA}; refusing to write a "
            "synthetic dataset into it (choose an empty or new folder)"
        )
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(params))
    metadata.unlink(missing_ok=True)
    for entry in (*VOC_ENTRIES, *DFC_SPLITS):
        path = root / entry
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return False


def _mark_complete(root: Path, params: dict) -> None:
    """Write ``synthetic.json`` (last) and drop the ``incomplete`` marker."""
    (root / METADATA).write_text(json.dumps(params, indent=1))
    (root / INCOMPLETE).unlink()


def _imwrite(path: Path, image: np.ndarray, params: tuple[int, ...] = ()) -> None:
    """cv2.imwrite that raises instead of returning False."""
    if not cv2.imwrite(str(path), image, list(params)):
        raise OSError(f"{path}: could not write image")


def label_mask(instances: np.ndarray, instance_classes: list[int]) -> np.ndarray:
    """Class-index mask (uint8) of a visible-instance map with 255 on every 2-px instance border."""
    kernel = np.ones((3, 3), np.uint8)
    band = cv2.dilate(instances, kernel) != cv2.erode(instances, kernel)
    mask = np.asarray([0, *instance_classes], np.uint8)[instances]
    mask[band] = 255
    return mask


def _click(rng: np.random.Generator, region: np.ndarray) -> tuple[float, float] | None:
    """A random pixel (x, y) of the safe interior of ``region``, or None if it has none."""
    ys, xs = np.nonzero(safe_interior(region))
    if not len(xs):
        return None
    j = int(rng.integers(len(xs)))
    return float(xs[j]), float(ys[j])


def scribble_path(rng: np.random.Generator, region: np.ndarray, max_vertices: int) -> np.ndarray | None:
    """Integer polyline (N, 2) of x, y whose 3-px rasterisation lies in ``region`` minus its border band.

    It starts near the medial axis and never turns by more than 90°.
    """
    safe = safe_interior(region)
    ys, xs = np.nonzero(safe)
    if not len(xs):
        return None
    allowed = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    depth = cv2.distanceTransform(safe.astype(np.uint8), cv2.DIST_L2, 3)[ys, xs] ** 2
    start = int(rng.choice(len(xs), p=depth / depth.sum()))
    path = [(int(xs[start]), int(ys[start]))]
    for _ in range(max_vertices - 1):
        for j in rng.integers(len(xs), size=8):
            trial = np.asarray([*path, (int(xs[j]), int(ys[j]))], np.float64)
            step = trial[-1] - trial[-2]
            if np.hypot(*step) < 3 or (len(trial) > 2 and np.dot(step, trial[-2] - trial[-3]) <= 0):
                continue  # too short, or turning back by more than 90°
            drawn = draw_scribbles([(0, trial)], region.shape) == 0
            if not (drawn & ~allowed).any():
                path.append((int(xs[j]), int(ys[j])))
                break
    return np.asarray(path, np.float64)


def annotate(
    rng: np.random.Generator, instances: np.ndarray, instance_classes: list[int]
) -> tuple[list[dict], list[dict], list[tuple[int, np.ndarray]]]:
    """One click per instance, 1–3 background clicks, one scribble per instance and 1–2 background ones."""
    points, background_points, scribbles = [], [], []
    for instance, cls in enumerate(instance_classes, 1):
        region = instances == instance
        x, y = _click(rng, region)
        points.append({"cls": cls, "x": x, "y": y})
        scribbles.append((cls, scribble_path(rng, region, int(rng.integers(3, 5)))))
    background = instances == 0
    for _ in range(int(rng.integers(1, 4))):
        click = _click(rng, background)
        if click is not None:
            background_points.append({"cls": 0, "x": click[0], "y": click[1]})
    for _ in range(int(rng.integers(1, 3))):
        path = scribble_path(rng, background, int(rng.integers(4, 7)))
        if path is not None:
            scribbles.append((0, path))
    return points, background_points, scribbles


def make_synthetic_voc(
    root: str | Path,
    n_train: int = 400,
    n_val: int = 100,
    size: int = 96,
    num_classes: int = 5,
    seed: int = 0,
    cooccurrence: float = 0.0,
    image_format: str = "jpg",
) -> Path:
    """Write a VOC2012-like dataset (images, masks, splits, class labels, points, scribbles) to ``root``."""
    root = Path(root)
    if n_train < 1 or n_val < 0 or seed < 0:
        raise ValueError(f"need n_train ≥ 1, n_val ≥ 0 and seed ≥ 0; got {n_train}, {n_val}, {seed}")
    if size < 2 * MIN_DIAMETER:
        raise ValueError(f"size must be at least {2 * MIN_DIAMETER} px to hold objects; got {size}")
    if not 1 <= num_classes <= len(CLASS_SPECS):
        raise ValueError(f"num_classes must be in 1..{len(CLASS_SPECS)}; got {num_classes}")
    if not 0 <= cooccurrence <= 1 or (cooccurrence > 0 and num_classes < 2):
        raise ValueError(f"cooccurrence must be in [0, 1] and needs num_classes ≥ 2; got {cooccurrence}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png'; got {image_format!r}")
    params = {
        "dataset": "voc",
        "version": GENERATOR_VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "size": size,
        "num_classes": num_classes,
        "seed": seed,
        "cooccurrence": cooccurrence,
        "image_format": image_format,
    }
    if _check_root(root, params):
        return root

    class_names = ["background", *(f"{shape}_{kind}" for shape, kind in CLASS_SPECS[:num_classes])]
    names = [f"syn_{i:06d}" for i in range(n_train + n_val)]
    folders = {
        key: root / key
        for key in (
            "JPEGImages",
            "SegmentationClassAug",
            "SparseLabels/point",
            "SparseLabels/scribble",
            "scribble_annotation/pascal_2012",
            "whats_the_point",
            "ImageSets/Segmentation",
        )
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
    encoding = (cv2.IMWRITE_JPEG_QUALITY, 90) if image_format == "jpg" else (cv2.IMWRITE_PNG_COMPRESSION, 3)
    cls_labels, points, background_points = {}, {}, {}
    for i, name in enumerate(tqdm(names, desc=f"synthetic VOC -> {root}", unit="img")):
        rng = np.random.default_rng([seed, i])
        classes = sample_image_classes(rng, num_classes, cooccurrence)
        image, instances, instance_classes = compose_scene(rng, size, classes)
        mask = label_mask(instances, instance_classes)
        _imwrite(folders["JPEGImages"] / f"{name}.{image_format}", image[..., ::-1], encoding)
        _imwrite(folders["SegmentationClassAug"] / f"{name}.png", mask)
        cls_labels[name] = np.isin(np.arange(1, num_classes + 1), mask).astype(np.float32)
        if i >= n_train:
            continue
        points[name], background_points[name], scribbles = annotate(rng, instances, instance_classes)
        write_scribble_xml(
            scribbles,
            folders["scribble_annotation/pascal_2012"] / f"{name}.xml",
            class_names,
            f"{name}.{image_format}",
            mask.shape,
        )
        _imwrite(
            folders["SparseLabels/point"] / f"{name}.png",
            draw_points(points[name] + background_points[name], mask.shape, diameter=3),
        )
        _imwrite(folders["SparseLabels/scribble"] / f"{name}.png", draw_scribbles(scribbles, mask.shape, 3))

    write_points_json(points, folders["whats_the_point"] / "voc_whats_the_point.json")
    background_file = folders["whats_the_point"] / "voc_whats_the_point_bg_from_scribbles.json"
    write_points_json(background_points, background_file)
    splits = {"train_aug": names[:n_train], "train": names[: max(1, n_train // 4)], "val": names[n_train:]}
    for split, split_names in splits.items():
        split_file = folders["ImageSets/Segmentation"] / f"{split}.txt"
        split_file.write_text("".join(f"{n}\n" for n in split_names))
    (root / "classes.txt").write_text("".join(f"{n}\n" for n in class_names))
    np.save(root / "cls_labels.npy", cls_labels)
    _mark_complete(root, params)
    return root


def _unit_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smoothed Gaussian noise (size, size) with zero mean and unit standard deviation."""
    field = gaussian_filter(rng.normal(size=(size, size)), sigma)
    return (field - field.mean()) / (field.std() + 1e-9)


def dfc_land_cover(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) uint8 map of DFC codes: 1–3 dominant classes, up to 2 minor ones, rare code-3 patches."""
    n_dominant, n_minor = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    codes = rng.choice(DFC_VALID_CODES, size=n_dominant + n_minor, replace=False)
    fields = np.stack([_unit_field(rng, size, size / 6) for _ in codes])
    fields[n_dominant:] -= 2.0
    cover = codes[np.argmax(fields, axis=0)].astype(np.uint8)
    if rng.random() < 0.2:
        y, x = np.mgrid[0:size, 0:size]
        cx, cy = rng.uniform(0, size, 2)
        cover[np.hypot(x - cx, y - cy) <= rng.uniform(1.5, 3.5)] = 3
    return cover


def dfc_bands(rng: np.random.Generator, cover: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render S1 (2, H, W) float32 dB and S2 (13, H, W) uint16 reflectance ×1e4 for a land-cover map."""
    size = cover.shape[0]
    s2_names, s1_names = list(S2_SIGNATURES), list(S1_SIGNATURES)
    s2_index = np.zeros(256, np.intp)
    s1_index = np.zeros(256, np.intp)
    for code, (_, s2_name, s1_name) in DFC_CLASSES.items():
        s2_index[code], s1_index[code] = s2_names.index(s2_name), s1_names.index(s1_name)
    s2_mean = np.asarray(list(S2_SIGNATURES.values()), np.float64)[s2_index[cover]]  # (H, W, 13)
    gain = 1 + 0.06 * _unit_field(rng, size, 2.0)[..., None] + 0.04 * rng.normal(size=s2_mean.shape)
    y, x = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, np.pi)
    rows = 1 + 0.12 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / 4)
    gain *= np.where(s2_index[cover] == s2_names.index("cropland"), rows, 1.0)[..., None]
    s2 = gaussian_filter(s2_mean * gain, sigma=(0.6, 0.6, 0))
    s1_table = np.asarray(list(S1_SIGNATURES.values()), np.float64)[s1_index[cover]]  # (H, W, 3)
    texture = s1_table[..., 2:] * _unit_field(rng, size, 1.5)[..., None]
    linear = 10 ** ((s1_table[..., :2] + texture) / 10)
    linear = gaussian_filter(linear, sigma=(0.6, 0.6, 0)) * rng.gamma(
        SPECKLE_LOOKS, 1 / SPECKLE_LOOKS, size=linear.shape
    )
    s1 = 10 * np.log10(linear)
    return (
        s1.transpose(2, 0, 1).astype(np.float32),
        np.clip(np.round(s2), 0, 10000).astype(np.uint16).transpose(2, 0, 1),
    )


def _write_tif(path: Path, array: np.ndarray, transform: rasterio.Affine) -> None:
    """Write a (bands, H, W) array as a GeoTIFF in UTM 32N."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=array.shape[1],
        width=array.shape[2],
        count=array.shape[0],
        dtype=array.dtype,
        crs="EPSG:32632",
        transform=transform,
    ) as dst:
        dst.write(array)


def make_synthetic_dfc2020(
    root: str | Path, n_train: int = 200, n_test: int = 100, size: int = 64, seed: int = 0
) -> Path:
    """Write a DFC2020-like dataset (S1, S2 and DFC GeoTIFFs; ROIs0000_validation trains) to ``root``."""
    root = Path(root)
    if n_train < 1 or n_test < 0 or seed < 0 or size < 16:
        raise ValueError(
            f"need n_train ≥ 1, n_test ≥ 0, seed ≥ 0, size ≥ 16; got {n_train}, {n_test}, {seed}, {size}"
        )
    params = {
        "dataset": "dfc2020",
        "version": GENERATOR_VERSION,
        "n_train": n_train,
        "n_test": n_test,
        "size": size,
        "seed": seed,
    }
    if _check_root(root, params):
        return root
    tiles = [(DFC_SPLITS[0], i) for i in range(n_train)] + [(DFC_SPLITS[1], i) for i in range(n_test)]
    for split in DFC_SPLITS:
        for layer in ("s1", "s2", "dfc"):
            (root / split / f"{layer}_0").mkdir(parents=True)
    for k, (split, i) in enumerate(tqdm(tiles, desc=f"synthetic DFC2020 -> {root}", unit="tile")):
        rng = np.random.default_rng([seed, k])
        cover = dfc_land_cover(rng, size)
        s1, s2 = dfc_bands(rng, cover)
        transform = rasterio.Affine(10, 0, 300000 + k * size * 10, 0, -10, 5000000)  # 10 m pixels
        for layer, array in (("s1", s1), ("s2", s2), ("dfc", cover[None])):
            _write_tif(root / split / f"{layer}_0" / f"{split}_{layer}_0_p{i}.tif", array, transform)
    _mark_complete(root, params)
    return root


def _add_arguments(parser: argparse.ArgumentParser, function: Callable) -> None:
    """One ``--flag`` per parameter of ``function``, typed and defaulted from its signature."""
    for name, parameter in inspect.signature(function).parameters.items():
        flag = "--" + name.replace("_", "-")
        if name == "root":
            parser.add_argument(flag, type=Path, required=True, help="output folder")
        else:
            default = parameter.default
            parser.add_argument(flag, type=type(default), default=default, help=f"(default: {default})")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``wsss synth {voc,dfc2020} --root DIR [options]``."""
    parser = argparse.ArgumentParser(prog="wsss synth", description="Write a synthetic benchmark dataset.")
    subparsers = parser.add_subparsers(dest="dataset", required=True)
    makers = {"voc": make_synthetic_voc, "dfc2020": make_synthetic_dfc2020}
    for name, maker in makers.items():
        _add_arguments(subparsers.add_parser(name, help=maker.__doc__), maker)
    args = vars(parser.parse_args(argv))
    try:
        print(makers[args.pop("dataset")](**args))
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
