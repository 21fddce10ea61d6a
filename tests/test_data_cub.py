"""CUBDataModule: classes, one-hot labels, splits and boxes moved with the eval resize."""

from pathlib import Path

import numpy as np
import pytest

from tests.data.fake_cub import write_fake_cub
from wsss.data import CUBDataModule


def test_classes_splits_and_train_samples(tmp_path: Path) -> None:
    write_fake_cub(tmp_path, num_classes=3, per_class=2)
    dm = CUBDataModule(str(tmp_path), crop_size=32, resize_size=36)  # the parent of CUB_200_2011 works too
    assert dm.class_names == ["background", "Bird_1", "Bird_2", "Bird_3"] and dm.num_classes == 3
    train = dm.dataset("train")  # odd image ids: the first image of each class
    assert train.names == ["Bird_1_0000", "Bird_2_0000", "Bird_3_0000"]
    sample = train[2]
    assert set(sample) == {"image", "label", "cls_labels", "name"}  # no boxes: a crop may cut them away
    assert sample["image"].shape == (3, 32, 32) and sample["label"].item() == 2
    assert sample["cls_labels"].tolist() == [0.0, 0.0, 1.0]


def test_eval_boxes_follow_the_resize(tmp_path: Path) -> None:
    cub = write_fake_cub(tmp_path, num_classes=2, per_class=2)
    dm = CUBDataModule(str(cub), crop_size=32, eval_batch_size=2)
    sample = dm.dataset("test")[1]
    assert sample["name"] == "Bird_2_0001" and sample["label"].item() == 1
    # box x, y, w, h = 6, 8, 30, 20 on 60 x 40 pixels -> xyxy (6, 8, 36, 28) scaled by (32/60, 32/40)
    np.testing.assert_allclose(sample["boxes"].numpy(), [[3.2, 6.4, 19.2, 22.4]], atol=1e-4)
    batch = next(iter(dm.test_dataloader()))
    assert batch["boxes"].shape == (2, 1, 4) and batch["image"].shape == (2, 3, 32, 32)


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    cub = write_fake_cub(tmp_path)
    with pytest.raises(ValueError, match="CUB splits are 'train' and 'test', got 'val'"):
        CUBDataModule(str(cub), val_split="val").dataset("val")
    with pytest.raises(ValueError, match="supports supervision"):
        CUBDataModule(str(cub), supervision="point")
    (cub / "image_class_labels.txt").write_text("1 7\n2 1\n3 1\n4 2\n5 2\n6 3\n")
    with pytest.raises(ValueError, match=r"image_class_labels.txt: class 7 of image 1 is outside 1..3"):
        CUBDataModule(str(cub)).dataset("train")
    (cub / "bounding_boxes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"bounding_boxes.txt not found.*Caltech-UCSD Birds"):
        CUBDataModule(str(cub))
