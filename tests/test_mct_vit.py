"""The multi-class-token ViT: checkpoint conversion, agreement with timm, attention capture and read-outs."""

import math

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from wsss.models.mct_vit import (
    MultiClassTokenViT,
    attention_entropy,
    class_maps,
    class_patch_attention,
    patch_patch_attention,
    pseudo_mask,
    refine_with_affinity,
)

TINY = dict(patch_size=8, depth=2, embed_dim=32, num_heads=2)


def tiny_timm_vit(**kwargs) -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, **TINY, **kwargs)


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    vit = tiny_timm_vit()
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    return vit.eval(), path


def test_single_cls_checkpoint_is_repeated_per_class(checkpoint):
    vit, path = checkpoint
    model = MultiClassTokenViT("vit_tiny_patch16_224", num_classes=3, weights=path, img_size=32, **TINY)
    assert model.class_tokens.shape == (1, 3, 32)
    for k in range(3):
        assert torch.equal(model.class_tokens[0, k], vit.cls_token[0, 0])
        assert torch.equal(model.class_pos_embed[0, k], vit.pos_embed[0, 0])
    assert torch.equal(model.patch_pos_embed, vit.pos_embed[:, 1:])
    assert torch.equal(model.vit.blocks[1].mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight)


def test_one_class_token_matches_timm_forward_without_final_norm(checkpoint):
    vit, path = checkpoint
    model = MultiClassTokenViT("vit_tiny_patch16_224", num_classes=1, weights=path, img_size=32, **TINY)
    model.eval()
    vit.norm = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    expected = vit.forward_features(x)
    out = model(x)
    assert torch.allclose(out.class_tokens, expected[:, :1], atol=1e-5)
    assert torch.allclose(out.patch_tokens.flatten(2).transpose(1, 2), expected[:, 1:], atol=1e-5)


def test_timm_pos_interp_resamples_the_patch_position_embedding_as_timm(checkpoint):
    vit, path = checkpoint
    model = MultiClassTokenViT("vit_tiny_patch16_224", num_classes=1, weights=path, img_size=32,
                               pos_interp="timm", **TINY)
    model.eval()
    reference = tiny_timm_vit(dynamic_img_size=True).eval()
    reference.load_state_dict(vit.state_dict())
    reference.norm = nn.Identity()
    x = torch.randn(1, 3, 48, 64)
    out = model(x)
    assert out.grid == (6, 8) and out.patch_tokens.shape == (1, 32, 6, 8)
    # timm's own dynamic-size path resamples the same embedding with the same function
    assert torch.allclose(out.patch_tokens.flatten(2).transpose(1, 2), reference.forward_features(x)[:, 1:],
                          atol=1e-5)
    pos = resample_abs_pos_embed(model.patch_pos_embed, (6, 8), (4, 4), num_prefix_tokens=0)
    assert pos.shape == (1, 48, 32)


def test_every_block_attention_is_captured_with_gradients():
    model = MultiClassTokenViT("vit_tiny_patch16_224", num_classes=4, img_size=32, **TINY)
    out = model(torch.randn(2, 3, 32, 40))
    assert len(out.attentions) == 2
    for attn in out.attentions:
        assert attn.shape == (2, 2, 4 + 20, 4 + 20)
        assert torch.allclose(attn.sum(-1), torch.ones(2, 2, 24), atol=1e-5)
    class_patch_attention(out.attentions, 4, 2).sum().backward()
    assert model.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_attention_readouts_take_head_means_summed_over_layers():
    layers = [torch.rand(1, 2, 5, 5) for _ in range(3)]  # 2 classes + 3 patches
    mean = [a.mean(1)[0] for a in layers]
    cls = class_patch_attention(layers, num_classes=2, layers=2)
    assert torch.allclose(cls[0], (mean[1] + mean[2])[:2, 2:])
    aff = patch_patch_attention(layers, num_classes=2)
    assert torch.allclose(aff[0], (mean[0] + mean[1] + mean[2])[2:, 2:])
    with pytest.raises(ValueError, match=r"layers must be in 1\.\.3"):
        class_patch_attention(layers, 2, layers=4)


def test_attention_entropy_is_one_for_uniform_rows_and_matches_a_hand_value():
    uniform = torch.full((1, 2, 4), 0.25)
    assert attention_entropy(uniform).item() == pytest.approx(1.0)
    peaked = torch.tensor([[[0.7, 0.1, 0.1, 0.1], [2.5, 2.5, 2.5, 2.5]]])  # rows need not sum to 1
    expected = (-(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)) / math.log(4) + 1.0) / 2  # (0.678 + 1) / 2
    assert attention_entropy(peaked).item() == pytest.approx(expected)


def test_pseudo_mask_and_pgt_on_a_hand_computed_example():
    sc_cam = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B=1, C=2, N=2)
    coarse = torch.tensor([[[-1.0, 2.0], [0.5, 1.0]]])
    m_pseudo = pseudo_mask(sc_cam, coarse)  # eq. 8 with ReLU on the Coarse-CAM
    assert torch.equal(m_pseudo, torch.tensor([[[0.0, 4.0], [1.5, 4.0]]]))
    affinity = torch.tensor([[[0.5, 0.5], [0.25, 0.75]]])
    pgt = refine_with_affinity(affinity, m_pseudo)  # eq. 10: PGT_c = A_aff · vec(M_c)
    assert torch.allclose(pgt, torch.tensor([[[2.0, 3.0], [2.75, 3.375]]]))


def test_class_maps_compose_the_readouts():
    model = MultiClassTokenViT("vit_tiny_patch16_224", num_classes=2, img_size=32, **TINY).eval()
    out = model(torch.randn(1, 3, 32, 48))
    patch_cam = torch.randn(1, 2, 4, 6)
    fused = pseudo_mask(class_patch_attention(out.attentions, 2, 1), patch_cam.flatten(2))
    expected = refine_with_affinity(patch_patch_attention(out.attentions, 2), fused)
    maps = class_maps(out, 2, cam_layers=1, patch_cam=patch_cam, refine=True)
    assert maps.shape == (1, 2, 4, 6) and torch.allclose(maps.flatten(2), expected)


def test_models_without_a_single_cls_token_are_refused():
    with pytest.raises(ValueError, match="exactly one \\[CLS\\] token"):
        MultiClassTokenViT("vit_tiny_patch16_224", num_classes=2, img_size=32, reg_tokens=2, **TINY)
    with pytest.raises(ValueError, match="exactly one \\[CLS\\] token"):
        MultiClassTokenViT("vit_tiny_patch16_224", num_classes=2, img_size=32, class_token=False, **TINY)


def test_inputs_not_a_multiple_of_the_patch_are_cropped_to_whole_patches():
    model = MultiClassTokenViT("vit_tiny_patch16_224", num_classes=2, img_size=32, **TINY).eval()
    x = torch.randn(1, 3, 37, 45)
    out, cropped = model(x), model(x[..., :32, :40])
    assert out.grid == (4, 5)
    assert torch.equal(out.patch_tokens, cropped.patch_tokens)
    with pytest.raises(ValueError, match="smaller than one 8×8 patch"):
        model(torch.randn(1, 3, 7, 40))


def test_pos_interp_must_be_known():
    with pytest.raises(ValueError, match=r"pos_interp must be one of \('official', 'timm'\)"):
        MultiClassTokenViT("vit_tiny_patch16_224", num_classes=2, img_size=32, pos_interp="bilinear", **TINY)
