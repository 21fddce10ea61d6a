"""The readers on the layouts users actually have, at real image sizes (issue 16, items 4-6).

IRN / CRT / SIPE's VOC (devkit ``SegmentationClass`` for ``train`` + ``val`` only, ``cls_labels.npy``,
``train_aug.txt``), SASFormer / TEL's sparse labels next to ``VOCdevkit/``, and COCO labels keyed
``<name>.jpg``.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data.fake_voc import first_class, second_class, write_fake_coco
from tests.data.real_layouts import REAL_SIZES, real_mask, write_devkit_voc
from wsss.data import COCODataModule, DataFileError, VOCDataModule


def _plain(root: Path, **kwargs) -> VOCDataModule:
    """A module whose training transform is the identity (no scale, crop or flip)."""
    return VOCDataModule(str(root), crop_size=None, scale_range=(1.0, 1.0), hflip=False, **kwargs)


@pytest.fixture()
def devkit(tmp_path: Path) -> Path:
    return write_devkit_voc(tmp_path / "data")


def test_irn_layout_trains_stage_1_on_image_labels_and_scores_where_masks_exist(devkit: Path) -> None:
    dm = _plain(devkit)
    train = dm.dataset("train")  # train_aug: 2 devkit images with a mask, 2 SBD images without
    assert len(train) == 4
    for index in range(4):
        sample = train[index]
        height, width = REAL_SIZES[index % 3]
        assert sample["image"].shape == (3, height, width)
        expected = np.zeros(20, np.float32)
        expected[[first_class(index, 20) - 1, second_class(index, 20) - 1]] = 1
        np.testing.assert_array_equal(sample["cls_labels"].numpy(), expected)  # from cls_labels.npy
        if index < 2:  # the devkit mask is read
            np.testing.assert_array_equal(sample["mask"].numpy(), real_mask(index, height, width))
        else:  # no mask: all ignore, so no pixel is scored
            assert (sample["mask"] == 255).all()
    val = dm.dataset("val")[1]  # image 5: 640x426
    np.testing.assert_array_equal(val["mask"].numpy(), real_mask(5, 426, 640))
    predict = VOCDataModule(str(devkit), predict_split="train_aug").dataset("predict")
    shapes = [tuple(predict[i]["mask"].shape) for i in range(len(predict))]
    assert shapes == [(375, 500), (500, 333), (426, 640), (375, 500)]


def test_irn_layout_batches_collate_with_and_without_masks(devkit: Path) -> None:
    dm = VOCDataModule(str(devkit), batch_size=4, crop_size=320)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 320, 320) and batch["mask"].shape == (4, 320, 320)


def test_irn_layout_demands_masks_for_dense_training_and_labels_without_masks(devkit: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"2 sample\(s\) lack a file, first: .*SegmentationClass/2008_000000.png"
    ):
        _plain(devkit, supervision="dense").dataset("train")
    (devkit / "cls_labels.npy").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"'train_aug' has no image-level labels for 2 image\(s\) \(first: '2008_000000'\).*cls_labels",
    ):
        _plain(devkit).dataset("train")
    assert _plain(devkit).dataset("val")[0]["cls_labels"].sum() == 2  # val masks give the labels


def test_sasformer_layout_points_are_read_next_to_vocdevkit(devkit: Path) -> None:
    sample = _plain(devkit, supervision="point").dataset("train")[2]  # SBD image 2, 426x640, no mask
    sparse = sample["sparse"].numpy()
    assert sparse.shape == (426, 640)
    expected = np.full((426, 640), 255, np.uint8)
    for x, y, cls in ((200, 133, first_class(2, 20)), (320, 323, second_class(2, 20)), (630, 55, 0)):
        expected[y, x - 1 : x + 2] = cls
        expected[y - 1 : y + 2, x] = cls
    np.testing.assert_array_equal(sparse, expected)


def test_sasformer_layout_scribbles_are_read_from_the_zip(devkit: Path) -> None:
    dataset = _plain(devkit, supervision="scribble").dataset("train")
    sample = dataset[1]  # 500x333, bar of class 4 at row 3 * 500 // 4 + 4 = 379
    sparse, mask = sample["sparse"], torch.from_numpy(real_mask(1, 500, 333)).long()
    assert sparse.shape == (500, 333)
    assert set(np.unique(sparse.numpy())) == {0, second_class(1, 20), 255}
    assert (sparse[378:381, 8:325] == second_class(1, 20)).all()
    labelled = sparse != 255
    assert torch.equal(sparse[labelled], mask[labelled])


def test_sasformer_layout_errors_name_the_archive(devkit: Path) -> None:
    base = devkit.parent.parent
    (base / "voc_scribbles.zip").write_bytes(b"not a zip")
    with pytest.raises(DataFileError, match=r"voc_scribbles.zip: cannot read the scribbles archive"):
        _plain(devkit, supervision="scribble").dataset("train")
    (base / "voc_scribbles.zip").unlink()
    with pytest.raises(FileNotFoundError, match=r"pascal_2012 .*voc_scribbles.zip \(the SASFormer"):
        _plain(devkit, supervision="scribble").dataset("train")
    (base / "voc_whats_the_point.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"voc_whats_the_point.json \(the SASFormer / TEL layout\)"):
        _plain(devkit, supervision="point").dataset("train")


def test_coco_labels_keyed_by_file_name_are_accepted(tmp_path: Path) -> None:
    root = write_fake_coco(tmp_path / "coco", n=2, size=40)
    names = (root / "train_id.txt").read_text().split()
    vector = np.zeros(80, np.float32)
    vector[[4, 7]] = 1  # deliberately not the mask's classes
    np.save(root / "cls_labels.npy", {f"{name}.jpg": vector for name in names})
    sample = COCODataModule(str(root)).dataset("train")[0]
    np.testing.assert_array_equal(sample["cls_labels"].numpy(), vector)


def test_sasformer_layout_without_train_aug_txt_derives_it_from_sbd(devkit: Path) -> None:
    listed = (devkit / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    (devkit / "ImageSets/Segmentation/train_aug.txt").unlink()
    dataset = _plain(devkit, supervision="scribble").dataset("train")
    assert dataset.names == sorted(listed)  # SBD train + SBD val + VOC train - VOC val
