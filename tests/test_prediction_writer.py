"""Stage 2 pieces: argmax with label suppression, safe folders, atomic PNGs, de-normalisation, and folders
that always hold the masks of exactly one finished run."""

import errno
import io
import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import wsss.atomic
from wsss.callbacks.prediction_writer import PseudoMaskWriter, denormalize, masks_from_scores
from wsss.pseudo.io import MANIFEST, MARKER, check_mask_folder, prepare_output_dir, write_mask_png


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


class NamedScores(L.LightningModule):
    """Predicts class ``len(name) % 3`` everywhere for each name of the batch; fails at batch ``fail_at``."""

    num_classes = 2

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fail_at = fail_at

    def predict_step(self, names: list[str], batch_idx: int) -> dict:
        """Scores (B, 3, 5, 7) peaking at each name's class."""
        if batch_idx == self.fail_at:
            raise RuntimeError("killed mid-run")
        scores = torch.zeros(len(names), 3, 5, 7)
        for i, name in enumerate(names):
            scores[i, len(name) % 3] = 1
        return {"scores": scores, "name": list(names)}


def predict_masks(names: list[str], output_dir: Path, fail_at: int | None = None) -> None:
    """Run a ``PseudoMaskWriter`` into ``output_dir`` over ``names``, one per batch."""
    writer = PseudoMaskWriter(str(output_dir))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, callbacks=[writer])
    trainer.predict(NamedScores(fail_at), DataLoader(names, batch_size=1), return_predictions=False)


def test_a_rerun_replaces_the_folder_whole_and_a_failed_run_leaves_it_alone(tmp_path: Path):
    out = tmp_path / "pseudo_masks"
    predict_masks(["a", "bb", "ccc"], out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.png", "bb.png", "ccc.png", MANIFEST]
    assert json.loads((out / MANIFEST).read_text()) == {"count": 3, "masks": ["a", "bb", "ccc"]}
    assert np.array(Image.open(out / "bb.png")).tolist() == [[2] * 7] * 5
    check_mask_folder(out)

    with pytest.raises(RuntimeError, match="killed mid-run"):
        predict_masks(["a", "dd"], out, fail_at=1)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.png", "bb.png", "ccc.png", MANIFEST]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pseudo_masks"], "no staging folder is left"

    predict_masks(["dd"], out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "dd.png", MANIFEST], "no stale mask of run 1"
    check_mask_folder(out)


def test_stage3_refuses_incomplete_or_mixed_mask_folders(tmp_path: Path):
    out = tmp_path / "pseudo_masks"
    predict_masks(["a", "bb"], out)
    write_mask_png(np.zeros((2, 2), np.uint8), out / "old.png")
    with pytest.raises(ValueError, match=r"mixes runs: 1 PNG\(s\) not listed .* \(first: old.png\) and 0 "):
        check_mask_folder(out)
    (out / "old.png").unlink()
    (out / "a.png").unlink()
    with pytest.raises(ValueError, match=r"mixes runs: 0 PNG\(s\) .* 1 listed PNG\(s\) missing \(first: a"):
        check_mask_folder(out)
    prepare_output_dir(out)  # a writer started rewriting it in place, and was stopped
    with pytest.raises(ValueError, match=f"mask_dir {out} is incomplete: it has no {MANIFEST}"):
        check_mask_folder(out)
    foreign = tmp_path / "from_elsewhere"
    foreign.mkdir()
    write_mask_png(np.zeros((2, 2), np.uint8), foreign / "x.png")
    check_mask_folder(foreign)


def test_stage3_datamodule_refuses_an_incomplete_mask_dir(synthetic_voc: Path, tmp_path: Path):
    from wsss.data.voc import VOCDataModule

    out = prepare_output_dir(tmp_path / "pseudo_masks")
    with pytest.raises(ValueError, match="is incomplete"):
        VOCDataModule(str(synthetic_voc), supervision="dense", mask_dir=str(out))


def test_mask_pngs_get_the_umask_mode(tmp_path: Path):
    old = os.umask(0o022)
    try:
        write_mask_png(np.zeros((2, 2), np.uint8), tmp_path / "m.png")
    finally:
        os.umask(old)
    assert (tmp_path / "m.png").stat().st_mode & 0o777 == 0o644


def test_a_full_disk_while_writing_a_mask_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    class FullDisk(io.FileIO):
        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wsss.atomic, "open", FullDisk, raising=False)
    with pytest.raises(OSError, match=f"no space left in {tmp_path} \\(while writing m.png\\)"):
        write_mask_png(np.zeros((2, 2), np.uint8), tmp_path / "m.png")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
