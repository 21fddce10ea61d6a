"""Parity with the official SASFormer@145682d on its golden outputs (tests/data/parity/sasformer.md)."""

from functools import partial
from pathlib import Path
from unittest import mock

import pytest
import torch
from segmentation_models_pytorch.decoders.segformer.decoder import SegformerDecoder
from segmentation_models_pytorch.encoders.mix_transformer import LayerNorm, MixVisionTransformerEncoder

from wsss.losses.affinity import affinity_loss, level_affinity_loss
from wsss.methods.sasformer import SASFormer, nearest_labels, partial_cross_entropy
from wsss.models.attention import AttentionCapture, mit_attention_modules
from wsss.models.segformer import (
    AttentionLevel,
    SegFormerWithAttention,
    SegmenterOutput,
    average_attention,
    official_mit_state_dict,
)

FIXTURE = torch.load(Path(__file__).parent / "data/parity/sasformer.pt", weights_only=True)
CASES = ["block", "clicks", "padded"]
EXACT = dict(atol=1e-10, rtol=0)
ALPHA = FIXTURE["meta.alpha"]


def levels_from_scores(scores: list[torch.Tensor]) -> list[AttentionLevel]:
    """A_l from the stored pre-softmax scores (block, B, heads, N_q, N_k): softmax, then wsss's eq. 3."""
    levels = []
    for level, score in enumerate(scores):
        query = tuple(FIXTURE["level_query_hw"][level].tolist())
        key = tuple(FIXTURE["level_key_hw"][level].tolist())
        levels.append(AttentionLevel(average_attention(list(score.softmax(-1))), query, key))
    return levels


def inputs(grad: bool = False) -> tuple[torch.Tensor, list[torch.Tensor], list[AttentionLevel]]:
    pred = FIXTURE["pred"].clone().requires_grad_(grad)
    scores = [FIXTURE[f"attn_scores_l{i}"].clone().requires_grad_(grad) for i in range(1, 5)]
    return pred, scores, levels_from_scores(scores)


def unlabeled(case: str, padding_unlabeled: bool = False) -> torch.Tensor:
    """The official unlabeled map (targets == -1, padding excluded), or wsss's data convention (255)."""
    if padding_unlabeled:
        return (FIXTURE[f"sparse_{case}"] == 255).double()
    return (FIXTURE[f"targets_{case}"] == -1).double()


def official_ce_labels(case: str) -> torch.Tensor:
    return FIXTURE[f"ce_labels_{case}"].long().masked_fill(FIXTURE[f"ce_labels_{case}"] < 0, 255)


def test_stored_maps_are_the_softmax_of_the_scores():
    for i in range(1, 5):
        assert torch.allclose(FIXTURE[f"attn_scores_l{i}"].softmax(-1), FIXTURE[f"attn_maps_l{i}"], **EXACT)


@pytest.mark.parametrize("case", CASES)
def test_affinity_loss_per_level_and_summed(case):
    pred, _, levels = inputs()
    mask = unlabeled(case)
    each = torch.stack([level_affinity_loss(pred, level, mask) for level in levels])
    assert torch.allclose(each, FIXTURE[f"aff_level_{case}"], **EXACT)
    assert torch.allclose(each.cumsum(0), FIXTURE[f"aff_cum_{case}"], **EXACT)
    for k in range(1, 5):
        summed = affinity_loss(pred, levels[:k], mask, reduction="sum")
        assert abs(summed.item() - FIXTURE[f"aff_cum_{case}"][k - 1].item()) < 1e-10


def test_level_mean_is_the_paper_default_a_quarter_of_the_official_sum():
    pred, _, levels = inputs()
    mean = affinity_loss(pred, levels, unlabeled("block"))  # eq. 7: 1/L sum over levels
    official = FIXTURE["aff_cum_block"][-1].item()
    assert abs(4 * mean.item() - official) < 1e-10
    assert abs(mean.item() - official) > 0.1  # the .md's gap of 0.144


@pytest.mark.parametrize("case", CASES)
def test_affinity_gradient_with_respect_to_the_predictions(case):
    pred, _, levels = inputs(grad=True)
    affinity_loss(pred, levels, unlabeled(case), reduction="sum").backward()
    assert torch.allclose(pred.grad, FIXTURE[f"aff_grad_pred_{case}"], **EXACT)


def test_affinity_gradients_per_number_of_levels_and_with_respect_to_the_attention_scores():
    for k in range(1, 5):
        pred, scores, levels = inputs(grad=True)
        affinity_loss(pred, levels[:k], unlabeled("block"), reduction="sum").backward()
        assert torch.allclose(pred.grad, FIXTURE["aff_grad_pred_cum_block"][k - 1], **EXACT)
    for i, score in enumerate(scores, start=1):
        assert torch.allclose(score.grad, FIXTURE[f"aff_grad_scores_l{i}_block"], **EXACT)


def test_all_pixels_cell_rule_is_a_documented_switch_on_clicks():
    pred, _, levels = inputs()
    each = torch.stack([level_affinity_loss(pred, lv, unlabeled("clicks"), cells="all") for lv in levels])
    gap = (each - FIXTURE["aff_level_clicks"]).abs()
    assert 1e-5 < gap.max() < 1e-3 and abs(gap.sum() - 7.8e-4) < 1e-4  # the .md: up to 4.8e-4, sum 7.8e-4
    block = torch.stack([level_affinity_loss(pred, lv, unlabeled("block"), cells="all") for lv in levels])
    assert torch.allclose(block, FIXTURE["aff_level_block"], **EXACT)  # whole cells: both rules agree


def test_crop_padding_counted_as_unlabeled_differs_from_the_official_exclusion():
    pred, _, levels = inputs()
    wsss = affinity_loss(pred, levels, unlabeled("padded", padding_unlabeled=True), reduction="sum")
    assert abs(wsss.item() - FIXTURE["aff_cum_padded"][-1].item()) == pytest.approx(3.8e-3, abs=2e-4)


@pytest.mark.parametrize("case", CASES)
def test_partial_cross_entropy_at_the_official_label_resolution(case):
    labels = nearest_labels(FIXTURE[f"sparse_{case}"].long(), (24, 24))
    assert torch.equal(labels, official_ce_labels(case))
    assert abs(partial_cross_entropy(FIXTURE["pred"], labels).item() - FIXTURE[f"ce_{case}"]) < 1e-10


def test_clicks_that_vanish_at_the_official_label_resolution():
    labels = nearest_labels(FIXTURE["sparse_clicks"].long(), (24, 24))
    assert (FIXTURE["sparse_clicks"] != 255).sum() == FIXTURE["clicks_labelled_px_full"]
    assert (labels != 255).sum() == FIXTURE["clicks_labelled_px_ce"]
    cells = FIXTURE["clicks_centres"].long()
    sampled = [any(r % 4 == 0 for r in (y - 1, y, y + 1)) and any(c % 4 == 0 for c in (x - 1, x, x + 1))
               for _, y, x in cells.tolist()]  # the 4x nearest downsampling keeps pixels (4i, 4j)
    kept = sum(sampled)
    assert len(cells) - kept == FIXTURE["clicks_vanished"]


def fake_output() -> SegmenterOutput:
    """The fixture's predictions and attention as the segmenter's output on a 96 px crop."""
    pred, _, levels = inputs(grad=True)
    return SegmenterOutput(pred, levels, (96, 96), (96, 96))


@pytest.mark.parametrize("case", ["block", "clicks"])
def test_method_total_loss_with_the_official_reduction_matches(case):
    model = SASFormer(backbone="mit_b0", alpha=ALPHA, level_reduction="sum").double()
    out = fake_output()
    batch = {"image": torch.zeros(2, 3, 96, 96), "sparse": FIXTURE[f"sparse_{case}"].long()}
    with mock.patch.object(model, "forward", return_value=out):
        losses = model.training_losses(batch)
    assert abs(losses["seg"].item() - FIXTURE[f"ce_{case}"]) < 1e-10
    assert abs(losses["loss"].item() - FIXTURE[f"total_{case}"]) < 1e-10
    if case == "block":
        losses["loss"].backward()
        assert torch.allclose(out.decoder_logits.grad, FIXTURE["total_grad_pred_block"], **EXACT)


def test_method_defaults_paper_mean_and_the_input_resolution_switch():
    batch = {"image": torch.zeros(2, 3, 96, 96), "sparse": FIXTURE["sparse_block"].long()}
    model = SASFormer(backbone="mit_b0", alpha=ALPHA).double()
    with mock.patch.object(model, "forward", return_value=fake_output()):
        losses = model.training_losses(batch)
    expected = FIXTURE["ce_block"] + ALPHA * FIXTURE["aff_cum_block"][-1].item() / 4
    assert abs(losses["loss"].item() - expected) < 1e-10
    model = SASFormer(backbone="mit_b0", alpha=0.0, seg_loss_resolution="input").double()
    with mock.patch.object(model, "forward", return_value=fake_output()):
        seg = model.training_losses(batch)["seg"].item()
    assert seg == pytest.approx(3.743122, abs=1e-6)  # full-resolution labels (the .md's measurement)


def tiny_official_mit() -> SegFormerWithAttention:
    """wsss's SegFormer with the fixture's tiny MiT encoder (smp classes) and official weights loaded."""
    options = {k.removeprefix("mit."): FIXTURE[k] for k in FIXTURE if k.startswith("mit.") and "_s" not in k}
    encoder = MixVisionTransformerEncoder(
        out_channels=[3, 0, *options["embed_dims"]], patch_size=4, embed_dims=options["embed_dims"],
        num_heads=options["num_heads"], mlp_ratios=options["mlp_ratios"], qkv_bias=options["qkv_bias"],
        norm_layer=partial(LayerNorm, eps=options["block_norm_eps"]), depths=options["depths"],
        sr_ratios=options["sr_ratios"])
    model = SegFormerWithAttention("mit_b0", classes=21)
    model.model.encoder = encoder
    model.model.decoder = SegformerDecoder(encoder.out_channels, 5, 256)
    model.model.encoder.patch_embed4.proj.stride = (1, 1)  # what SegFormerWithAttention does (stride 1)
    model.stages = mit_attention_modules(encoder)
    model.load_official_encoder(dict(options["state_dict"]))
    return model.double().eval()


def test_tiny_official_mit_features_attention_and_levels():
    model = tiny_official_mit()
    image = FIXTURE["mit.image"].double()
    modules = [m for stage in model.stages for m in stage]
    with torch.no_grad(), AttentionCapture(modules) as capture:
        features = model.model.encoder(image)[2:]
    for s, feature in enumerate(features, start=1):
        assert torch.allclose(feature, FIXTURE[f"mit.features_s{s}"], **EXACT)
        official = FIXTURE[f"mit.attn_s{s}"]
        for b in range(2):
            assert torch.allclose(capture.maps[2 * (s - 1) + b], official[b], **EXACT)
    with torch.no_grad():
        out = model(image, with_attention=True)
    for s, level in enumerate(out.levels, start=1):
        official = FIXTURE[f"mit.attn_s{s}"]
        expected = (official / official.sum(-1, keepdim=True)).mean(2).mean(0)  # official order of means
        assert torch.allclose(level.attention, expected / expected.sum(-1, keepdim=True), **EXACT)
        assert list(level.query_size) == FIXTURE["level_query_hw"][s - 1].tolist()
        assert list(level.key_size) == FIXTURE["level_key_hw"][s - 1].tolist()


def test_official_mit_converter_unwraps_prefixes_and_drops_the_head():
    state = FIXTURE["mit.state_dict"]
    wrapped = {"state_dict": {**{f"module.encoder.{k}": v for k, v in state.items()},
                              "module.decoder.linear_pred.weight": torch.zeros(1)}}
    assert official_mit_state_dict(wrapped).keys() == state.keys()
    with_head = {**{f"backbone.{k}": v for k, v in state.items()}, "backbone.head.weight": torch.zeros(1)}
    assert official_mit_state_dict(with_head).keys() == state.keys()
    with pytest.raises(ValueError, match="official MiT"):
        SegFormerWithAttention("mit_b0", classes=21).load_official_encoder(dict(state))
