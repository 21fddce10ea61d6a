"""The SWTformer LightningModule (V1/V2): CAM contract, V2 refinement, background scores, learning, CLI."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from wsss.data.voc import VOCDataModule
from wsss.losses.swtformer import gsc_loss
from wsss.main import main
from wsss.methods.swtformer import SWTformer
from wsss.models.prototypes import class_prototypes, locate_seeds, valid_channels, with_background

RECIPES = Path(__file__).parents[1] / "recipes"
LABELS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, img_size=32,
                 patch_size=2)


def make_model(version: str, **kwargs) -> SWTformer:
    return SWTformer(version=version, backbone_overrides=TINY_SWIN, hff_dims=(8, 8, 8, 8), num_classes=3,
                     cam_scales=(1.0,), cam_flip=False, **kwargs)


def test_v1_cams_are_the_normalised_head_maps_at_the_token_grid():
    torch.manual_seed(0)  # SIPE's max + 1e-5 leaves a tiny random map's peak visibly below 1
    model = make_model("v1").eval()
    x = torch.randn(2, 3, 32, 32)
    logits, cams = model.logits_and_cams(x)
    assert cams.shape == (2, 3, 2, 2) and cams.min() >= 0
    assert torch.allclose(cams.amax((2, 3))[cams.amax((2, 3)) > 0], torch.tensor(1.0), atol=1e-3)
    assert torch.allclose(logits, model.classify(x)) and torch.allclose(cams, model.cams(x))
    assert model.hff is None


def test_v2_rcams_have_a_background_channel_and_zero_absent_classes():
    model = make_model("v2").eval()
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    scores = model.background_scores(x, labels)
    assert scores.shape == (2, 4, 4, 4) and scores.min() >= 0 and scores.max() <= 1 + 1e-6
    assert torch.equal(scores[~valid_channels(labels)], torch.zeros(3, 4, 4))
    assert torch.equal(model.cams(x, labels), scores[:, 1:])


def sipe_is_cam(model: SWTformer, view: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SIPE ``CAM.forward`` on [view, flipped view]: F_out, T_out, F_hie summed (flip undone), raw IS-CAM."""
    a, b = model.backbone(view), model.backbone(view.flip(-1))
    cam = model.head.conv(a[-1]) + model.head.conv(b[-1]).flip(-1)
    tokens = a[-1] + b[-1].flip(-1)
    hie = model.hff(a) + model.hff(b).flip(-1)
    norm_cam = cam.relu() / (cam.relu().amax((2, 3), keepdim=True) + 1e-5)
    cams_bg = with_background(norm_cam, labels, "all")
    seeds = locate_seeds(cams_bg, tokens, valid_channels(labels), 0.5)
    seeds = F.interpolate(seeds, size=hie.shape[-2:], mode="nearest")
    prototypes = class_prototypes(hie, seeds)
    return F.cosine_similarity(hie[:, None], prototypes[..., None, None], dim=2).relu()


def test_v2_multiscale_maps_sum_sipe_is_cams_over_scales_and_normalise_once():
    """SIPE ``make_cam.py``: per scale the flip pair is fused inside the network; IS-CAMs resized, summed."""
    torch.manual_seed(0)
    model = make_model("v2").eval()
    model.hparams.cam_scales, model.hparams.cam_flip = (1.0, 1.5), True
    x, labels = torch.randn(2, 3, 32, 48), LABELS
    with torch.no_grad():
        views = (x, F.interpolate(x, scale_factor=1.5, mode="bilinear"))
        total = sum(F.interpolate(sipe_is_cam(model, v, labels), size=(32, 48), mode="bilinear")
                    for v in views)
        expected = total / (total.amax((2, 3), keepdim=True) + 1e-5)
        fused = model.multiscale_maps(x, labels)
        out = model.predict_step({"image": x, "cls_labels": labels, "name": ["a", "b"]}, 0)
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-5)
    assert torch.equal(fused[~valid_channels(labels)], torch.zeros(3, 32, 48))
    assert torch.equal(out["scores"], fused) and torch.equal(out["cams"], fused[:, 1:])
    assert torch.equal(model.multiscale_cams(x, labels), fused[:, 1:])


def test_v1_multiscale_cams_sum_raw_head_maps_and_normalise_once():
    model = make_model("v1").eval()
    model.hparams.cam_scales, model.hparams.cam_flip = (1.0, 2.0), True
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        scaled = (x, F.interpolate(x, scale_factor=2.0, mode="bilinear"))
        raw = [model.head.conv(model.backbone(v)[-1]).relu() for v in scaled]
        flipped = [model.head.conv(model.backbone(v.flip(-1))[-1]).relu() for v in scaled]
        up = [F.interpolate(m, size=(32, 32), mode="bilinear") for m in raw + flipped]
        total = up[0] + up[1] + up[2].flip(-1) + up[3].flip(-1)
        fused = model.multiscale_cams(x)
    torch.testing.assert_close(fused, total / (total.amax((2, 3), keepdim=True) + 1e-5), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("over", "background"), [("all", [0.0, 0.0]), ("present", [0.1, 0.8])])
def test_v2_score_maps_derive_the_background_by_eq3(over, background):
    model = make_model("v2", background_over=over)
    cams = torch.tensor([[[[0.9, 0.2]], [[0.4, 0.1]], [[1.0, 1.0]]]])
    scores = model.score_maps(cams, torch.tensor([[1.0, 1.0, 0.0]]))
    assert torch.allclose(scores[0, 0], torch.tensor([background]))
    assert torch.equal(scores[0, 3], torch.zeros(1, 2))


def test_v2_training_losses_are_eq7_and_ablation_weights_switch_terms():
    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 3, 32, 32), "cls_labels": LABELS}
    losses = make_model("v2").training_losses(batch)
    assert torch.isclose(losses["loss"], losses["cls"] + losses["gsc"] + losses["ccl"])
    torch.manual_seed(0)
    cls_only = make_model("v2", gsc_weight=0.0, ccl_weight=0.0).training_losses(batch)
    assert torch.isclose(cls_only["loss"], cls_only["cls"])
    assert set(make_model("v1").training_losses(batch)) == {"loss", "cls"}


def test_v2_gradients_reach_backbone_head_and_hff_but_hff_inputs_are_detached():
    model = make_model("v2")
    batch = {"image": torch.randn(2, 3, 32, 32), "cls_labels": LABELS}
    losses = model.training_losses(batch)
    (losses["gsc"] + losses["ccl"]).backward()
    assert model.hff.proj_4.weight.grad.abs().sum() > 0 and model.head.conv.weight.grad.abs().sum() > 0
    model.zero_grad()
    _, cams, features = model.forward_cam(batch["image"])
    model.refine(cams.detach(), features, batch["cls_labels"])[1].sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters()), "R-CAM reaches the backbone"
    assert model.hff.down_1.weight.grad.abs().sum() > 0


def test_gsc_detach_cam_keeps_the_value_and_sends_gsc_gradients_only_to_the_rcam_branch():
    batch = {"image": torch.randn(2, 3, 32, 32), "cls_labels": LABELS}
    grads = {}
    for detach in (False, True):
        torch.manual_seed(0)
        model = make_model("v2", gsc_detach_cam=detach)
        losses = model.training_losses(batch)
        losses["gsc"].backward()
        grads[detach] = (losses["gsc"].detach(), model.head.conv.weight.grad, model.hff.proj_4.weight.grad)
    assert torch.equal(grads[False][0], grads[True][0])
    assert grads[False][1].abs().sum() > 0 and grads[True][1] is None, "CAM side not detached"
    assert torch.allclose(grads[False][2], grads[True][2]), "the R-CAM side must keep its gradient"


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="version"):
        make_model("v3")
    with pytest.raises(ValueError, match="ccl_reading"):
        make_model("v2", ccl_reading="other")
    with pytest.raises(ValueError, match="background_over"):
        make_model("v2", background_over="some")
    with pytest.raises(ValueError, match="seed_similarity"):
        make_model("v2", seed_similarity="cos")


def test_v2_gsc_resizes_m_to_f_hie_with_align_corners_as_sipe():
    torch.manual_seed(0)
    model = make_model("v2").eval()
    batch = {"image": torch.randn(2, 3, 32, 32), "cls_labels": LABELS}
    gsc = model.training_losses(batch)["gsc"]
    _, cams, features = model.forward_cam(batch["image"])
    cams_bg, rcams = model.refine(cams, features, LABELS)
    assert cams_bg.shape[-1] * 2 == rcams.shape[-1]  # T_out at stride 32, F_hie at stride 16
    for align, same in ((True, True), (False, False)):
        resized = F.interpolate(cams_bg, size=rcams.shape[-2:], mode="bilinear", align_corners=align)
        assert bool(torch.isclose(gsc, gsc_loss(resized, rcams))) == same


def test_v2_training_improves_the_classification(synthetic_voc, tmp_path):
    L.seed_everything(0)
    data = VOCDataModule(str(synthetic_voc), batch_size=8, eval_batch_size=8, crop_size=48,
                         train_split="train_aug", val_split="train_aug")
    model = SWTformer(version="v2", backbone_overrides={**TINY_SWIN, "img_size": 48, "window_size": 6},
                      hff_dims=(8, 8, 16, 16), num_classes=data.num_classes, optimizer="adamw", lr=2e-3,
                      weight_decay=0.01, scheduler="constant", cam_scales=(1.0,))
    trainer = L.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    before = trainer.validate(model, datamodule=data, verbose=False)[0]["val/map"]
    trainer.fit(model, datamodule=data)
    after = trainer.validate(model, datamodule=data, verbose=False)[0]
    assert after["val/map"] > before + 0.1, (before, after)
    assert 0 < after["val/seed_miou"] <= 1


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_synthetic_recipe_fits_and_predicts_through_the_cli(version, in_tmp: Path, tiny_fit_args: list[str]):
    recipe = str(RECIPES / f"swtformer_{version}_synthetic.yaml")
    main(["fit", "--config", recipe, *tiny_fit_args])
    ckpt = next(in_tmp.glob("**/checkpoints/*.ckpt"))
    main(["predict", "--config", recipe, *tiny_fit_args, f"--ckpt_path={ckpt}"])
    masks = in_tmp / f"runs/swtformer_{version}_synthetic/pseudo_masks"
    metrics = json.loads((masks / "metrics.json").read_text())
    assert 0 < metrics["pseudo_mask_miou"] <= 1 and len(list(masks.glob("*.png"))) == 32
