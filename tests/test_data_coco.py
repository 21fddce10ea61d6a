"""COCODataModule: the COCO-2014 mask-PNG layout read through the VOC machinery."""

from pathlib import Path

import numpy as np
import pytest

from tests.data.fake_voc import coco_name, fake_mask, write_fake_coco
from wsss.data import COCO_CLASSES, COCODataModule


def test_reads_both_splits_with_81_classes(tmp_path: Path) -> None:
    root = write_fake_coco(tmp_path / "coco", n=2, size=40)
    dm = COCODataModule(str(root))
    assert (
        dm.num_classes == 80 and dm.class_names == list(COCO_CLASSES) and dm.class_names[80] == "toothbrush"
    )
    train, val = dm.dataset("train"), dm.dataset("val")
    assert train.names == [coco_name("train", 0), coco_name("train", 79)]
    assert val.names == [coco_name("val", 0), coco_name("val", 79)]
    sample = val[1]  # index 79: square of class 80, bar of class 2
    np.testing.assert_array_equal(sample["mask"].numpy(), fake_mask(79, 40, 80))
    assert sample["cls_labels"].nonzero().flatten().tolist() == [1, 79]
    assert train[0]["image"].shape[0] == 3 and train[0]["image"].shape[1:] == (224, 224)  # padded crop


def test_only_image_and_dense_supervision(tmp_path: Path) -> None:
    root = write_fake_coco(tmp_path / "coco")
    with pytest.raises(
        ValueError, match=r"COCODataModule supports supervision \['image', 'dense'\], got 'point'"
    ):
        COCODataModule(str(root), supervision="point")


def test_missing_split_list_and_root_are_named(tmp_path: Path) -> None:
    root = write_fake_coco(tmp_path / "coco")
    (root / "val_id.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"val_id.txt not found; available in .*\['train_id'\]"):
        COCODataModule(str(root)).dataset("val")
    with pytest.raises(FileNotFoundError, match=r"nothing does not exist.*COCO 2014 folder"):
        COCODataModule(str(tmp_path / "nothing"))
