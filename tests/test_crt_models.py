"""CRT's transformer branch and losses: loops (eq. 3), cutting-merging of the CAM, eq. 1, eq. 2."""

import pytest
import torch
import torch.nn.functional as F

from wsss.losses.crt import cam_l1_loss, classification_loss, crt_loss
from wsss.models.attention import AttentionCapture, vit_attention_modules
from wsss.models.crt_vit import CRTTransformer


def tiny(loops: int = 3, **kwargs) -> CRTTransformer:
    torch.manual_seed(0)
    return CRTTransformer("deit_tiny_patch16_224", num_classes=3, loops=loops, depth=2, img_size=64,
                          **kwargs).eval()


def test_zero_loops_is_the_plain_forward():
    model = tiny(loops=0)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(model.forward_tokens(x), model.vit.forward_features(x), atol=1e-6)


def test_loops_add_the_encoder_output_to_its_input():
    model = tiny(loops=2)
    x = torch.randn(1, 3, 64, 64)
    vit = model.vit
    t0 = vit._pos_embed(vit.patch_embed(x))
    t1 = t0 + vit.blocks[1](vit.blocks[0](t0))
    t2 = t1 + vit.blocks[1](vit.blocks[0](t1))
    assert torch.allclose(model.forward_tokens(x), vit.norm(t2), atol=1e-5)


def test_one_tile_cam_is_the_head_on_the_patch_grid_and_logits_its_mean():
    model = tiny()
    x = torch.randn(2, 3, 64, 64)
    tokens = model.forward_tokens(x)[:, 1:]
    expected = model.head(tokens.transpose(1, 2).reshape(2, -1, 4, 4))
    logits, cams = model(x)
    assert cams.shape == (2, 3, 4, 4) and torch.allclose(cams, expected, atol=1e-5)
    assert torch.allclose(logits, cams.mean((2, 3)))


def test_cam_of_a_larger_image_averages_overlapping_tiles():
    model = tiny()
    x = torch.randn(1, 3, 96, 96)  # tiles at 0 and 32 px along each side; CAM 6x6, tile CAM 4x4 at stride 2
    cams = model(x)[1]
    tile = {}
    for i, j in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        tile[i, j] = model.tile_cams(x[..., 32 * i : 32 * i + 64, 32 * j : 32 * j + 64])[0]
    assert cams.shape == (1, 3, 6, 6)
    assert torch.allclose(cams[0, :, 0, 0], tile[0, 0][:, 0, 0], atol=1e-5)
    assert torch.allclose(cams[0, :, 5, 5], tile[1, 1][:, 3, 3], atol=1e-5)
    assert torch.allclose(cams[0, :, 0, 3], (tile[0, 0][:, 0, 3] + tile[0, 1][:, 0, 1]) / 2, atol=1e-5)
    centre = (tile[0, 0][:, 2, 2] + tile[0, 1][:, 2, 0] + tile[1, 0][:, 0, 2] + tile[1, 1][:, 0, 0]) / 4
    assert torch.allclose(cams[0, :, 2, 2], centre, atol=1e-5)


def test_odd_sizes_give_ceil_sized_cams_from_the_zero_padded_image():
    model = tiny()
    x = torch.randn(1, 3, 50, 70)
    cams = model(x)[1]
    assert cams.shape == (1, 3, 4, 5)
    padded = F.pad(x, (0, 96 - 70, 0, 64 - 50))
    assert torch.allclose(cams, model(padded)[1][..., :4, :5], atol=1e-5)


def test_bilinear_enlargement_upsamples_the_cam_of_the_resized_image():
    model = tiny(enlargement="bilinear")
    x = torch.randn(1, 3, 96, 96)
    small = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    expected = F.interpolate(model.tile_cams(small), size=(6, 6), mode="bilinear", align_corners=False)
    assert torch.allclose(model(x)[1], expected, atol=1e-5)


@pytest.mark.parametrize("loops", [0, 1])
def test_refined_cam_is_mean_class_to_patch_attention_times_the_cam(loops: int):
    model = tiny(loops=loops)
    x = torch.randn(2, 3, 64, 64)
    with AttentionCapture(vit_attention_modules(model.vit)) as capture:
        raw = model.tile_cams(x)
        attention = torch.stack(capture.maps).mean((0, 2))[:, 0, 1:].reshape(2, 1, 4, 4)
    logits, refined = model.refined_cams(x)
    assert torch.allclose(refined, raw * attention, atol=1e-5)
    assert torch.allclose(logits, raw.mean((2, 3)), atol=1e-5)


def test_refined_cam_averages_attention_over_every_loop_pass_and_restores_fused_attention():
    model = tiny(loops=3)
    assert model.vit.blocks[0].attn.fused_attn
    x = torch.randn(1, 3, 64, 64)
    _, attention = model.tile_cams_and_attention(x)
    assert model.vit.blocks[0].attn.fused_attn
    # each block's class row sums to 1 over all tokens, so the mean over passes does too (patches < 1)
    assert attention.shape == (1, 1, 4, 4) and 0 < attention.sum() < 1


def test_bad_configurations_are_clear_errors():
    with pytest.raises(ValueError, match="loops must be >= 0"):
        CRTTransformer("deit_tiny_patch16_224", loops=-1, depth=1, img_size=64)
    with pytest.raises(ValueError, match="divisible by twice the token stride"):
        CRTTransformer("deit_tiny_patch16_224", depth=1, img_size=48)
    with pytest.raises(ValueError, match="divisible by twice the token stride"):  # 40 px: 5x5 tokens of 8 px
        CRTTransformer("vit_tiny_r_s16_p8_224", depth=1, img_size=40, patch_size=2, embed_dim=32, num_heads=2)


def test_hybrid_vit_token_stride_is_the_stem_stride_times_the_patch_size():
    torch.manual_seed(0)
    model = CRTTransformer("vit_tiny_r_s16_p8_224", num_classes=3, depth=1, img_size=32, patch_size=2,
                           embed_dim=32, num_heads=2).eval()
    assert (model.tile, model.patch) == (32, 8)  # ResNet stem at stride 4, then 2x2 patches
    x = torch.randn(1, 3, 48, 48)  # tiles at 0 and 16 px along each side; CAM 6x6, tile CAM 4x4 at stride 2
    cams = model(x)[1]
    assert cams.shape == (1, 3, 6, 6)
    assert torch.allclose(cams[0, :, 5, 5], model.tile_cams(x[..., 16:, 16:])[0, :, 3, 3], atol=1e-5)
    assert torch.allclose(cams[0, :, 0, 0], model.tile_cams(x[..., :32, :32])[0, :, 0, 0], atol=1e-5)


def test_cam_l1_loss_against_a_hand_computation():
    a = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])  # align_corners up-sampling to 3x3: 0..6 in steps of 1 / 2
    assert torch.allclose(cam_l1_loss(a, torch.zeros_like(a), (3, 3)), torch.tensor(27 / 9))
    assert cam_l1_loss(a, a, (5, 5)) == 0
    with pytest.raises(ValueError, match="agree in batch and classes"):
        cam_l1_loss(a, torch.zeros(1, 2, 2, 2), (3, 3))


def test_classification_losses_against_hand_formulas():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    target = torch.tensor([[1.0, 0.0, 1.0]])
    sig = logits.sigmoid()
    expected = -(target * sig.log() + (1 - target) * (1 - sig).log()).mean()
    assert torch.allclose(classification_loss(logits, target, "multilabel"), expected)
    expected_ce = -(logits.softmax(1)[0, 2]).log()
    assert torch.allclose(classification_loss(logits, torch.tensor([2]), "single"), expected_ce)


def test_crt_loss_is_the_sum_of_eq_2():
    torch.manual_seed(0)
    lc, lv, target = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    cc, cv = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    out = crt_loss(lc, lv, cc, cv, target, (8, 8), cam_weight=0.1)
    expected = (F.multilabel_soft_margin_loss(lc, target) + F.multilabel_soft_margin_loss(lv, target)
                + 0.1 * cam_l1_loss(cc, cv, (8, 8)))
    assert torch.allclose(out["loss"], expected)
    without_l1 = crt_loss(lc, lv, cc, cv, target, (8, 8), 0.0)["loss"]
    assert torch.allclose(out["cls_cnn"] + out["cls_vit"], without_l1)
