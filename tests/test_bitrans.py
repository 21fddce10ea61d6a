"""Bi-Trans: eq. 12's composition, SCC/PAC through the network for an equivariant model, learning, the CLI."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wsss.data.voc import VOCDataModule
from wsss.main import main
from wsss.methods.bitrans import BiTrans
from wsss.models.mct_vit import attention_entropy, class_patch_attention

RECIPES = Path(__file__).parents[1] / "recipes"
TINY = dict(backbone="vit_tiny_patch16_224", img_size=32, drop_path_rate=0.0,
            backbone_kwargs=dict(patch_size=8, depth=3, embed_dim=32, num_heads=2))
LABELS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def pixel_token_model(view: str) -> BiTrans:
    """1-pixel patches and no patch position embedding: a ViT that permutes its tokens with the image."""
    kwargs = TINY | {"img_size": 8, "backbone_kwargs": dict(patch_size=1, depth=2, embed_dim=16, num_heads=2)}
    model = BiTrans(view=view, num_classes=3, cam_layers=2, **kwargs).eval()
    with torch.no_grad():
        model.net.patch_pos_embed.zero_()
    return model


@pytest.mark.parametrize("view", ["hflip", "vflip", "hvflip", "rot90"])
def test_scc_and_pac_vanish_for_a_view_equivariant_network(view):
    torch.manual_seed(0)
    model = pixel_token_model(view)
    losses = model.training_losses({"image": torch.randn(2, 3, 8, 8), "cls_labels": LABELS})
    assert losses["scc"] < 1e-6 and losses["pac"] < 1e-5
    with torch.no_grad():
        model.net.patch_pos_embed.normal_()
    losses = model.training_losses({"image": torch.randn(2, 3, 8, 8), "cls_labels": LABELS})
    assert losses["scc"] > 1e-3 and losses["pac"] > 1e-3


def test_total_loss_is_equation_12():
    torch.manual_seed(0)
    model = BiTrans(view="hflip", alpha=0.5, scc_weight=2.0, num_classes=3, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    losses = model.training_losses({"image": x, "cls_labels": LABELS})
    branches = [model.forward_heads(x), model.forward_heads(x.flip(-1))]
    cls = sum(F.multilabel_soft_margin_loss(logits, LABELS) for _, logits, _ in branches) / 2
    coarse = sum(F.multilabel_soft_margin_loss(cam.mean((2, 3)), LABELS) for _, _, cam in branches) / 2
    assert torch.allclose(losses["cls"], cls) and torch.allclose(losses["coarse_cls"], coarse)
    expected = cls + coarse + 2.0 * losses["scc"] + 0.5 * losses["pac"]
    assert torch.allclose(losses["loss"], expected)
    seeds = class_patch_attention(branches[0][0].attentions, 3, model.hparams.cam_layers)
    assert torch.allclose(losses["class_attention_entropy"], attention_entropy(seeds).mean())
    assert not losses["class_attention_entropy"].requires_grad
    losses["loss"].backward()
    assert model.net.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_mean_reduction_divides_both_consistency_losses_by_the_number_of_patches():
    x = torch.randn(2, 3, 32, 32)
    losses = {}
    for reduction in ("sum", "mean"):
        torch.manual_seed(0)
        model = BiTrans(consistency_reduction=reduction, num_classes=3, **TINY).eval()
        losses[reduction] = model.training_losses({"image": x, "cls_labels": LABELS})
    patches = 16  # 32 px / patch 8, squared
    for name in ("scc", "pac"):
        assert losses["sum"][name] > 0
        assert torch.allclose(losses["mean"][name] * patches, losses["sum"][name])


def test_cams_are_the_mctformer_v2_fusion():
    torch.manual_seed(0)
    model = BiTrans(num_classes=3, **TINY).eval()
    x = torch.randn(1, 3, 32, 48)
    cams = model.cams(x)
    assert cams.shape == (1, 3, 4, 6) and cams.min() >= 0
    assert torch.allclose(cams.flatten(2).amax(-1), torch.ones(1, 3))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown view 'scale'"):
        BiTrans(view="scale", num_classes=3, **TINY)
    with pytest.raises(ValueError, match="alpha and scc_weight must be >= 0"):
        BiTrans(alpha=-1.0, num_classes=3, **TINY)
    with pytest.raises(ValueError, match="consistency_reduction"):
        BiTrans(consistency_reduction="max", num_classes=3, **TINY)


def test_training_fits_a_batch(synthetic_voc):
    torch.manual_seed(0)
    data = VOCDataModule(str(synthetic_voc), batch_size=8, crop_size=48, train_split="train_aug")
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    model = BiTrans(num_classes=data.num_classes, **(TINY | {"img_size": 48}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = model.training_losses(batch)
    for _ in range(60):
        optimizer.zero_grad()
        model.training_losses(batch)["loss"].backward()
        optimizer.step()
    last = model.training_losses(batch)
    assert last["cls"] < 0.5 * first["cls"] and last["coarse_cls"] < 0.5 * first["coarse_cls"], (first, last)


def test_cli_fit_and_predict_with_the_affinity_walk(tmp_path, tiny_fit_args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = str(RECIPES / "bitrans_synthetic.yaml")
    main(["fit", "--config", recipe, *tiny_fit_args])
    ckpt = next(tmp_path.glob("**/checkpoints/*.ckpt"))
    main(["predict", "--config", recipe, *tiny_fit_args, f"--ckpt_path={ckpt}"])
    metrics = json.loads((tmp_path / "runs/bitrans_synthetic/pseudo_masks/metrics.json").read_text())
    assert 0 < metrics["pseudo_mask_miou"] <= 1
