"""Stage 2: the prediction writer that turns score maps into pseudo-mask PNGs and evaluates them."""

import json
import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from wsss.atomic import atomic_write
from wsss.eval import SegmentationIoU, ThresholdSweepIoU, iou_table
from wsss.pseudo.io import (
    check_output_dir,
    publish_mask_folder,
    staging_dir,
    start_mask_folder,
    write_mask_png,
)
from wsss.pseudo.refiner import Refiner


def denormalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Undo the DataModule's per-channel normalisation: back to the raw pixel scale."""
    shape = (1, -1, 1, 1)
    return images * images.new_tensor(std).view(shape) + images.new_tensor(mean).view(shape)


def masks_from_scores(scores: Tensor, cls_labels: Tensor | None) -> Tensor:
    """Argmax over (B, K+1, H, W) scores; classes absent from the image labels are never chosen."""
    if cls_labels is not None:
        allowed = torch.cat([torch.ones_like(cls_labels[:, :1]), cls_labels], dim=1).bool()
        scores = scores.masked_fill(~allowed[:, :, None, None], float("-inf"))
    return scores.argmax(1)


class PseudoMaskWriter(BasePredictionWriter):
    """Write ``<output_dir>/<name>.png`` for every predicted image; score them where ground truth exists.

    The method's ``predict_step`` supplies ``scores`` (B, K+1, H, W, background first), and optionally
    ``cams``, ``cls_labels``, ``mask`` and ``image``. An optional ``refiner`` (random walk, CRF,
    pixel-adaptive) refines the scores first; a random walk takes the method's ``patch_affinity(images)``.
    A non-empty folder that wsss did not create (such as ground truth) is refused. The masks of a run go
    into a fresh hidden folder beside ``output_dir`` that replaces it, with a ``manifest.json`` listing
    them, only once the run is complete, so ``output_dir`` always holds the masks of exactly one finished
    run (stage 3 checks the manifest). With ground truth, the pseudo-mask mIoU, the seed mIoU of the CAMs
    under the best background threshold, and a per-class table go to ``metrics.json`` and ``iou_table.md``
    in ``output_dir`` and to the loggers. An image is scored once even if it comes again
    (``skip_bad_samples`` replaces an unreadable sample by the next readable one).
    """

    def __init__(self, output_dir: str, refiner: Refiner | None = None, palette: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.refiner = refiner
        self.palette = palette
        self.results: dict[str, float] = {}
        self.scored: set[str] = set()
        self.staging: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the output folder and create the metrics for the number of classes."""
        if stage != "predict":
            return
        if (
            self.refiner is not None
            and self.refiner.needs_affinity
            and not hasattr(pl_module, "patch_affinity")
        ):
            raise ValueError(
                f"{type(self.refiner).__name__} walks on a patch affinity, but {type(pl_module).__name__} "
                "has no "
                "patch_affinity(images) method; choose a CRF or pixel-adaptive refiner for this method"
            )
        check_output_dir(self.output_dir)  # on every rank, so that all of them stop alike
        if trainer.is_global_zero:
            start_mask_folder(self.output_dir)
        trainer.strategy.barrier("wsss_mask_folder")
        self.staging = staging_dir(self.output_dir)
        self.scored = set()
        num_classes = pl_module.num_classes + 1
        self.mask_iou = SegmentationIoU(num_classes=num_classes).to(pl_module.device)
        self.seed_iou = ThresholdSweepIoU(num_classes=num_classes).to(pl_module.device)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict,
        batch_indices,
        batch,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Refine, take the argmax, write each mask and update the metrics."""
        scores, labels = prediction["scores"], prediction.get("cls_labels")
        if self.refiner is not None:
            dm = trainer.datamodule
            image = denormalize(prediction["image"], dm.mean, dm.std)
            affinity = pl_module.patch_affinity(prediction["image"]) if self.refiner.needs_affinity else None
            scores = self.refiner(image, scores, affinity)
        masks = masks_from_scores(scores, labels)
        for name, mask in zip(prediction["name"], masks.cpu().numpy(), strict=True):
            write_mask_png(mask, self.staging / f"{name}.png", self.palette)
        new = []
        for i, name in enumerate(prediction["name"]):
            if name not in self.scored:
                self.scored.add(name)
                new.append(i)
        if "mask" in prediction and new:
            self.mask_iou.update(masks[new], prediction["mask"][new])
            if "cams" in prediction:
                self.seed_iou.update(prediction["cams"][new], prediction["mask"][new],
                                     None if labels is None else labels[new])

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Score the masks (when ground truth was seen), then put the complete folder in place."""
        self.report_scores(trainer)
        trainer.strategy.barrier("wsss_masks_written")  # every rank's masks are in the staging folder
        if trainer.is_global_zero:
            publish_mask_folder(self.staging, self.output_dir)
            written = sum(1 for _ in self.output_dir.glob("*.png"))
            print(f"{type(self).__name__}: wrote {written} mask(s) to {self.output_dir}")
            if self.results:
                rank_zero_info(f"pseudo-mask scores: {self.results}")
        self.staging = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException) -> None:
        """Drop the masks of an unfinished run (``output_dir`` keeps the last complete one)."""
        if self.staging is not None and trainer.is_global_zero:
            shutil.rmtree(self.staging, ignore_errors=True)

    def report_scores(self, trainer: L.Trainer) -> None:
        """Save the scores of the written masks into the staging folder and log them (with ground truth)."""
        if not trainer.strategy.reduce_boolean_decision(self.mask_iou.update_called, all=False):
            return  # every rank decides alike: compute() syncs, so no rank may skip it alone
        self.results = {"pseudo_mask_miou": float(self.mask_iou.compute())}
        table = iou_table(self.mask_iou.per_class_iou(), trainer.datamodule.class_names)
        if trainer.strategy.reduce_boolean_decision(self.seed_iou.update_called, all=False):
            self.results |= {
                "seed_miou": float(self.seed_iou.compute()),
                "seed_bg_threshold": float(self.seed_iou.best_threshold()),
            }
        if trainer.is_global_zero:
            for name, text in (("metrics.json", json.dumps(self.results, indent=2)), ("iou_table.md", table)):
                data = text.encode()
                atomic_write(self.staging / name, lambda file, data=data: file.write(data), durable=False)
            rank_zero_info(table)
        for logger in trainer.loggers:
            logger.log_metrics({f"predict/{k}": v for k, v in self.results.items()})
