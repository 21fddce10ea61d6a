"""SWTformer building blocks: Swin stage maps, HFF, background map, seed locating, prototypes and R-CAM."""

import pytest
import torch
import torch.nn.functional as F

from wsss.models.hff import HierarchicalFeatureFusion
from wsss.models.prototypes import (
    class_prototypes,
    locate_seeds,
    prototype_cams,
    structural_similarity,
    valid_channels,
    with_background,
)
from wsss.models.swin_cam import ConvStemPatchEmbed, PatchTokenCAMHead, SwinFeatures

TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, img_size=32,
                 patch_size=2)


def test_swin_features_are_channels_first_for_any_input_size():
    swin = SwinFeatures(overrides=TINY_SWIN)
    maps = swin(torch.randn(1, 3, 38, 31))  # the width is padded to 32
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 19, 16), (32, 10, 8), (64, 5, 4), (128, 3, 2)]
    assert swin.channels == [16, 32, 64, 128] and swin.reductions == [2, 4, 8, 16]


def test_swin_features_refuse_fixed_arguments():
    with pytest.raises(ValueError, match="may not set"):
        SwinFeatures(overrides={"features_only": False})
    with pytest.raises(ValueError, match="may not set"):
        SwinFeatures(overrides={"embed_layer": ConvStemPatchEmbed})


def test_conv_stem_keeps_the_stage_grids_and_strides_only_its_first_log2_patch_convs():
    swin = SwinFeatures(overrides=TINY_SWIN, stem_channels=(4, 6, 6))
    maps = swin(torch.randn(1, 3, 38, 31))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 19, 16), (32, 10, 8), (64, 5, 4), (128, 3, 2)]
    convs = [m for m in swin.model.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (4, (3, 3), (2, 2)), (6, (3, 3), (1, 1)), (6, (3, 3), (1, 1)), (16, (1, 1), (1, 1))]


@pytest.mark.parametrize(("stem", "changed"), [(None, 1), ((4, 4), 9)])
def test_conv_stem_widens_the_receptive_field_of_a_patch_token(stem, changed):
    """A pixel moves one token under the linear 2x2 patches, its 3x3 neighbourhood under two 3x3 convs."""
    torch.manual_seed(0)  # a random init can zero a path through the ReLUs
    embed = SwinFeatures(overrides=TINY_SWIN, stem_channels=stem).model.patch_embed.eval()
    x = torch.randn(1, 3, 16, 16)
    y = x.clone()
    y[0, :, 6, 6] += 5.0  # inside the patch of token (3, 3)
    moved = (embed(x) - embed(y)).abs().sum(-1)[0] > 1e-6
    assert moved.sum() == changed and moved[3, 3]


def test_conv_stem_rejects_patch_sizes_it_cannot_reach():
    with pytest.raises(ValueError, match="power-of-two"):
        SwinFeatures(overrides=TINY_SWIN | {"patch_size": 3}, stem_channels=(4, 4))
    with pytest.raises(ValueError, match="log2"):
        SwinFeatures(overrides=TINY_SWIN | {"patch_size": 4}, stem_channels=(4,))


def test_cam_head_scores_are_the_mean_of_the_conv_maps_and_cams_are_max_normalised():
    head = PatchTokenCAMHead(8, 3)
    tokens = torch.randn(2, 8, 5, 5)
    scores, cams = head(tokens)
    raw = head.conv(tokens)
    assert torch.allclose(scores, raw.mean((2, 3)))
    peak = raw.clamp_min(0).amax((2, 3), keepdim=True)
    assert torch.allclose(cams, raw.clamp_min(0) / (peak + 1e-5), atol=1e-7)  # SIPE's additive eps
    assert torch.equal(PatchTokenCAMHead.normalize(-torch.ones(1, 1, 2, 2)), torch.zeros(1, 1, 2, 2))


def test_hff_fuses_four_stages_at_the_stage3_grid_with_unit_norm_parts():
    hff = HierarchicalFeatureFusion([4, 8, 16, 32], dims=(2, 3, 5, 7))
    feats = [torch.randn(2, c, s, s, requires_grad=True) for c, s in ((4, 13), (8, 7), (16, 4), (32, 2))]
    fused = hff(feats)
    assert fused.shape == (2, 17, 4, 4) and hff.out_channels == 17
    for part in fused.split([5, 5, 7], dim=1):
        assert torch.allclose(part.norm(dim=1), torch.ones(2, 4, 4), atol=1e-5)
    fused.sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_hff_rejects_stage_grids_that_do_not_halve():
    hff = HierarchicalFeatureFusion([4, 8, 16, 32], dims=(2, 2, 2, 2))
    feats = [torch.randn(1, c, s, s) for c, s in ((4, 16), (8, 8), (16, 8), (32, 2))]
    with pytest.raises(ValueError, match="do not halve"):
        hff(feats)


def test_background_map_is_one_minus_the_max_of_all_classes_before_gating():
    cams = torch.tensor([[[[0.2, 0.9]], [[0.7, 0.1]], [[0.8, 0.0]]]])
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    out = with_background(cams, labels)  # eq. 3 / SIPE: the absent class 3 still shapes M_B
    assert torch.allclose(out[0, 0], torch.tensor([[0.2, 0.1]]))
    assert torch.equal(out[0, 3], torch.zeros(1, 2)) and torch.equal(out[0, 1:3], cams[0, :2])
    present = with_background(cams, labels, over="present")  # the switch: present classes only
    assert torch.allclose(present[0, 0], torch.tensor([[0.3, 0.1]]))
    assert torch.equal(present[0, 1:], out[0, 1:])
    with pytest.raises(ValueError, match="over must be"):
        with_background(cams, labels, over="some")  # type: ignore[arg-type]


def test_structural_similarity_is_the_absolute_cosine_or_sipes_relu():
    tokens = torch.tensor([[3.0, 0.0, 1.0], [0.0, 2.0, -1.0]])[None, :, None, :]
    expected = torch.tensor([[1.0, 0.0, 0.5 ** 0.5], [0.0, 1.0, 0.5 ** 0.5], [0.5 ** 0.5, 0.5 ** 0.5, 1.0]])
    assert torch.allclose(structural_similarity(tokens)[0], expected, atol=1e-6)
    expected[1, 2] = expected[2, 1] = 0.0  # cos(token 1, token 2) = -1/sqrt(2)
    assert torch.allclose(structural_similarity(tokens, "relu")[0], expected, atol=1e-6)


def test_seed_locating_gives_each_token_the_class_of_greatest_structural_overlap():
    # Four tokens in a row: 0 and 1 point the same way, 2 and 3 point in opposite directions (|cos| = 1).
    tokens = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])[None, :, None, :]
    cams = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])[None, :, None, :]
    labels = torch.tensor([[1.0, 1.0]])
    maps = with_background(cams, labels)  # background [0, 1, 0, 1]
    # By hand: token 0/1 rows of S are [1,1,0,0]: IoU_A = 1/(2+1-1) = 1/2, IoU_bg = 0.5 * 1/(2+2-1) = 1/6.
    # Tokens 2/3 rows are [0,0,1,1]: IoU_B = 1/2, IoU_bg = 1/6. With ReLU(cos) (SIPE) token 3 would be bg.
    seeds = locate_seeds(maps, tokens, valid_channels(labels))
    expected = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    assert torch.equal(seeds[0, :, 0], expected)


def test_seed_locating_never_picks_an_absent_class_and_matches_a_loop():
    torch.manual_seed(0)
    tokens, cams = torch.randn(2, 6, 3, 3), torch.rand(2, 4, 3, 3)
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    maps = with_background(cams, labels)
    seeds = locate_seeds(maps, tokens, valid_channels(labels), bg_scale=0.5)
    flat, m = tokens.flatten(2), maps.flatten(2)
    for b in range(2):
        for i in range(9):
            ious = []
            for k in range(5):
                s = F.cosine_similarity(flat[b, :, i, None], flat[b], dim=0).abs()
                inter = (s * m[b, k]).sum()
                iou = inter / (s.sum() + m[b, k].sum() - inter)
                present = k == 0 or labels[b, k - 1] > 0
                ious.append(float("-inf") if not present else iou * (0.5 if k == 0 else 1.0))
            assert seeds[b, :, i // 3, i % 3].argmax() == torch.tensor(ious).argmax()
    assert seeds.sum(1).eq(1).all()


def test_prototypes_are_the_seed_weighted_feature_means():
    torch.manual_seed(0)
    features = torch.randn(1, 3, 2, 2)
    seeds = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    protos = class_prototypes(features, seeds)
    assert torch.allclose(protos[0, 0], (features[0, :, 0, 0] + features[0, :, 0, 1]) / 2)
    assert torch.allclose(protos[0, 1], features[0, :, 1, 0])
    assert torch.equal(protos[0, 2], torch.zeros(3))


def test_prototype_cams_are_relu_cosines_normalised_to_max_one():
    torch.manual_seed(0)
    features, protos = torch.randn(1, 4, 3, 3), torch.randn(1, 2, 4)
    rcams = prototype_cams(features, protos)
    for k in range(2):
        cos = F.cosine_similarity(features[0], protos[0, k][:, None, None], dim=0).clamp_min(0)
        assert torch.allclose(rcams[0, k], cos / cos.max(), atol=1e-5)
    assert torch.equal(prototype_cams(features, torch.zeros(1, 1, 4)), torch.zeros(1, 1, 3, 3))
