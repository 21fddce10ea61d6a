"""Iterative pseudo-mask refinement (Hanna et al. 2023, sec. 4.4, 5.5) as a callback on stage-3 training."""

import json
import logging
from pathlib import Path

import lightning as L
import torch

from wsss.data.base import WSSSDataModule
from wsss.data.io import read_label_png
from wsss.eval import SegmentationIoU
from wsss.pseudo.io import prepare_output_dir, write_manifest, write_mask_png

log = logging.getLogger(__name__)
STATE_FILE = "refinement_state.json"


class RefinementLoop(L.Callback):
    """Train a segmenter for ``epochs_per_iteration`` epochs on the current masks, then regenerate them.

    Iteration 0 is the DataModule's ``mask_dir`` (the stage-2 pseudo-masks). At the end of every
    ``epochs_per_iteration`` epochs, iteration i predicts the ``predict`` split (the training tiles, full
    images) with the current model into ``<output_dir>/iter_<i>/`` (argmax; with ``restrict_to_labels`` only
    over the image's labels and background, the usual WSSS rule — the paper does not say), scores the
    masks against the ground truth (``refine/miou``, with ``refine/iteration``) and points the DataModule's
    ``mask_dir`` there, so the next epochs train on them (the train dataset is rebuilt; the trainer reloads
    its loaders every ``epochs_per_iteration`` epochs). ``trainer.max_epochs`` must equal
    ``epochs_per_iteration * iterations``. The model keeps training across iterations (it is not
    re-initialised).

    Resuming: the iteration index, the mask folder of each iteration and the mIoUs are kept in the
    checkpoint and in ``<output_dir>/refinement_state.json``; a run started with ``ckpt_path`` continues on
    the masks of the latest iteration either records (a fresh run starts again from iteration 0).
    """

    def __init__(self, output_dir: str, epochs_per_iteration: int = 10, iterations: int = 3,
                 restrict_to_labels: bool = False, palette: bool = True) -> None:
        if epochs_per_iteration < 1 or iterations < 1:
            raise ValueError(f"RefinementLoop: epochs_per_iteration and iterations must be at least 1, got "
                             f"{epochs_per_iteration} and {iterations}")
        self.output_dir = Path(output_dir)
        self.epochs_per_iteration = epochs_per_iteration
        self.iterations = iterations
        self.restrict_to_labels = restrict_to_labels
        self.palette = palette
        self.iteration = 0
        self.mask_dirs: dict[int, str] = {}
        self.miou: dict[int, float] = {}

    def state_dict(self) -> dict:
        """The iteration index, the mask folder of every iteration and their mIoUs."""
        return {"iteration": self.iteration, "mask_dirs": dict(self.mask_dirs), "miou": dict(self.miou)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the iteration state from a checkpoint."""
        self.iteration = int(state_dict["iteration"])
        self.mask_dirs = {int(k): v for k, v in state_dict["mask_dirs"].items()}
        self.miou = {int(k): float(v) for k, v in state_dict["miou"].items()}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the data and epochs, and make the trainer reload its loaders once per iteration."""
        if stage != "fit":
            return
        dm = trainer.datamodule
        if not isinstance(dm, WSSSDataModule) or dm.supervision != "dense" or dm.mask_dir is None:
            raise ValueError("RefinementLoop needs a WSSSDataModule with supervision='dense' and mask_dir "
                             "set to the initial pseudo-masks")
        expected = self.epochs_per_iteration * self.iterations
        if trainer.max_epochs != expected:
            raise ValueError(f"RefinementLoop: trainer.max_epochs is {trainer.max_epochs}, but "
                             f"{self.iterations} iterations of {self.epochs_per_iteration} epochs "
                             f"need {expected}")
        if trainer.reload_dataloaders_every_n_epochs not in (0, self.epochs_per_iteration):
            raise ValueError("RefinementLoop sets reload_dataloaders_every_n_epochs to epochs_per_iteration; "
                             f"got {trainer.reload_dataloaders_every_n_epochs}")
        trainer.reload_dataloaders_every_n_epochs = self.epochs_per_iteration

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Resume from the saved state (with ``ckpt_path``) or start at iteration 0; score iteration 0."""
        dm = trainer.datamodule
        saved = self.output_dir / STATE_FILE
        if trainer.ckpt_path is None:
            self.iteration, self.mask_dirs, self.miou = 0, {}, {}
        elif saved.is_file() and int(json.loads(saved.read_text())["iteration"]) > self.iteration:
            self.load_state_dict(json.loads(saved.read_text()))
        if not self.mask_dirs:
            self.iteration, self.mask_dirs = 0, {0: str(dm.mask_dir)}
        self._use_masks(dm, Path(self.mask_dirs[self.iteration]))
        if 0 not in self.miou:
            self.miou[0] = self._score_folder(dm, Path(self.mask_dirs[0]), pl_module.num_classes)
            self._report(trainer, 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """At the end of each iteration, regenerate the masks with the current model and train on them."""
        done = (trainer.current_epoch + 1) // self.epochs_per_iteration
        if (trainer.current_epoch + 1) % self.epochs_per_iteration or done <= self.iteration:
            return
        folder = prepare_output_dir(self.output_dir / f"iter_{done}")
        self.miou[done] = self._predict_folder(trainer.datamodule, pl_module, folder)
        self.iteration, self.mask_dirs[done] = done, str(folder)
        self._use_masks(trainer.datamodule, folder)
        self._report(trainer, done)

    def _report(self, trainer: L.Trainer, iteration: int) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if trainer.is_global_zero:
            (self.output_dir / STATE_FILE).write_text(json.dumps(self.state_dict(), indent=2))
        log.info("refinement iteration %d: pseudo-mask mIoU %.4f", iteration, self.miou[iteration])
        for logger in trainer.loggers:
            logger.log_metrics({"refine/miou": self.miou[iteration], "refine/iteration": iteration},
                               step=trainer.global_step)

    @staticmethod
    def _use_masks(dm: WSSSDataModule, folder: Path) -> None:
        dm.mask_dir = folder
        dm.datasets.pop("train", None)

    @staticmethod
    def _score_folder(dm: WSSSDataModule, folder: Path, num_classes: int) -> float:
        """mIoU of the mask PNGs in ``folder`` against the ground truth of the predict split."""
        iou = SegmentationIoU(num_classes=num_classes + 1)
        for batch in dm.predict_dataloader():
            masks = [torch.from_numpy(read_label_png(folder / f"{n}.png")).long() for n in batch["name"]]
            iou.update(torch.stack(masks), batch["mask"])
        return float(iou.compute())

    @torch.no_grad()
    def _predict_folder(self, dm: WSSSDataModule, pl_module: L.LightningModule, folder: Path) -> float:
        """Write the argmax masks of the predict split into ``folder``; their mIoU against the truth."""
        was_training = pl_module.training
        pl_module.eval()
        iou = SegmentationIoU(num_classes=pl_module.num_classes + 1).to(pl_module.device)
        names = []
        for batch in dm.predict_dataloader():
            logits = pl_module(batch["image"].to(pl_module.device))
            if self.restrict_to_labels:
                labels = batch["cls_labels"].to(logits.device)
                allowed = torch.cat([torch.ones_like(labels[:, :1]), labels], 1) > 0
                logits = logits.masked_fill(~allowed[:, :, None, None], float("-inf"))
            masks = logits.argmax(1)
            for name, mask in zip(batch["name"], masks.cpu().numpy(), strict=True):
                write_mask_png(mask, folder / f"{name}.png", self.palette)
            names += batch["name"]
            iou.update(masks, batch["mask"].to(pl_module.device))
        write_manifest(folder, names)
        pl_module.train(was_training)
        return float(iou.compute())
