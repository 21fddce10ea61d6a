"""Pictures (previews, overlays, panels, CAM snapshots) and the offline-first wandb logger."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from wsss.callbacks import CAMSnapshot
from wsss.data.voc import VOCDataModule
from wsss.loggers import WandbLogger
from wsss.main import main
from wsss.methods.cam_baseline import CAMBaseline
from wsss.resume import find_last_checkpoint
from wsss.viz import cam_overlay, colorize_mask, image_preview, tile_panel

RECIPES = Path(__file__).parents[1] / "recipes"


def test_preview_stretches_each_shown_band_and_handles_any_band_count():
    image = torch.stack([torch.full((2, 2), 5.0), torch.tensor([[0.0, 1.0], [2.0, 4.0]]), torch.zeros(2, 2)])
    preview = image_preview(image, rgb=(1, 1, 1))
    assert preview.shape == (2, 2, 3) and preview[..., 0].tolist() == [[0, 63], [127, 255]]
    assert image_preview(torch.randn(2, 5, 5)).shape == (5, 5, 3)  # two SAR bands: the first one in grey


def test_overlay_colours_and_panel_layout():
    preview = np.zeros((4, 4, 3), np.uint8)
    hot = cam_overlay(preview, torch.ones(4, 4), alpha=1.0)
    assert tuple(hot[0, 0]) == (128, 0, 0)  # jet at 1.0 is dark red
    assert tuple(colorize_mask(torch.tensor([[1, 255]]))[0, 0]) == (128, 0, 0)
    panel = tile_panel([[preview, hot], [preview, hot]], ["a", "b"], scale=2, gap=4)
    assert panel.shape == (18 + 2 * (8 + 4), 2 * (8 + 4), 3)


def test_cam_snapshot_writes_a_panel_every_n_epochs(synthetic_voc, tmp_path):
    data = VOCDataModule(
        str(synthetic_voc), batch_size=8, eval_batch_size=4, crop_size=48, train_split="train_aug"
    )
    model = CAMBaseline(backbone="resnet18", num_classes=data.num_classes, cam_scales=(1.0,))
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[CAMSnapshot(every_n_epochs=2, num_images=3)],
    )
    trainer.fit(model, datamodule=data)
    panels = sorted((tmp_path / "cam_snapshots").glob("*.png"))
    assert [p.name for p in panels] == ["epoch_001.png"]
    width, height = Image.open(panels[0]).size
    assert (width, height) == (4 * (96 + 4), 18 + 3 * (96 + 4))


@pytest.mark.parametrize(("mode", "offline"), [(None, True), ("offline", True), ("online", False)])
def test_wandb_logger_is_offline_unless_asked(monkeypatch: pytest.MonkeyPatch, tmp_path, mode, offline):
    if mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", mode)
    assert WandbLogger(save_dir=str(tmp_path))._offline is offline


def test_wandb_run_keeps_its_files_and_checkpoints_in_the_run_directory(tiny_fit_args, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    main(["fit", "--config", str(RECIPES / "cam_baseline_synthetic.yaml"), "--config",
          str(RECIPES / "_base_/wandb.yaml"), *tiny_fit_args, "--trainer.callbacks=[]"])
    last = find_last_checkpoint(tmp_path)
    assert last.parent.parent.parent == tmp_path / "wsss", last
    assert (tmp_path / "config.yaml").is_file()
    assert any((tmp_path / "wandb").glob("offline-run-*")), "wandb's files are in the run folder"
