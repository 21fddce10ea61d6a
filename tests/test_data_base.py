"""The shared DataModule machinery: image-level labels, loaders, seeding, skipping bad samples, YAML
construction, and reading the synthetic generator's output."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from tests.data.fake_voc import voc_name, write_fake_voc
from wsss.data import DataFileError, DFC2020DataModule, VOCDataModule, WSSSDataModule, image_labels
from wsss.data.synthetic import make_synthetic_voc


def test_image_labels_any_pixel_by_default() -> None:
    mask = np.array([[0, 0, 2], [255, 2, 4]], np.uint8)
    assert image_labels(mask, 4).tolist() == [0.0, 1.0, 0.0, 1.0]  # 0 and 255 are never labels
    assert image_labels(mask, 4, min_fraction=0.3).tolist() == [0.0, 1.0, 0.0, 0.0]  # 2/6 >= 0.3, 1/6 < 0.3


def test_loaders_batch_shapes_and_drop_last(tmp_path: Path) -> None:
    root = write_fake_voc(tmp_path / "VOC2012", n=4, size=48)
    dm = VOCDataModule(str(root), batch_size=3, crop_size=32, supervision="point")
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 1  # 4 > 3: the partial batch is dropped
    batch = batches[0]
    assert batch["image"].shape == (3, 3, 32, 32) and batch["sparse"].shape == (3, 32, 32)
    assert isinstance(batch["name"], list) and len(batch["name"]) == 3
    assert len(list(VOCDataModule(str(root), batch_size=4).train_dataloader())) == 1  # len == batch: kept
    only = list(VOCDataModule(str(root), batch_size=8).train_dataloader())
    assert len(only) == 1 and only[0]["image"].shape[0] == 4  # len < batch: one smaller batch
    val = list(dm.val_dataloader())
    assert len(val) == 2 and val[0]["image"].shape == (1, 3, 48, 48) and "sparse" not in val[0]
    dm.setup("predict")
    assert [b["name"][0] for b in dm.predict_dataloader()] == [voc_name(i) for i in range(4)]


def test_augmentation_is_reproducible_from_torch_seed(tmp_path: Path) -> None:
    root = write_fake_voc(tmp_path / "VOC2012", n=2, size=48)

    def first_sample(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return VOCDataModule(str(root), crop_size=32).dataset("train")[0]["image"]

    assert torch.equal(first_sample(0), first_sample(0))
    assert not all(torch.equal(first_sample(0), first_sample(s)) for s in (1, 2, 3))


def test_corrupt_image_is_skipped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_fake_voc(tmp_path / "VOC2012", n=4, size=48)
    corrupt = root / "JPEGImages" / f"{voc_name(1)}.jpg"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(DataFileError, match=rf"{corrupt}: cannot decode image"):
        VOCDataModule(str(root)).dataset("train")[1]
    dm = VOCDataModule(str(root), skip_bad_samples=True, crop_size=32)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    assert dataset[1]["name"] == voc_name(2)  # the next readable sample replaces it
    assert dataset[1]["name"] == voc_name(2)
    assert dm.skipped_samples == [(str(corrupt), dm.skipped_samples[0][1])]
    assert "cannot decode image" in dm.skipped_samples[0][1]
    with caplog.at_level(logging.WARNING, logger="wsss.data.base"):
        dm.teardown("fit")
    assert "skipped 1 sample file(s)" in caplog.text and str(corrupt) in caplog.text


def test_missing_image_fails_or_is_skipped_at_setup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_fake_voc(tmp_path / "VOC2012", n=4, size=48)
    missing = root / "JPEGImages" / f"{voc_name(0)}.jpg"
    missing.unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"train_aug.txt: 1 sample\(s\) lack a file, first: {missing}"
    ):
        VOCDataModule(str(root)).setup("fit")
    dm = VOCDataModule(str(root), skip_bad_samples=True)
    with caplog.at_level(logging.WARNING, logger="wsss.data.base"):
        dm.setup("fit")
    assert dm.datasets["train"].names == [voc_name(i) for i in (1, 2, 3)]
    assert f"{missing}: file not found" in caplog.text


def test_unsupported_supervision_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "dfc"
    root.mkdir()
    with pytest.raises(ValueError, match=r"DFC2020DataModule supports supervision \['image', 'dense'\]"):
        DFC2020DataModule(str(root), supervision="point")


def test_datamodules_build_from_yaml_with_their_own_defaults(tmp_path: Path) -> None:
    root = write_fake_voc(tmp_path / "VOC2012", n=2, size=48)
    (tmp_path / "dfc").mkdir()
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(WSSSDataModule, "data")
    voc = {
        "class_path": "wsss.data.VOCDataModule",
        "init_args": {"root": str(root), "scale_range": [0.75, 1.25]},
    }
    dfc = {
        "class_path": "wsss.data.DFC2020DataModule",
        "init_args": {"root": str(tmp_path / "dfc"), "bands": "s2"},
    }
    built_voc = parser.instantiate(parser.parse_string(yaml.safe_dump({"data": voc}))).data
    assert built_voc.scale_range == (0.75, 1.25) and built_voc.splits["train"] == "train_aug"
    built_dfc = parser.instantiate(parser.parse_string(yaml.safe_dump({"data": dfc}))).data
    assert (built_dfc.in_channels, built_dfc.modality_channels, built_dfc.crop_size) == (13, (13,), 224)
    assert built_dfc.scale_range == (1.0, 1.0) and built_dfc.splits["train"] == "validation"


def test_synthetic_voc_sparse_files_agree_with_their_png_rasterisation(tmp_path: Path) -> None:
    """The generator writes clicks/scribbles both as JSON/XML and as PNGs: both routes give the same map."""
    root = make_synthetic_voc(tmp_path / "synthetic", n_train=4, n_val=2, size=48, seed=0)
    without_png = tmp_path / "no_png"
    shutil.copytree(root, without_png)
    shutil.rmtree(without_png / "SparseLabels")
    for supervision in ("point", "scribble"):
        kwargs = {"supervision": supervision, "crop_size": None, "scale_range": (1.0, 1.0), "hflip": False}
        from_png = VOCDataModule(str(root), **kwargs).dataset("train")
        from_files = VOCDataModule(str(without_png), **kwargs).dataset("train")
        for i in range(len(from_png)):
            assert torch.equal(from_png[i]["sparse"], from_files[i]["sparse"]), (supervision, i)
