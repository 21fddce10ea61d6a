"""SASFormer's affinity loss (eqs. 4-7) against hand computations and a per-cell loop; attention levels."""

import pytest
import torch
import torch.nn.functional as F

from wsss.losses.affinity import affinity_loss, class_distance, level_affinity_loss
from wsss.models.segformer import AttentionLevel, SegFormerWithAttention, ViTSegmenter, average_attention


def random_attention(batch: int, n_q: int, n_kv: int, seed: int = 0) -> torch.Tensor:
    """Row-stochastic (B, N_q, N_kv) maps."""
    return torch.randn(batch, n_q, n_kv, generator=torch.Generator().manual_seed(seed)).softmax(-1)


def test_distances_match_hand_computations():
    p, t = torch.tensor([0.5, 0.5]), torch.tensor([0.75, 0.25])
    assert class_distance(p, t, "l1").item() == pytest.approx(0.5)
    assert class_distance(p, t, "l2").item() == pytest.approx(0.125)
    kl = 0.75 * torch.log(torch.tensor(1.5)) + 0.25 * torch.log(torch.tensor(0.5))
    assert class_distance(p, t, "kl").item() == pytest.approx(kl.item(), abs=1e-6)
    assert class_distance(p, t, "ce").item() == pytest.approx(-torch.log(torch.tensor(0.5)).item(), abs=1e-6)
    with pytest.raises(ValueError, match="unknown affinity distance"):
        class_distance(p, t, "cosine")


@pytest.mark.parametrize("distance", ["l1", "l2", "kl"])
def test_loss_is_zero_for_a_spatially_constant_prediction(distance: str):
    logits = torch.tensor([2.0, -1.0, 0.5])[None, :, None, None].expand(2, 3, 8, 8).contiguous()
    levels = [AttentionLevel(random_attention(2, 64, 4), (8, 8), (2, 2)),
              AttentionLevel(random_attention(2, 16, 16, seed=1), (4, 4), (4, 4))]
    unlabeled = torch.ones(2, 8, 8)
    assert affinity_loss(logits, levels, unlabeled, distance).item() == pytest.approx(0.0, abs=1e-6)


def loop_level_loss(logits: torch.Tensor, attention: torch.Tensor, unlabeled: torch.Tensor) -> torch.Tensor:
    """Eqs. 4-7 one cell at a time for a 4x4 query grid on 4x4 logits and a 2x2 key grid (2x2 mean pooling,
    which is what bilinear halving computes), unlabeled cells only."""
    probs = logits.softmax(1)
    keys = F.avg_pool2d(logits, 2).softmax(1)  # bilinear 4 -> 2 (align_corners=False) is a 2x2 mean
    total, count = torch.zeros(()), 0
    for b in range(logits.shape[0]):
        for i in range(16):
            y, x = divmod(i, 4)
            if not unlabeled[b, y, x]:
                continue
            propagated = sum(attention[b, i, j] * keys[b, :, j // 2, j % 2] for j in range(4))
            total = total + (propagated.softmax(0) - probs[b, :, y, x].softmax(0)).abs().sum()
            count += 1
    return total / count


def test_level_loss_matches_a_per_cell_loop_and_ignores_labelled_pixels():
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    attention = random_attention(2, 16, 4)
    unlabeled = torch.ones(2, 4, 4)
    unlabeled[0, 1, 2] = unlabeled[1, 3, 0] = unlabeled[1, 0, 0] = 0
    level = AttentionLevel(attention, (4, 4), (2, 2))
    loss = level_affinity_loss(logits, level, unlabeled)
    assert loss.item() == pytest.approx(loop_level_loss(logits, attention, unlabeled).item(), rel=1e-5)
    # change two pixels of one 2x2 key cell, keeping its mean: the keys P' stay, only P at those pixels moves
    changed = logits.clone()
    changed[0, :, 1, 2] += torch.tensor([3.0, -2.0, 1.0])
    changed[0, :, 1, 3] -= torch.tensor([3.0, -2.0, 1.0])
    assert torch.allclose(F.avg_pool2d(changed, 2), F.avg_pool2d(logits, 2), atol=1e-6)
    assert level_affinity_loss(changed, level, unlabeled).item() != pytest.approx(loss.item(), rel=1e-4)
    unlabeled[0, 1, 3] = 0  # with both changed pixels labelled the loss does not see the change
    assert level_affinity_loss(changed, level, unlabeled).item() == pytest.approx(
        level_affinity_loss(logits, level, unlabeled).item(), rel=1e-6)


def test_cell_rules_all_pixels_and_nearest_pixel_and_nothing_unlabeled_gives_zero():
    logits = torch.randn(1, 3, 2, 2)
    level = AttentionLevel(random_attention(1, 4, 4), (2, 2), (2, 2))
    full = torch.ones(1, 4, 4)
    one_click = full.clone()
    one_click[0, 0, 0] = 0  # a single labelled pixel in the top-left 2x2 cell
    per_cell = class_distance((level.attention @ logits.softmax(1).flatten(2).transpose(1, 2)).softmax(-1),
                              logits.softmax(1).flatten(2).transpose(1, 2).softmax(-1), "l1")[0]
    expected = per_cell[1:].mean().item()
    all_rule = level_affinity_loss(logits, level, one_click, cells="all")
    assert all_rule.item() == pytest.approx(expected, rel=1e-5)
    assert level_affinity_loss(logits, level, torch.zeros(1, 4, 4), cells="all").item() == 0.0
    # the official rule samples the cell's top-left pixel: the click there excludes the cell ...
    assert level_affinity_loss(logits, level, one_click).item() == pytest.approx(expected, rel=1e-5)
    one_click[0, 0, 0], one_click[0, 1, 1] = 1, 0  # ... one elsewhere in the cell does not
    everywhere = per_cell.mean().item()
    assert level_affinity_loss(logits, level, one_click).item() == pytest.approx(everywhere, rel=1e-5)


def test_mean_and_sum_over_levels():
    logits = torch.randn(1, 3, 4, 4)
    levels = [AttentionLevel(random_attention(1, 16, 4, s), (4, 4), (2, 2)) for s in range(3)]
    unlabeled = torch.ones(1, 4, 4)
    each = [level_affinity_loss(logits, level, unlabeled).item() for level in levels]
    assert affinity_loss(logits, levels, unlabeled, reduction="mean").item() == pytest.approx(sum(each) / 3)
    assert affinity_loss(logits, levels, unlabeled, reduction="sum").item() == pytest.approx(sum(each))
    with pytest.raises(ValueError, match="at least one"):
        affinity_loss(logits, [], unlabeled)


def test_gradients_reach_the_attention():
    attention = random_attention(1, 16, 4).requires_grad_()
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    level_affinity_loss(logits, AttentionLevel(attention, (4, 4), (2, 2)), torch.ones(1, 4, 4)).backward()
    assert attention.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0


def test_average_attention_is_eq3_with_rows_renormalised():
    maps = [random_attention(2, 5, 5, s).reshape(1, 2, 5, 5) for s in range(3)]  # (B=1, heads=2)
    expected = torch.stack([m.mean(1) for m in maps]).mean(0)
    assert torch.allclose(average_attention(maps), expected, atol=1e-6)
    without_cls = average_attention(maps, num_prefix_tokens=1)
    assert without_cls.shape == (1, 4, 4)
    assert torch.allclose(without_cls.sum(-1), torch.ones(1, 4))
    assert torch.allclose(without_cls, expected[:, 1:, 1:] / expected[:, 1:, 1:].sum(-1, keepdim=True))


def test_segformer_levels_have_reduced_keys_and_the_loss_trains_the_attention():
    model = SegFormerWithAttention("mit_b0", classes=3, last_stage_stride=1)
    out = model(torch.randn(1, 3, 40, 72), with_attention=True)  # padded to 64 x 96
    assert out.logits.shape == (1, 3, 40, 72) and out.padded_size == (64, 96)
    assert out.decoder_logits.shape == (1, 3, 16, 24)
    grids = [(level.query_size, level.key_size) for level in out.levels]
    assert grids == [((16, 24), (2, 3)), ((8, 12), (2, 3)), ((4, 6), (2, 3)), ((4, 6), (4, 6))]
    for level in out.levels:
        assert torch.allclose(level.attention.sum(-1), torch.ones(1, level.attention.shape[1]), atol=1e-5)
    affinity_loss(out.decoder_logits, out.levels, torch.ones(1, 64, 96)).backward()
    assert model.model.encoder.block1[0].attn.q.weight.grad.abs().sum() > 0
    assert model(torch.randn(1, 3, 32, 32)).levels == []


def test_the_loss_runs_on_a_timm_vit_with_captured_attention():
    model = ViTSegmenter("vit_tiny_patch16_224", classes=3, num_levels=2, depth=4, img_size=32, patch_size=8,
                         embed_dim=64, num_heads=2)
    out = model(torch.randn(2, 3, 30, 30), with_attention=True)  # padded to 32: a 4x4 patch grid
    assert out.logits.shape == (2, 3, 30, 30) and out.decoder_logits.shape == (2, 3, 4, 4)
    assert [tuple(level.attention.shape) for level in out.levels] == [(2, 16, 16)] * 2
    unlabeled = torch.ones(2, 32, 32)
    affinity_loss(out.decoder_logits, out.levels, unlabeled).backward()
    assert model.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_channels_last_decoding_is_smps_decoder_and_head_at_a_real_size():
    from wsss.models.segformer import decode_channels_last, pad_to_multiple

    torch.manual_seed(0)
    model = SegFormerWithAttention("mit_b0", classes=21).train()
    smp_model = model.model
    features = [f.detach() for f in smp_model.encoder(pad_to_multiple(torch.randn(2, 3, 375, 500), 32))]
    params = [*smp_model.decoder.parameters(), *smp_model.segmentation_head[0].parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results = []
    for decode in (lambda: smp_model.segmentation_head[0](smp_model.decoder(features)),
                   lambda: decode_channels_last(smp_model.decoder, smp_model.segmentation_head[0], features)):
        model.load_state_dict(state)
        logits = decode()
        grads = torch.autograd.grad(logits.square().sum(), params)
        results.append((logits, grads, smp_model.decoder.fuse_stage[1].running_var.clone()))
    (expected, expected_grads, expected_var), (logits, grads, running_var) = results
    assert logits.shape == (2, 21, 96, 128)  # 1/4 of the 384 x 512 padding of a 375 x 500 image
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    scale = max(g.abs().max() for g in expected_grads)  # the MLP biases' true gradient is 0 (BatchNorm)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(running_var, expected_var)
