"""Stage 3: the smp segmenter task."""

import lightning as L
import torch

from wsss.data.voc import VOCDataModule
from wsss.methods.segmentation import SegmentationTask


def test_any_band_count_and_sizes_that_are_not_multiples_of_32():
    model = SegmentationTask(arch="unet", encoder="resnet18", num_classes=8, in_channels=15).eval()
    assert model(torch.randn(1, 15, 50, 70)).shape == (1, 9, 50, 70)
    deeplab = SegmentationTask(arch="deeplabv3plus", encoder="resnet18", num_classes=2, in_channels=2).eval()
    assert deeplab(torch.randn(1, 2, 48, 40)).shape == (1, 3, 48, 40)


def test_training_on_true_masks_improves_miou(synthetic_voc, tmp_path):
    L.seed_everything(0)
    data = VOCDataModule(
        str(synthetic_voc),
        batch_size=8,
        eval_batch_size=8,
        crop_size=48,
        supervision="dense",
        train_split="train_aug",
        val_split="train_aug",
    )
    model = SegmentationTask(num_classes=data.num_classes, lr=3e-3, optimizer="adamw", scheduler="constant")
    trainer = L.Trainer(
        max_epochs=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    before = trainer.validate(model, datamodule=data, verbose=False)[0]["val/miou"]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]["val/miou"]
    assert after > before + 0.1, (before, after)
