"""WSOL predictions: one localisation box per image, written as a table and scored where boxes are known."""

import csv
import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from wsss.eval import WSOLAccuracy
from wsss.pseudo.io import prepare_output_dir

COLUMNS = ("name", "class_id", "class_name", "x", "y", "width", "height")


class LocalisationBoxWriter(BasePredictionWriter):
    """Write ``<output_dir>/boxes.csv`` (``boxes_rank<r>.csv`` per process under DDP): per image its name,
    the predicted class (1-based id as CUB's ``classes.txt``, and name) and its box x, y, width, height in
    pixels of the original image (the convention of CUB's ``bounding_boxes.txt``).

    The method's ``predict_step`` supplies ``name``, ``pred`` (B,), ``pred_boxes`` (B, 4) xyxy in pixels of
    the network input of size ``input_size``, and optionally the original ``size`` (B, 2) as (H, W). With
    ``label``, ``boxes`` and ``label_cams``, top-1 / top-5 / GT-known localisation at the method's first
    ``wsol_cam_thresholds`` go to ``metrics.json`` and the loggers.
    """

    def __init__(self, output_dir: str) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.rows: list[tuple] = []
        self.results: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the output folder and create the localisation metric."""
        if stage != "predict":
            return
        prepare_output_dir(self.output_dir)
        self.rows = []
        thresholds = tuple(getattr(pl_module.hparams, "wsol_cam_thresholds", (0.1,)))[:1]
        self.accuracy = WSOLAccuracy(cam_thresholds=thresholds).to(pl_module.device)

    def write_on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: dict, batch_indices, batch,
        batch_idx: int, dataloader_idx: int,
    ) -> None:
        """Map the boxes to original pixels, keep their rows, update the metric."""
        boxes = prediction["pred_boxes"].float()
        if "size" in prediction:
            height, width = prediction["input_size"]
            scale = prediction["size"].flip(-1).repeat(1, 2).to(boxes) / boxes.new_tensor(
                [width, height, width, height]
            )
            boxes = boxes * scale
        names = trainer.datamodule.class_names
        for name, cls, (x1, y1, x2, y2) in zip(
            prediction["name"], prediction["pred"].tolist(), boxes.tolist(), strict=True
        ):
            self.rows.append((name, cls + 1, names[cls + 1], round(x1, 1), round(y1, 1),
                              round(x2 - x1, 1), round(y2 - y1, 1)))
        if "label_cams" in prediction:
            self.accuracy.update(
                prediction["logits"], prediction["label_cams"], prediction["label"], list(prediction["boxes"])
            )

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the table (and the scores where ground truth was seen) and say where."""
        rank = trainer.global_rank
        table = self.output_dir / ("boxes.csv" if trainer.world_size == 1 else f"boxes_rank{rank}.csv")
        with table.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows(self.rows)
        print(f"{type(self).__name__}: wrote {len(self.rows)} box(es) to {table}")
        if not trainer.strategy.reduce_boolean_decision(self.accuracy.update_called, all=False):
            return
        self.results = {k: float(v) for k, v in self.accuracy.compute().items()}
        if trainer.is_global_zero:
            (self.output_dir / "metrics.json").write_text(json.dumps(self.results, indent=2))
            rank_zero_info(f"localisation of {self.output_dir}: {self.results}")
        for logger in trainer.loggers:
            logger.log_metrics({f"predict/{k}": v for k, v in self.results.items()})
