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


def test_predictions_are_not_limited_to_ground_truth_image_labels():
    """A segmenter's prediction is its own argmax: the writer must not drop classes by true image labels."""
    from wsss.callbacks.prediction_writer import masks_from_scores

    model = SegmentationTask(arch="unet", encoder="resnet18", num_classes=2).eval()
    with torch.no_grad():
        model.model.segmentation_head[0].bias.copy_(torch.tensor([0.0, 0.0, 50.0]))  # class 2 everywhere
        out = model.predict_step({"image": torch.randn(1, 3, 32, 32), "name": ["a"],
                                  "cls_labels": torch.tensor([[1.0, 0.0]])}, 0)
    assert "cls_labels" not in out
    assert (masks_from_scores(out["scores"], out.get("cls_labels")) == 2).all()


def test_a_dataset_ends_a_for_loop(synthetic_voc):
    data = VOCDataModule(str(synthetic_voc), crop_size=None)
    dataset = data.dataset("val")
    assert len(list(dataset)) == len(dataset)
    assert dataset[-1]["name"] == dataset[len(dataset) - 1]["name"]
