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


def test_multiscale_flip_cams_sum_the_views():
    model = make_model(cam_flip=True).eval()
    model.hparams.cam_scales = (1.0, 2.0)
    x = torch.randn(1, 3, 32, 32)
    up = torch.nn.functional.interpolate
    views = [up(model.cams(v), size=(32, 32), mode="bilinear") for v in (x, x.flip(-1))]
    x2 = up(x, scale_factor=2.0, mode="bilinear")
    views += [up(model.cams(v), size=(32, 32), mode="bilinear") for v in (x2, x2.flip(-1))]
    expected = views[0] + views[1].flip(-1) + views[2] + views[3].flip(-1)
    expected = expected / expected.flatten(2).amax(-1).clamp_min(1e-5)[:, :, None, None]
    assert torch.allclose(model.multiscale_cams(x), expected, atol=1e-5)


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
