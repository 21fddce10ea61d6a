"""The CAM baseline and the method base's CAM contract."""

import lightning as L
import torch

from wsss.data.voc import VOCDataModule
from wsss.methods.cam_baseline import CAMBaseline


def make_model(**kwargs) -> CAMBaseline:
    return CAMBaseline(backbone="resnet18", num_classes=3, cam_scales=(1.0,), **kwargs)


def test_cams_are_normalised_non_negative_and_at_stride_16():
    model = make_model().eval()
    x = torch.randn(2, 3, 64, 64)
    cams = model.cams(x)
    assert cams.shape == (2, 3, 4, 4) and cams.min() >= 0
    raw = model.forward_head(model.forward_features(x))[1].clamp_min(0)
    for b in range(2):
        for k in range(3):
            peak = raw[b, k].max()
            expected = raw[b, k] / peak if peak > 0 else torch.zeros_like(raw[b, k])
            assert torch.allclose(cams[b, k], expected, atol=1e-5)


def test_logits_are_the_mean_of_the_raw_class_maps():
    model = make_model().eval()
    x = torch.randn(1, 3, 64, 64)
    logits, maps = model.forward_head(model.forward_features(x))
    assert torch.allclose(logits, maps.mean((2, 3)))
    assert torch.allclose(model.classify(x), logits)


def test_multiscale_flip_cams_follow_irn_make_cam():
    """Raw ReLU maps, flips undone at the CAM grid, resized to 16·⌈·/16⌉, summed, cropped, / (max + 1e-5)."""
    model = make_model(cam_flip=True).eval()
    model.hparams.cam_scales = (1.0, 2.0)
    assert (model.fusion_flip_back, model.fusion_stride, model.fusion_norm) == ("cam", 16, "max")
    x = torch.randn(1, 3, 40, 56)
    up = torch.nn.functional.interpolate
    x2 = up(x, scale_factor=2.0, mode="bilinear")
    with torch.no_grad():
        views = (x, x.flip(-1), x2, x2.flip(-1))
        raw = [model.forward_head(model.forward_features(v))[1].relu() for v in views]
    total = sum(up(a + b.flip(-1), size=(48, 64), mode="bilinear") for a, b in (raw[:2], raw[2:]))
    total = total[..., :40, :56]
    expected = total / (total.amax((2, 3), keepdim=True) + 1e-5)
    with torch.no_grad():
        assert torch.allclose(model.multiscale_cams(x), expected, atol=1e-6)
        labels = torch.tensor([[1.0, 0.0, 1.0]])
        gated = model.multiscale_cams(x, labels)
    assert torch.equal(gated[:, 1], torch.zeros(1, 40, 56))
    assert torch.allclose(gated[:, 0], expected[:, 0], atol=1e-6)


def test_score_maps_put_the_threshold_first_and_zero_absent_classes():
    model = make_model(bg_threshold=0.3)
    cams = torch.rand(1, 3, 4, 4)
    scores = model.score_maps(cams, torch.tensor([[1.0, 0.0, 1.0]]))
    assert torch.all(scores[:, 0] == 0.3) and torch.all(scores[:, 2] == 0)
    assert torch.equal(scores[:, 1], cams[:, 0])


def test_training_learns_the_image_labels(synthetic_voc, tmp_path):
    L.seed_everything(0)
    data = VOCDataModule(
        str(synthetic_voc),
        batch_size=8,
        eval_batch_size=8,
        crop_size=48,
        train_split="train_aug",
        val_split="train_aug",
    )
    model = CAMBaseline(backbone="resnet18", num_classes=data.num_classes, lr=0.05, cam_scales=(1.0,))
    trainer = L.Trainer(
        max_epochs=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    before = trainer.validate(model, datamodule=data, verbose=False)[0]["val/map"]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]["val/map"]
    assert after > before + 0.1, (before, after)
