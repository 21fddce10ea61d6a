"""Stage 2 pieces: argmax with label suppression, safe folders, atomic PNGs, de-normalisation."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.callbacks.prediction_writer import denormalize, masks_from_scores
from wsss.pseudo.io import MARKER, prepare_output_dir, write_mask_png


def test_absent_classes_are_never_chosen_but_background_always_may_be():
    scores = torch.tensor([0.2, 0.9, 0.5, 0.1])[None, :, None, None].expand(2, 4, 1, 1)
    labels = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert masks_from_scores(scores, labels).flatten().tolist() == [2, 0]
    assert masks_from_scores(scores, None).flatten().tolist() == [1, 1]


def test_denormalize_inverts_the_normalisation():
    raw = torch.rand(2, 3, 4, 4) * 255
    mean, std = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)
    normalised = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(denormalize(normalised, mean, std), raw, atol=1e-4)


def test_output_folder_refuses_foreign_non_empty_folders(tmp_path: Path):
    gt = tmp_path / "SegmentationClassAug"
    gt.mkdir()
    (gt / "a.png").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="ground truth"):
        prepare_output_dir(gt)
    ours = prepare_output_dir(tmp_path / "pseudo")
    write_mask_png(np.zeros((2, 2), np.uint8), ours / "a.png")
    assert (
        prepare_output_dir(ours) == ours and (ours / MARKER).exists()
    )  # re-running into our own folder is fine


def test_mask_png_round_trips_and_leaves_no_temporary_file(tmp_path: Path):
    mask = np.array([[0, 1, 255], [20, 3, 0]], dtype=np.uint8)
    write_mask_png(mask, tmp_path / "m.png")
    write_mask_png(mask, tmp_path / "g.png", palette=False)
    assert Image.open(tmp_path / "m.png").mode == "P" and Image.open(tmp_path / "g.png").mode == "L"
    assert np.array_equal(np.array(Image.open(tmp_path / "m.png")), mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "m.png"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_mask_png(np.ones((2, 2), np.uint8), tmp_path / "m.png")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        write_mask_png(np.zeros((2, 2), np.uint8), tmp_path / "m.png")
    monkeypatch.undo()
    assert np.array(Image.open(tmp_path / "m.png")).tolist() == [[1, 1], [1, 1]]
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
