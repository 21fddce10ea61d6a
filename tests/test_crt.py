"""The CRT LightningModule: eq. 2 schedule, parameter groups, WSOL validation, CLI fit + predict, learning."""

import importlib.util
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from tests.data.fake_cub import write_fake_cub
from wsss.data import CUBDataModule
from wsss.data.voc import VOCDataModule
from wsss.eval import WSOLAccuracy
from wsss.losses.crt import crt_loss
from wsss.main import main
from wsss.methods.crt import CRT

RECIPES = Path(__file__).parents[1] / "recipes"
TINY = {"cnn_backbone": "resnet18", "vit": "deit_tiny_patch16_224", "vit_depth": 1, "vit_img_size": 32}


def make_model(**kwargs) -> CRT:
    torch.manual_seed(0)
    return CRT(**(TINY | {"num_classes": 3, "cam_scales": (1.0,)} | kwargs))


def test_training_loss_is_eq_2_on_both_branches_with_the_l1_off_before_its_start_epoch():
    batch = {"image": torch.randn(2, 3, 48, 48), "cls_labels": torch.tensor([[1.0, 0, 1], [0, 1, 0]])}
    for start, weight in ((1, 0.0), (0, 0.1)):
        model = make_model(cam_weight_start_epoch=start).eval()  # no trainer: current epoch 0
        losses = model.training_losses(batch)
        cnn, vit = model.cnn_forward(batch["image"]), model.transformer(batch["image"])
        assert cnn[1].shape == vit[1].shape == (2, 3, 3, 3)
        expected = crt_loss(cnn[0], vit[0], cnn[1], vit[1], batch["cls_labels"], (48, 48), weight)
        assert torch.allclose(losses["loss"], expected["loss"]) and losses["cam_l1"] > 0


def test_inference_uses_only_the_transformer_branch():
    model = make_model().eval()
    x = torch.randn(1, 3, 40, 40)
    logits, cams = model.logits_and_cams(x)
    assert torch.allclose(logits, model.transformer(x)[0], atol=1e-5)
    raw = model.transformer.refined_cams(x)[1].clamp_min(0)
    assert torch.allclose(cams, raw / raw.amax((2, 3), keepdim=True), atol=1e-5)
    assert torch.allclose(model.raw_cams(x), raw, atol=1e-6)
    assert torch.allclose(model.classify(x), logits, atol=1e-5) and torch.equal(model.cams(x), cams)


def test_param_groups_cover_every_trainable_parameter_once_with_both_heads_scaled():
    model = make_model(head_lr_scale=10.0)
    backbone, heads = model.param_groups()
    ids = [id(p) for p in backbone["params"] + heads["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable) < len(list(model.parameters()))  # IRN's frozen layers
    assert len(make_model(cnn_frozen=False).param_groups()[0]["params"]) > len(backbone["params"])
    assert heads["lr_scale"] == 10.0
    assert {id(p) for p in heads["params"]} == {
        id(model.cnn_classifier.weight), id(model.transformer.head.weight), id(model.transformer.head.bias)
    }


def test_cnn_batchnorm_stays_fixed_while_lightning_trains(tmp_path: Path):
    """IRN's FixedBatchNorm (``cnn_frozen``): running statistics in every training step, also after the
    sanity validation (Lightning restores each module's mode and never calls ``train()``)."""
    modes = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            norms = [m.training for m in module.cnn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            modes.append((module.transformer.training, any(norms)))

    data = [{"image": torch.randn(3, 32, 32), "cls_labels": torch.tensor([1.0, 0, 1])} for _ in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    model = make_model()
    model.validation_step = lambda *args, **kwargs: None
    trainer = L.Trainer(max_epochs=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[Probe()])
    trainer.fit(model, loader, loader)
    assert modes == [(True, False), (True, False)]


def test_vit_kwargs_reach_timm_and_a_hybrid_vit_gives_cams_at_its_token_stride():
    hybrid = {"patch_size": 2, "embed_dim": 32, "num_heads": 2}
    model = make_model(vit="vit_tiny_r_s16_p8_224", vit_kwargs=hybrid)
    assert model.transformer.vit.embed_dim == 32 and len(model.transformer.vit.blocks) == 1
    assert model.cams(torch.randn(1, 3, 48, 48)).shape == (1, 3, 6, 6)  # stride 8 (the CNN's CAM is 3x3)


def test_bad_task_is_a_clear_error():
    with pytest.raises(ValueError, match="task must be 'wsss' or 'wsol'"):
        make_model(task="detection")


def test_wsol_trains_with_cross_entropy_and_logs_localisation(tmp_path: Path):
    cub = write_fake_cub(tmp_path, num_classes=3, per_class=4)
    data = CUBDataModule(str(cub), batch_size=3, eval_batch_size=6, crop_size=32, resize_size=36)
    model = make_model(task="wsol", wsol_cam_thresholds=(0.1, 0.5))
    batch = next(iter(data.train_dataloader()))
    losses = model.training_losses(batch)
    expected = F.cross_entropy(model.transformer(batch["image"])[0], batch["label"])
    assert torch.allclose(losses["cls_vit"], expected)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    reference = WSOLAccuracy(cam_thresholds=(0.1, 0.5))
    model.eval()
    with torch.no_grad():
        for val in data.val_dataloader():
            logits, cams = model.logits_and_cams(val["image"])
            cams = F.interpolate(cams, size=val["image"].shape[-2:], mode="bilinear", align_corners=False)
            reference.update(logits, cams, val["label"], list(val["boxes"]))
    for key, value in reference.compute().items():
        assert metrics[f"val/{key}"] == pytest.approx(float(value)), key


def test_fit_and_predict_through_the_cli(tmp_path: Path, tiny_fit_args: list[str], monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*tiny_fit_args, "--model.init_args.vit_depth=1"]
    main(["fit", "--config", str(RECIPES / "crt_synthetic.yaml"), *args])
    ckpt = next(tmp_path.glob("**/checkpoints/*.ckpt"))
    main(["predict", "--config", str(RECIPES / "crt_synthetic.yaml"), *args, f"--ckpt_path={ckpt}"])
    masks = list((tmp_path / "runs/crt_synthetic/pseudo_masks").glob("*.png"))
    assert len(masks) == 32


def test_training_learns_the_image_labels(synthetic_voc: Path, tmp_path: Path):
    L.seed_everything(0)
    data = VOCDataModule(str(synthetic_voc), batch_size=8, eval_batch_size=8, crop_size=48,
                         train_split="train_aug", val_split="train_aug")
    model = CRT(**(TINY | {"num_classes": data.num_classes, "lr": 0.05, "cam_scales": (1.0,)}))
    trainer = L.Trainer(max_epochs=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    before = trainer.validate(model, datamodule=data, verbose=False)[0]["val/map"]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]["val/map"]
    assert after > before + 0.1, (before, after)


def test_wsol_boxes_of_the_results_script_localise_the_true_masks(synthetic_voc: Path):
    """scripts/results_crt.py: the class mask as the CAM is localised, a full-image CAM is not."""
    path = RECIPES.parent / "scripts" / "results_crt.py"
    spec = importlib.util.spec_from_file_location("results_crt", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data = VOCDataModule(str(synthetic_voc), crop_size=48)
    samples = script.SingleClassWSOL(data.dataset("val"), with_boxes=True)
    perfect, full = WSOLAccuracy(cam_thresholds=(0.5,)), WSOLAccuracy(cam_thresholds=(0.5,))
    for index in range(len(samples)):
        sample = samples[index]
        label = torch.tensor([sample["label"]])
        logits = F.one_hot(label, data.num_classes).float()
        mask_cam = (sample["mask"] == sample["label"] + 1).float()[None]
        perfect.update(logits, mask_cam, label, [sample["boxes"]])
        full.update(logits, torch.ones_like(mask_cam), label, [sample["boxes"]])
    assert len(samples) > 0 and perfect.compute()["loc_top1"] == 1.0
    assert full.compute()["loc_gt_known"] == 0.0  # objects span at most half the side: IoU <= 1/4
