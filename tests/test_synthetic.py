"""Tests of the synthetic VOC-like and DFC2020-like generators."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio

from wsss.data.sparse_labels import draw_points, draw_scribbles, read_points_json, read_scribble_xml
from wsss.data.synthetic import dfc_bands, label_mask, main, make_synthetic_dfc2020, make_synthetic_voc
from wsss.data.textures import CLASS_SPECS, sample_image_classes, shape_mask, texture

VOC_ARGS = {"n_train": 6, "n_val": 3, "size": 48, "num_classes": 5}
DFC_ARGS = {"n_train": 4, "n_test": 2, "size": 32}


def _files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _split(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _mask(root: Path, name: str) -> np.ndarray:
    return cv2.imread(str(root / "SegmentationClassAug" / f"{name}.png"), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_voc(tmp_path_factory.mktemp("voc") / "VOC2012", **VOC_ARGS)


@pytest.fixture(scope="module")
def dfc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dfc2020(tmp_path_factory.mktemp("dfc") / "DFC2020", **DFC_ARGS)


def test_voc_same_seed_gives_same_bytes_and_another_seed_other_images(voc: Path, tmp_path: Path) -> None:
    assert _files(make_synthetic_voc(tmp_path / "same", **VOC_ARGS)) == _files(voc)
    other = _files(make_synthetic_voc(tmp_path / "other", **VOC_ARGS, seed=1))
    first = _files(voc)
    assert other.keys() == first.keys()
    assert all(other[k] != first[k] for k in first if k.suffix == ".jpg")


def test_voc_layout_is_complete_and_consistent(voc: Path) -> None:
    train_aug, train, val = _split(voc, "train_aug"), _split(voc, "train"), _split(voc, "val")
    assert train_aug == [f"syn_{i:06d}" for i in range(6)] and val == [f"syn_{i:06d}" for i in range(6, 9)]
    assert train == train_aug[:1]
    classes = (voc / "classes.txt").read_text().split()
    assert len(classes) == 6 and classes[0] == "background" and len(set(classes)) == 6
    assert {p.name for p in (voc / "JPEGImages").iterdir()} == {f"{n}.jpg" for n in train_aug + val}
    assert {p.name for p in (voc / "SegmentationClassAug").iterdir()} == {f"{n}.png" for n in train_aug + val}
    for folder, suffix in [
        ("scribble_annotation/pascal_2012", ".xml"),
        ("SparseLabels/point", ".png"),
        ("SparseLabels/scribble", ".png"),
    ]:
        assert {p.name for p in (voc / folder).iterdir()} == {n + suffix for n in train_aug}
    for file in ("voc_whats_the_point.json", "voc_whats_the_point_bg_from_scribbles.json"):
        assert list(read_points_json(voc / "whats_the_point" / file)) == train_aug
    labels = np.load(voc / "cls_labels.npy", allow_pickle=True).item()
    assert list(labels) == train_aug + val
    assert all(v.dtype == np.float32 and v.shape == (5,) for v in labels.values())
    assert json.loads((voc / "synthetic.json").read_text())["n_train"] == 6
    assert not (voc / "synthetic.incomplete").exists()


def test_voc_masks_hold_one_to_three_classes_that_match_cls_labels(voc: Path) -> None:
    labels = np.load(voc / "cls_labels.npy", allow_pickle=True).item()
    for name, multi_hot in labels.items():
        image = cv2.imread(str(voc / "JPEGImages" / f"{name}.jpg"), cv2.IMREAD_UNCHANGED)
        mask = _mask(voc, name)
        assert image.shape == (48, 48, 3) and mask.shape == (48, 48) and mask.dtype == np.uint8
        values = set(np.unique(mask).tolist())
        assert values <= {0, 1, 2, 3, 4, 5, 255} and {0, 255} <= values
        present = values - {0, 255}
        assert 1 <= len(present) <= 3
        np.testing.assert_array_equal(multi_hot, [float(c in present) for c in range(1, 6)])


def test_sparse_pngs_equal_rasterised_annotations_inside_the_right_class(voc: Path) -> None:
    classes = (voc / "classes.txt").read_text().split()
    points = read_points_json(voc / "whats_the_point" / "voc_whats_the_point.json")
    background = read_points_json(voc / "whats_the_point" / "voc_whats_the_point_bg_from_scribbles.json")
    for name in _split(voc, "train_aug"):
        mask = _mask(voc, name)
        present = set(np.unique(mask).tolist()) - {0, 255}
        assert {p["cls"] for p in points[name]} == present
        assert 1 <= len(background[name]) <= 3 and {p["cls"] for p in background[name]} == {0}
        point_png = cv2.imread(str(voc / "SparseLabels" / "point" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(point_png, draw_points(points[name] + background[name], mask.shape, 3))
        scribbles = read_scribble_xml(voc / "scribble_annotation" / "pascal_2012" / f"{name}.xml", classes)
        assert {cls for cls, _ in scribbles} == present | {0}
        scribble_file = voc / "SparseLabels" / "scribble" / f"{name}.png"
        scribble_png = cv2.imread(str(scribble_file), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(scribble_png, draw_scribbles(scribbles, mask.shape, 3))
        for sparse in (point_png, scribble_png):
            labelled = sparse != 255
            np.testing.assert_array_equal(sparse[labelled], mask[labelled])


def test_label_mask_puts_ignore_on_both_sides_of_every_instance_border() -> None:
    instances = np.zeros((4, 10), np.uint8)
    instances[:, :5], instances[:, 5:] = 1, 2  # the image edge is no border
    expected = np.array([[1, 1, 1, 1, 255, 255, 3, 3, 3, 3]] * 4)
    np.testing.assert_array_equal(label_mask(instances, [1, 3]), expected)
    instances = np.zeros((7, 7), np.uint8)
    instances[1:6, 1:6] = 1
    expected = np.full((7, 7), 255)
    expected[2:5, 2:5] = 4
    np.testing.assert_array_equal(label_mask(instances, [4]), expected)


def test_shape_masks_have_their_analytic_areas() -> None:
    areas = {
        "disc": np.pi,
        "square": 1.5**2,
        "ring": np.pi * (1 - 0.45**2),
        "cross": 2 * 2 * 0.64 - 0.64**2,
        "triangle": 3 * np.sqrt(3) / 4,
        "ellipse": np.pi * 0.55,
        "star": np.pi * (0.45**2 + 0.45 * 0.55 + 0.55**2 / 3),
    }
    for shape, unit_area in areas.items():
        area = shape_mask(shape, 100, (50.0, 50.0), 40.0, 0.3).sum()
        assert area == pytest.approx(unit_area * 40**2, rel=0.02), shape


def test_class_textures_are_invariant_under_horizontal_flip() -> None:
    window = np.outer(np.hanning(64), np.hanning(64))
    for _, kind in CLASS_SPECS:
        pattern = texture(kind, 64, 8.3, np.random.default_rng(0))
        spectrum = np.abs(np.fft.fft2((pattern - pattern.mean()) * window))
        mirrored = spectrum[:, -np.arange(64) % 64]  # |FFT| of the flipped pattern, up to a phase
        assert np.corrcoef(spectrum.ravel(), mirrored.ravel())[0, 1] > 0.95, kind


def test_cooccurrence_forces_the_pair_at_the_hand_computed_rate() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_image_classes(rng, 5, 0.5) for _ in range(10000)]
    assert all(1 <= len(d) <= 3 and len(set(d)) == len(d) and set(d) <= {1, 2, 3, 4, 5} for d in draws)
    # uniform part: 1, 2 or 3 classes; P(1 and 2 | 2 classes) = 1/10, P(1 and 2 | 3 classes) = 3/10
    expected = 0.5 + 0.5 * (0 + 1 / 10 + 3 / 10) / 3
    assert np.mean([{1, 2} <= set(d) for d in draws]) == pytest.approx(expected, abs=0.02)


def test_cooccurrence_raises_the_pair_frequency_in_the_dataset(tmp_path: Path) -> None:
    def pair_rate(cooccurrence: float) -> float:
        root = make_synthetic_voc(
            tmp_path / str(cooccurrence), n_train=8, n_val=0, size=48, cooccurrence=cooccurrence
        )
        labels = np.load(root / "cls_labels.npy", allow_pickle=True).item()
        return float(np.mean([v[0] == v[1] == 1 for v in labels.values()]))

    assert pair_rate(1.0) >= 0.75 > 0.25 >= pair_rate(0.0)


def test_complete_dataset_is_reused_and_changed_or_interrupted_ones_regenerated(tmp_path: Path) -> None:
    args = {"n_train": 3, "n_val": 1, "size": 48}
    root = make_synthetic_voc(tmp_path / "voc", **args)
    sentinel = root / "JPEGImages" / "sentinel.txt"
    sentinel.write_text("")
    make_synthetic_voc(root, **args)
    assert sentinel.exists()
    (root / "synthetic.incomplete").write_text("{}")  # as left by an interrupted run
    make_synthetic_voc(root, **args)
    assert not sentinel.exists() and not (root / "synthetic.incomplete").exists()
    make_synthetic_voc(root, **{**args, "n_train": 2})
    assert len(list((root / "JPEGImages").iterdir())) == 3
    assert _split(root, "train_aug") == ["syn_000000", "syn_000001"]


def test_bad_arguments_and_foreign_folders_raise(tmp_path: Path) -> None:
    (tmp_path / "real" / "Annotations").mkdir(parents=True)
    with pytest.raises(ValueError, match="not empty"):
        make_synthetic_voc(tmp_path / "real", n_train=2, size=48)
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_voc(tmp_path / "a", num_classes=len(CLASS_SPECS) + 1)
    with pytest.raises(ValueError, match="image_format"):
        make_synthetic_voc(tmp_path / "a", image_format="gif")
    with pytest.raises(ValueError, match="cooccurrence"):
        make_synthetic_voc(tmp_path / "a", num_classes=1, cooccurrence=0.5)
    with pytest.raises(SystemExit):
        main(["voc", "--root", str(tmp_path / "b"), "--size", "10"])


def test_cli_writes_png_images_and_dfc(tmp_path: Path) -> None:
    main(
        [
            "voc",
            "--root",
            str(tmp_path / "voc"),
            "--n-train",
            "2",
            "--n-val",
            "1",
            "--size",
            "48",
            "--image-format",
            "png",
            "--cooccurrence",
            "0.5",
        ]
    )
    params = json.loads((tmp_path / "voc" / "synthetic.json").read_text())
    assert params["image_format"] == "png" and params["cooccurrence"] == 0.5 and params["n_train"] == 2
    assert len(list((tmp_path / "voc" / "JPEGImages").glob("*.png"))) == 3
    main(["dfc2020", "--root", str(tmp_path / "dfc"), "--n-train", "1", "--n-test", "1", "--size", "16"])
    assert (tmp_path / "dfc" / "ROIs0000_test" / "s2_0" / "ROIs0000_test_s2_0_p0.tif").is_file()


def test_dfc_geotiffs_have_the_right_bands_dtypes_and_codes(dfc: Path) -> None:
    for split, count in [("ROIs0000_validation", 4), ("ROIs0000_test", 2)]:
        for layer, bands, dtype in [("s1", 2, "float32"), ("s2", 13, "uint16"), ("dfc", 1, "uint8")]:
            files = sorted((dfc / split / f"{layer}_0").iterdir())
            assert [f.name for f in files] == [f"{split}_{layer}_0_p{i}.tif" for i in range(count)]
            for file in files:
                with rasterio.open(file) as src:
                    assert (src.count, src.dtypes[0], src.shape) == (bands, dtype, (32, 32))
                    assert src.crs.to_epsg() == 32632 and src.transform.a == 10
                    data = src.read()
                if layer == "dfc":
                    assert set(np.unique(data).tolist()) <= {1, 2, 3, 4, 5, 6, 7, 9, 10}
                    assert np.isin(data, [1, 2, 4, 5, 6, 7, 9, 10]).mean() > 0.9
                elif layer == "s1":
                    assert -25 < np.median(data) < 0 and np.isfinite(data).all()
                else:
                    assert data.max() <= 10000 and 0 < np.median(data) < 5000


def test_dfc_same_seed_gives_same_bytes(dfc: Path, tmp_path: Path) -> None:
    assert _files(make_synthetic_dfc2020(tmp_path / "same", **DFC_ARGS)) == _files(dfc)
    other = _files(make_synthetic_dfc2020(tmp_path / "other", **DFC_ARGS, seed=3))
    assert all(other[k] != v for k, v in _files(dfc).items() if k.suffix == ".tif" and "s2_0" in k.parts)


def _class_means(cover: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    s1, s2 = dfc_bands(np.random.default_rng(0), cover)
    return {int(c): (s1[:, cover == c].mean(1), s2[:, cover == c].mean(1)) for c in np.unique(cover)}


@pytest.mark.parametrize(
    ("first", "second", "twin_modality"),
    [(1, 5, "s2"), (2, 4, "s2"), (7, 9, "s2"), (1, 2, "s1"), (4, 6, "s1"), (4, 9, "s1")],
)
def test_dfc_classes_that_share_one_modality_differ_in_the_other(
    first: int, second: int, twin_modality: str
) -> None:
    cover = np.full((64, 64), first, np.uint8)
    cover[:, 32:] = second
    (s1_a, s2_a), (s1_b, s2_b) = (m for _, m in sorted(_class_means(cover).items()))
    s1_gap, s2_gap = np.abs(s1_a - s1_b).max(), np.abs(s2_a / s2_b - 1)[s2_b > 100].max()
    if twin_modality == "s2":
        assert s2_gap < 0.1 and s1_gap > 4
    else:
        assert s1_gap < 1.5 and s2_gap > 0.25
