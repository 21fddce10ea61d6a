"""VOCDataModule on a tiny fake VOC2012 folder: the sample contract, image-level labels, points and
scribbles through the reader, mask_dir, and every bad-input error naming its file."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.fake_voc import fake_mask, voc_name, write_fake_voc
from wsss.data import DataFileError, VOCDataModule
from wsss.data.sparse_labels import read_points_json, write_points_json
from wsss.data.voc import IMAGENET_MEAN, IMAGENET_STD

SIZE = 48


def _plain(root: Path, **kwargs) -> VOCDataModule:
    """A module whose training transform is the identity (no scale, crop or flip)."""
    return VOCDataModule(str(root), crop_size=None, scale_range=(1.0, 1.0), hflip=False, **kwargs)


def _plus(label: np.ndarray, x: int, y: int, cls: int) -> None:
    """A disc of diameter 3 as OpenCV draws it: the pixel and its 4 neighbours."""
    label[y, x - 1 : x + 2] = cls
    label[y - 1 : y + 2, x] = cls


@pytest.fixture()
def voc_root(tmp_path: Path) -> Path:
    return write_fake_voc(tmp_path / "VOC2012", n=4, size=SIZE, image_format="png")


def test_sample_contract_and_labels_from_masks(voc_root: Path) -> None:
    dm = VOCDataModule(str(voc_root))
    assert (dm.num_classes, len(dm.class_names), dm.class_names[0], dm.in_channels) == (
        20,
        21,
        "background",
        3,
    )
    assert dm.mean == IMAGENET_MEAN and dm.std == IMAGENET_STD
    dataset = dm.dataset("val")  # images 2 (palette mask) and 3 (grey mask)
    assert dataset.names == [voc_name(2), voc_name(3)]
    for index, sample in zip((2, 3), (dataset[0], dataset[1]), strict=True):
        assert set(sample) == {"image", "mask", "cls_labels", "name"}
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, SIZE, SIZE)
        assert sample["mask"].dtype == torch.int64 and sample["cls_labels"].dtype == torch.float32
        np.testing.assert_array_equal(sample["mask"].numpy(), fake_mask(index, SIZE, 20))
        expected = np.zeros(20, np.float32)
        expected[[index % 20, (index + 2) % 20]] = 1  # classes index + 1 and index + 3
        np.testing.assert_array_equal(sample["cls_labels"].numpy(), expected)
    # background pixel (0, 255, 0) normalised with ImageNet statistics
    pixel = dataset[0]["image"][:, 40, 40].numpy()
    np.testing.assert_allclose(
        pixel, [(0 - 123.675) / 58.395, (255 - 116.28) / 57.12, (0 - 103.53) / 57.375], atol=1e-5
    )


def test_labels_file_wins_and_irn_integer_keys_are_understood(voc_root: Path) -> None:
    vector = np.zeros(20, np.float32)
    vector[[0, 19]] = 1  # deliberately not the mask's classes
    np.save(voc_root / "cls_labels.npy", {int(voc_name(i).replace("_", "")): vector for i in range(4)})
    sample = VOCDataModule(str(voc_root)).dataset("val")[0]
    np.testing.assert_array_equal(sample["cls_labels"].numpy(), vector)
    np.save(voc_root / "cls_labels.npy", {voc_name(0): vector})
    with pytest.raises(ValueError, match=r"cls_labels.npy: no labels for 2 image\(s\) of split 'val'"):
        VOCDataModule(str(voc_root)).dataset("val")
    np.save(voc_root / "cls_labels.npy", {voc_name(2): np.zeros(5)})
    with pytest.raises(DataFileError, match=r"cls_labels.npy: labels of '2007_000002' have shape \(5,\)"):
        VOCDataModule(str(voc_root)).dataset("val")


def test_classes_txt_makes_a_custom_dataset(tmp_path: Path) -> None:
    names = ["background", "cat", "dog", "sun"]
    root = write_fake_voc(tmp_path / "custom", n=2, size=SIZE, class_names=names)
    dm = _plain(root, supervision="scribble")
    assert dm.class_names == names and dm.num_classes == 3
    sample = dm.dataset("train")[0]  # the scribble XML tags use the custom names
    assert sample["cls_labels"].tolist() == [1.0, 0.0, 1.0]  # classes 1 (square) and 3 (bar)
    assert set(np.unique(sample["sparse"].numpy())) == {0, 3, 255}


@pytest.mark.parametrize("source", ["json", "png"])
def test_points_are_rasterised_as_discs_of_diameter_3(tmp_path: Path, source: str) -> None:
    root = write_fake_voc(tmp_path / "VOC2012", n=4, size=SIZE, points=source, scribbles=None)
    dataset = _plain(root, supervision="point").dataset("train")
    sample = dataset[1]  # image 1: square class 2, bar class 4
    expected = np.full((SIZE, SIZE), 255, np.uint8)
    _plus(expected, 12, 12, 2)
    _plus(expected, 24, 27, 4)
    _plus(expected, 44, 44, 0)  # the background click
    np.testing.assert_array_equal(sample["sparse"].numpy(), expected)
    assert "sparse" not in VOCDataModule(str(root), supervision="point").dataset("val")[0]


@pytest.mark.parametrize("source", ["xml", "png"])
def test_scribbles_are_drawn_3_px_wide(tmp_path: Path, source: str) -> None:
    root = write_fake_voc(tmp_path / "VOC2012", n=4, size=SIZE, points=None, scribbles=source)
    sample = _plain(root, supervision="scribble").dataset("train")[1]  # bar class 4
    expected = np.full((SIZE, SIZE), 255, np.uint8)
    for row, cls in ((27, 4), (45, 0)):  # polylines from x = 4 to 43, 3 px wide, round ends
        expected[row - 1, 4:44] = expected[row + 1, 4:44] = cls
        expected[row, 3:45] = cls
    np.testing.assert_array_equal(sample["sparse"].numpy(), expected)


def test_sparse_labels_follow_the_flip(voc_root: Path) -> None:
    dm = VOCDataModule(str(voc_root), supervision="point", crop_size=None, scale_range=(1.0, 1.0), hflip=True)
    dataset = dm.dataset("train")
    plain = _plain(voc_root, supervision="point").dataset("train")[0]
    seen = set()
    for seed in range(12):
        dataset.transform.reseed(seed)
        sample = dataset[0]
        flipped = not torch.equal(sample["sparse"], plain["sparse"])
        seen.add(flipped)
        for key in ("sparse", "mask", "image"):
            expected = plain[key].flip(-1) if flipped else plain[key]
            assert torch.equal(sample[key], expected), key
    assert seen == {True, False}


def test_sparse_labels_stay_on_their_class_under_scale_crop_and_flip(voc_root: Path) -> None:
    for supervision in ("point", "scribble"):
        dm = VOCDataModule(str(voc_root), supervision=supervision, crop_size=32, scale_range=(0.7, 1.3))
        dataset = dm.dataset("train")
        for seed in range(6):
            dataset.transform.reseed(seed)
            sample = dataset[seed % 4]
            labelled = sample["sparse"] != 255
            assert sample["sparse"].shape == (32, 32) and labelled.any()
            assert torch.equal(sample["sparse"][labelled], sample["mask"][labelled])


def test_dense_training_reads_mask_dir_but_validation_reads_ground_truth(
    voc_root: Path, tmp_path: Path
) -> None:
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    for i in range(4):
        Image.fromarray(np.full((SIZE, SIZE), 7, np.uint8)).save(pseudo / f"{voc_name(i)}.png")
    dm = _plain(voc_root, supervision="dense", mask_dir=str(pseudo))
    train = dm.dataset("train")[0]
    assert (train["mask"] == 7).all() and train["cls_labels"].nonzero().flatten().tolist() == [6]
    np.testing.assert_array_equal(dm.dataset("val")[0]["mask"].numpy(), fake_mask(2, SIZE, 20))
    (pseudo / f"{voc_name(3)}.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"1 sample\(s\) lack a file, first: .*pseudo/2007_000003.png"
    ):
        _plain(voc_root, supervision="dense", mask_dir=str(pseudo)).dataset("train")
    with pytest.raises(ValueError, match="mask_dir is only read with supervision='dense'"):
        VOCDataModule(str(voc_root), mask_dir=str(pseudo))
    with pytest.raises(FileNotFoundError, match=r"mask_dir .*nowhere does not exist"):
        VOCDataModule(str(voc_root), supervision="dense", mask_dir=str(tmp_path / "nowhere"))


def test_missing_root_gives_a_hint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent does not exist.*wsss synth voc --root <dir>"):
        VOCDataModule(str(tmp_path / "absent"))


def test_split_list_errors_name_the_file(voc_root: Path) -> None:
    (voc_root / "ImageSets/Segmentation/empty.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"empty.txt: the split 'empty' lists no images"):
        VOCDataModule(str(voc_root), val_split="empty").dataset("val")
    with pytest.raises(
        FileNotFoundError,
        match=r"nope.txt not found; available in .*\['empty', 'train', 'train_aug', 'val'\]",
    ):
        VOCDataModule(str(voc_root), val_split="nope").dataset("val")


def test_mask_with_unknown_class_names_the_file(voc_root: Path) -> None:
    mask_path = voc_root / "SegmentationClassAug" / f"{voc_name(2)}.png"
    bad = fake_mask(2, SIZE, 20)
    bad[10, 10] = 21
    Image.fromarray(bad).save(mask_path)
    with pytest.raises(
        DataFileError, match=rf"{mask_path}: class ids \[21\] are beyond the class list \(0..20"
    ):
        VOCDataModule(str(voc_root)).dataset("val")[0]


def test_mask_of_another_size_names_both_files(voc_root: Path) -> None:
    mask_path = voc_root / "SegmentationClassAug" / f"{voc_name(2)}.png"
    Image.fromarray(np.zeros((SIZE, SIZE + 1), np.uint8)).save(mask_path)
    with pytest.raises(
        DataFileError, match=rf"{mask_path}: size \(48, 49\) differs from its image .*2007_000002.png"
    ):
        VOCDataModule(str(voc_root)).dataset("val")[0]


def test_corrupt_image_names_the_file(voc_root: Path) -> None:
    image_path = voc_root / "JPEGImages" / f"{voc_name(2)}.png"
    image_path.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataFileError, match=rf"{image_path}: cannot decode image"):
        VOCDataModule(str(voc_root)).dataset("val")[0]


def test_missing_sparse_sources_name_what_was_looked_for(voc_root: Path) -> None:
    (voc_root / "whats_the_point/voc_whats_the_point.json").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"none of .*SparseLabels/point, .*voc_whats_the_point.json"
    ):
        VOCDataModule(str(voc_root), supervision="point").dataset("train")
    (voc_root / "whats_the_point/voc_whats_the_point.json").write_text('{"2007_000000": []}')
    with pytest.raises(ValueError, match=r"point.json: 3 training image\(s\) have no click inside them"):
        VOCDataModule(str(voc_root), supervision="point").dataset("train")
    (voc_root / "scribble_annotation/pascal_2012" / f"{voc_name(1)}.xml").write_text("<annotation><polygon>")
    dataset = VOCDataModule(str(voc_root), supervision="scribble").dataset("train")
    with pytest.raises(DataFileError, match=r"2007_000001.xml: cannot read scribbles"):
        dataset[1]


def test_clicks_outside_are_counted_per_image_and_an_image_left_without_any_fails(
    voc_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clicks_file = voc_root / "whats_the_point/voc_whats_the_point.json"
    background_file = voc_root / "whats_the_point/voc_whats_the_point_bg_from_scribbles.json"
    clicks, background = read_points_json(clicks_file), read_points_json(background_file)
    clicks[voc_name(1)].append({"cls": 1, "x": SIZE + 0.4, "y": 3})  # rounds to column 48: outside
    for point in clicks[voc_name(2)] + background[voc_name(2)]:
        point["y"] = -2
    write_points_json(clicks, clicks_file)
    write_points_json(background, background_file)
    with pytest.raises(
        ValueError,
        match=r"voc_whats_the_point.json: 1 training image\(s\) have no click inside them, first: "
        r"'2007_000002' \(all 3 clicks lie outside its 48x48 image\) \(set skip_bad_samples",
    ):
        VOCDataModule(str(voc_root), supervision="point").dataset("train")

    dataset = _plain(voc_root, supervision="point", skip_bad_samples=True).dataset("train")
    assert dataset.names == [voc_name(i) for i in (0, 1, 3)]
    assert dataset.skipped == [(str(clicks_file), "2007_000002: all 3 clicks lie outside its 48x48 image")]
    assert "clicks outside their image, in 1 image(s): 2007_000001: 1 of 4" in caplog.text


def test_skip_bad_samples_covers_ids_missing_from_the_labels_file_and_blames_missing_images(
    tmp_path: Path,
) -> None:
    root = write_fake_voc(tmp_path / "VOC2012", n=4, size=SIZE, labels_npy=True)
    labels = np.load(root / "cls_labels.npy", allow_pickle=True).item()
    del labels[voc_name(1)], labels[voc_name(3)]
    np.save(root / "cls_labels.npy", labels)
    (root / "JPEGImages" / f"{voc_name(3)}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"lack a file, first: .*JPEGImages/2007_000003.jpg"):
        VOCDataModule(str(root)).dataset("train")
    with pytest.raises(ValueError, match=r"cls_labels.npy: no labels for 1 image\(s\) of split 'train', "
                       r"first: '2007_000001' \(set skip_bad_samples=True"):
        VOCDataModule(str(root), train_split="train").dataset("train")
    dataset = VOCDataModule(str(root), skip_bad_samples=True).dataset("train")
    assert dataset.names == [voc_name(0), voc_name(2)]
    assert dataset.skipped == [
        (str(root / "JPEGImages" / f"{voc_name(3)}.jpg"), "file not found"),
        (str(root / "cls_labels.npy"), "2007_000001: no labels"),
    ]
