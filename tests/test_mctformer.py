"""MCTformer V1/V2: logits, fused CAMs, affinity refinement, losses and a CLI fit of the synthetic recipe."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wsss.main import main
from wsss.methods.mctformer import MCTformer
from wsss.pseudo.background import normalize_cams

RECIPES = Path(__file__).parents[1] / "recipes"
TINY = dict(backbone="vit_tiny_patch16_224", img_size=32, drop_path_rate=0.0,
            backbone_kwargs=dict(patch_size=8, depth=3, embed_dim=32, num_heads=2))


def head_mean(attn: torch.Tensor) -> torch.Tensor:
    return attn.mean(1)


def test_v1_logits_are_class_token_means_and_cams_the_class_attention():
    torch.manual_seed(0)
    model = MCTformer(version="v1", num_classes=3, cam_layers=2, **TINY).eval()
    x = torch.randn(2, 3, 32, 40)
    out = model.net(x)
    assert model.patch_head is None
    assert torch.allclose(model.classify(x), out.class_tokens.mean(-1))
    attention = sum(head_mean(a) for a in out.attentions[-2:])[:, :3, 3:].reshape(2, 3, 4, 5)
    assert torch.allclose(model.cams(x), normalize_cams(attention, "minmax"), atol=1e-6)
    loss = model.training_losses({"image": x, "cls_labels": torch.tensor([[1.0, 0, 0], [0, 1, 1]])})
    assert set(loss) == {"cls", "loss"}


def test_v2_fuses_the_patch_cam_and_refines_with_all_layers():
    torch.manual_seed(0)
    model = MCTformer(version="v2", num_classes=3, **TINY).eval()
    x = torch.randn(1, 3, 32, 32)
    out = model.net(x)
    patch_cam = model.patch_head(out.patch_tokens)
    attention = sum(head_mean(a) for a in out.attentions)[:, :3, 3:]
    fused = attention * patch_cam.flatten(2).clamp_min(0)
    logits, cams = model.logits_and_cams(x)
    assert torch.allclose(cams, normalize_cams(fused.reshape(1, 3, 4, 4), "minmax"), atol=1e-6)
    assert torch.allclose(logits, model.classify(x))
    affinity = sum(head_mean(a) for a in out.attentions)[:, 3:, 3:]
    assert torch.allclose(model.patch_affinity(x), affinity, atol=1e-6)
    model.hparams.affinity_refine = True
    refined = torch.einsum("bij,bcj->bci", affinity, fused).reshape(1, 3, 4, 4)
    assert torch.allclose(model.cams(x), normalize_cams(refined, "minmax"), atol=1e-5)
    assert torch.allclose(model.raw_cams(x), refined.reshape(1, 3, 4, 4), atol=1e-6)


def test_v2_loss_sums_the_two_soft_margin_losses():
    torch.manual_seed(0)
    model = MCTformer(version="v2", num_classes=3, **TINY).eval()
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    losses = model.training_losses({"image": x, "cls_labels": labels})
    _, logits, patch_cam = model.forward_heads(x)
    cls = F.multilabel_soft_margin_loss(logits, labels)
    patch = F.multilabel_soft_margin_loss(patch_cam.mean((2, 3)), labels)
    assert torch.allclose(losses["cls"], cls) and torch.allclose(losses["patch_cls"], patch)
    assert torch.allclose(losses["loss"], cls + patch)


def test_training_runs_fused_attention_with_the_same_loss_and_gradients():
    """The speed path (no attention maps in training) changes nothing beyond float rounding."""
    torch.manual_seed(0)
    model = MCTformer(version="v2", num_classes=3, **TINY)
    batch = {"image": torch.randn(2, 3, 40, 56), "cls_labels": torch.tensor([[1.0, 0, 1], [0, 1, 0]])}
    fast = model.training_losses(batch)["loss"]
    fast_grads = torch.autograd.grad(fast, list(model.parameters()), allow_unused=True)
    assert model.net(batch["image"], with_attention=False).attentions == []
    assert all(module.fused_attn for module in model.net.capture.modules)
    output, logits, patch_cam = model.forward_heads(batch["image"])  # the materialised path
    assert len(output.attentions) == 3 and not any(module.fused_attn for module in model.net.capture.modules)
    labels = batch["cls_labels"]
    slow = F.multilabel_soft_margin_loss(logits, labels) + F.multilabel_soft_margin_loss(
        patch_cam.mean((2, 3)), labels)
    slow_grads = torch.autograd.grad(slow, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads, strict=True):
        if slow_grad is not None:
            torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-4, atol=1e-6)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"cam_layers must be in 1\.\.3"):
        MCTformer(num_classes=2, cam_layers=4, **TINY)
    with pytest.raises(ValueError, match="version must be"):
        MCTformer(num_classes=2, version="v3", **TINY)


def test_cli_fit_of_the_synthetic_recipe(tmp_path, tiny_fit_args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(RECIPES / "mctformer_v2_synthetic.yaml"), *tiny_fit_args])
    assert next(tmp_path.glob("**/checkpoints/*.ckpt")).is_file()
