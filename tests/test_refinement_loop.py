"""The iterative UNet refinement callback: masks regenerated per iteration, mIoU logged, resumable."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from wsss.callbacks.refinement_loop import RefinementLoop
from wsss.data.dfc2020 import DFC2020DataModule
from wsss.data.io import read_label_png
from wsss.methods.segmentation import SegmentationTask
from wsss.pseudo.io import prepare_output_dir, write_manifest, write_mask_png


@pytest.fixture(scope="module")
def synthetic_dfc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wsss.data.synthetic import make_synthetic_dfc2020

    return make_synthetic_dfc2020(tmp_path_factory.mktemp("dfc"), n_train=4, n_test=2, size=32, seed=1)


class MaskDirProbe(L.Callback):
    """Record the DataModule's mask folder at the start of every training epoch; optionally stop after one."""

    def __init__(self, stop_after_first: bool = False) -> None:
        self.seen: list[Path] = []
        self.stop_after_first = stop_after_first

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen.append(trainer.datamodule.mask_dir)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = trainer.should_stop or self.stop_after_first


def run(root: Path, tmp: Path, initial: Path, probe: MaskDirProbe, ckpt_path: str | None = None):
    dm = DFC2020DataModule(str(root), crop_size=32, batch_size=4, eval_batch_size=4, supervision="dense",
                           mask_dir=str(initial))
    model = SegmentationTask(encoder="resnet18", num_classes=8, in_channels=15, lr=1e-3, optimizer="adamw",
                             scheduler="constant")
    loop = RefinementLoop(str(tmp / "masks"), epochs_per_iteration=1, iterations=2)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp,
                        callbacks=[loop, probe, ModelCheckpoint(dirpath=tmp / "ckpt", save_top_k=-1)])
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return loop, dm


def all_forest_masks(folder: Path) -> tuple[Path, list[str]]:
    """Iteration-0 masks that call every pixel of the 4 training tiles Forest (id 1)."""
    names = [f"ROIs0000_validation_p{i}" for i in range(4)]
    folder = prepare_output_dir(folder)
    for name in names:
        write_mask_png(np.ones((32, 32), np.uint8), folder / f"{name}.png")
    write_manifest(folder, names)
    return folder, names


def test_refinement_iterates_logs_miou_and_resumes(synthetic_dfc: Path, tmp_path: Path):
    initial, names = all_forest_masks(tmp_path / "iter0")

    probe = MaskDirProbe(stop_after_first=True)
    loop, dm = run(synthetic_dfc, tmp_path, initial, probe)  # "interrupted" after the first iteration
    assert loop.iteration == 1 and dm.mask_dir == tmp_path / "masks/iter_1"
    assert sorted(p.stem for p in (tmp_path / "masks/iter_1").glob("*.png")) == sorted(names)

    # iteration 0: all-Forest masks; by hand IoU(Forest) = |GT Forest| / |valid GT|, the others 0 or absent
    truth = [DFC2020DataModule(str(synthetic_dfc)).dataset("predict")[i]["mask"].numpy() for i in range(4)]
    valid = sum(int((t != 255).sum()) for t in truth)
    forest = sum(int((t == 1).sum()) for t in truth)
    present = len({int(c) for t in truth for c in np.unique(t) if c != 255} | {1})
    assert loop.miou[0] == pytest.approx(forest / valid / present)

    resumed = MaskDirProbe()
    ckpt = next((tmp_path / "ckpt").glob("*.ckpt"))
    loop, dm = run(synthetic_dfc, tmp_path, initial, resumed, ckpt_path=str(ckpt))
    assert resumed.seen == [tmp_path / "masks/iter_1"], "the resumed epoch trains on iteration 1's masks"
    assert loop.iteration == 2 and dm.mask_dir == tmp_path / "masks/iter_2"
    state = json.loads((tmp_path / "masks/refinement_state.json").read_text())
    assert state["iteration"] == 2 and set(state["miou"]) == {"0", "1", "2"}
    assert read_label_png(tmp_path / "masks/iter_2" / f"{names[0]}.png").shape == (32, 32)


def test_epochs_must_match_the_iterations(synthetic_dfc: Path, tmp_path: Path):
    initial, _ = all_forest_masks(tmp_path / "iter0")
    dm = DFC2020DataModule(str(synthetic_dfc), supervision="dense", mask_dir=str(initial))
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False,
                        callbacks=[RefinementLoop(str(tmp_path / "m"), epochs_per_iteration=1, iterations=2)])
    with pytest.raises(ValueError, match="max_epochs is 3"):
        trainer.fit(SegmentationTask(encoder="resnet18", num_classes=8, in_channels=15), dm)


def test_restricted_masks_hold_only_the_image_labels(synthetic_dfc: Path, tmp_path: Path):
    initial, names = all_forest_masks(tmp_path / "iter0")
    dm = DFC2020DataModule(str(synthetic_dfc), crop_size=32, batch_size=4, eval_batch_size=4,
                           supervision="dense", mask_dir=str(initial))
    loop = RefinementLoop(str(tmp_path / "m"), epochs_per_iteration=1, iterations=1, restrict_to_labels=True)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        enable_checkpointing=False, callbacks=[loop])
    trainer.fit(SegmentationTask(encoder="resnet18", num_classes=8, in_channels=15, lr=1e-3), dm)
    samples = DFC2020DataModule(str(synthetic_dfc)).dataset("predict")
    for i, name in enumerate(names):
        labels = {int(c) + 1 for c in samples[i]["cls_labels"].nonzero().flatten()}
        found = set(np.unique(read_label_png(tmp_path / "m/iter_1" / f"{name}.png")).tolist())
        assert found and found <= labels | {0}, (name, found, labels)
