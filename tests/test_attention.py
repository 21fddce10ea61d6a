"""Attention capture on timm ViTs and smp MiT encoders."""

import segmentation_models_pytorch as smp
import timm
import torch

from wsss.models.attention import AttentionCapture, mit_attention_modules, vit_attention_modules


def tiny_vit() -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, num_classes=2
    ).eval()


def test_vit_maps_are_row_stochastic_and_match_a_manual_softmax():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    fused = model(x)
    with AttentionCapture(vit_attention_modules(model)) as capture:
        unfused = model(x)
    assert torch.allclose(fused, unfused, atol=1e-5)
    assert [m.shape for m in capture.maps] == [(2, 3, 5, 5)] * 2
    assert torch.allclose(capture.maps[0].sum(-1), torch.ones(2, 3, 5))
    attn = model.blocks[0].attn
    tokens = model.blocks[0].norm1(model._pos_embed(model.patch_embed(x)))
    q, k, _ = attn.qkv(tokens).reshape(2, 5, 3, 3, 64).permute(2, 0, 3, 1, 4)
    manual = (q * attn.scale @ k.transpose(-2, -1)).softmax(-1)
    assert torch.allclose(capture.maps[0], manual, atol=1e-5)


def test_gradients_reach_the_captured_maps_and_hooks_can_rescale_heads():
    model = tiny_vit()
    x = torch.randn(1, 3, 32, 32)
    capture = AttentionCapture(vit_attention_modules(model))
    model(x).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None and capture.maps[1].requires_grad
    capture.remove()
    closed = AttentionCapture(vit_attention_modules(model), on_map=lambda i, a: a * 0.0)
    out = model.forward_features(x)
    # With every head closed, each block adds only proj's bias to the residual stream.
    expected = model._pos_embed(model.patch_embed(x))
    for block in model.blocks:
        expected = expected + block.attn.proj.bias
        expected = expected + block.mlp(block.norm2(expected))
    assert torch.allclose(out, model.norm(expected), atol=1e-5)
    closed.remove()


def test_mit_stages_have_spatially_reduced_keys():
    model = smp.create_model("segformer", encoder_name="mit_b0", encoder_weights=None, classes=3).eval()
    stages = mit_attention_modules(model.encoder)
    with AttentionCapture([m for stage in stages for m in stage], detach=True) as capture:
        model(torch.randn(1, 3, 64, 64))
    shapes = [tuple(m.shape) for m in capture.maps]
    assert shapes[0] == (1, 1, 256, 4) and shapes[-1] == (1, 8, 4, 4)


def test_fused_attention_is_skipped_under_cpu_autocast_only():
    from wsss.models.attention import fused_attention_pays

    x = torch.randn(2, 3)
    assert fused_attention_pays(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused_attention_pays(x)


def test_wsss_mit_attention_is_smps_with_and_without_maps_and_under_autocast():
    import copy

    from segmentation_models_pytorch.encoders.mix_transformer import Attention

    from wsss.models.segformer import MiTAttention, SegFormerWithAttention

    torch.manual_seed(0)
    model = SegFormerWithAttention("mit_b0", classes=3).eval()
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if isinstance(module, MiTAttention):
            module.__class__ = Attention  # smp's own forward
    images = torch.randn(1, 3, 75, 100)
    for with_attention in (True, False):
        for bf16 in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                ours, theirs = model(images, with_attention), reference(images, with_attention)
            tolerance = 3e-2 if bf16 else 1e-5
            torch.testing.assert_close(ours.decoder_logits.float(), theirs.decoder_logits.float(),
                                       rtol=tolerance, atol=tolerance)
            assert len(ours.levels) == (4 if with_attention else 0)
            for a, b in zip(ours.levels, theirs.levels, strict=True):
                torch.testing.assert_close(a.attention.float(), b.attention.float(), rtol=tolerance,
                                           atol=tolerance)
