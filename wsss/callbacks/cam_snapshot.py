"""A grid of images, CAM overlays, pseudo-masks and ground truth every N epochs."""

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from wsss.pseudo.background import cams_to_mask
from wsss.viz import cam_overlay, colorize_mask, image_preview, tile_panel


class CAMSnapshot(L.Callback):
    """Every ``every_n_epochs`` validation epochs, draw the first validation images with their CAMs.

    Columns: image, CAM overlay (max over the image's classes), pseudo-mask (the method's background
    threshold), ground truth. Saved as ``<log dir>/cam_snapshots/epoch_XXX.png`` and, when wandb is a
    logger, logged as an image.
    """

    def __init__(self, every_n_epochs: int = 1, num_images: int = 4) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.batch: dict | None = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs,
        batch: dict,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the first validation batch."""
        if batch_idx == 0:
            self.batch = {k: v[: self.num_images] for k, v in batch.items()}

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Draw and save the panel on rank zero."""
        epoch = trainer.current_epoch
        if (
            self.batch is None
            or trainer.sanity_checking
            or not trainer.is_global_zero
            or (epoch + 1) % self.every_n_epochs
        ):
            return
        images, labels = self.batch["image"], self.batch["cls_labels"]
        cams = F.interpolate(pl_module.cams(images, labels), size=images.shape[-2:], mode="bilinear")
        cams = cams * labels[:, :, None, None]
        masks = cams_to_mask(cams, labels, bg_threshold=pl_module.hparams.get("bg_threshold", 0.15))
        rgb = getattr(trainer.datamodule, "rgb_indices", (0, 1, 2))
        rows = []
        for i in range(images.shape[0]):
            preview = image_preview(images[i], rgb)
            row = [preview, cam_overlay(preview, cams[i].amax(0)), colorize_mask(masks[i])]
            if "mask" in self.batch:
                row.append(colorize_mask(self.batch["mask"][i]))
            rows.append(row)
        panel = tile_panel(rows, ["image", "CAM", "pseudo-mask", "ground truth"][: len(rows[0])])
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "cam_snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(panel).save(folder / f"epoch_{epoch:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="cam_snapshot", images=[panel], step=trainer.global_step)
