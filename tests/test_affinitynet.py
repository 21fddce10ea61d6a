"""AffinityNet: confident and pairwise labels, affinities, loss, and the random walk on its dense affinity."""

import math

import pytest
import torch

from wsss.models.affinitynet import (
    AffinityHead,
    AffinityLabels,
    affinity_labels,
    affinity_loss,
    confident_labels,
    dense_affinity,
    neighbour_affinity,
    neighbour_offsets,
    seed_labels,
)
from wsss.pseudo.affinity import AffinityRandomWalk


def test_neighbour_offsets_are_psas_half_disc():
    assert neighbour_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    offsets = neighbour_offsets(5)
    assert len(offsets) == 34 == len(set(offsets))
    assert all(dy * dy + dx * dx < 25 and (dy > 0 or (dy == 0 and dx > 0)) for dy, dx in offsets)
    with pytest.raises(ValueError, match="radius"):
        neighbour_offsets(1)


def test_confident_labels_follow_irn_thresholds():
    # Two classes on a 1×4 strip; IRN defaults conf_fg 0.30, conf_bg 0.05.
    cams = torch.tensor([[[[0.9, 0.2, 0.04, 0.30]], [[0.1, 0.1, 0.01, 0.10]]]])
    seed_fg, seed_bg = seed_labels(cams, 0.30), seed_labels(cams, 0.05)
    assert seed_fg.tolist() == [[[1, 0, 0, 0]]]  # 0.30 ties with the background score and goes to background
    assert seed_bg.tolist() == [[[1, 1, 0, 1]]]
    assert confident_labels(seed_fg, seed_bg).tolist() == [[[1, 255, 0, 255]]]
    crt = confident_labels(seed_labels(cams, 0.35), seed_labels(cams, 0.15))
    assert crt.tolist() == [[[1, 255, 0, 255]]]


def test_affinity_labels_on_a_hand_example():
    # Radius 2 → offsets (0,1), (1,-1), (1,0), (1,1); 255 = unsure.
    labels = torch.tensor([[[0, 0, 1], [255, 1, 2]]])
    result = affinity_labels(labels, radius=2)
    bg_pos, fg_pos, neg = (torch.zeros(1, 4, 2, 3) for _ in range(3))
    bg_pos[0, 0, 0, 0] = 1  # (0,0)-(0,1): both background
    fg_pos[0, 1, 0, 2] = 1  # (0,2)-(1,1): both class 1
    for offset, y, x in [(3, 0, 0), (0, 0, 1), (2, 0, 1), (3, 0, 1), (2, 0, 2), (0, 1, 1)]:
        neg[0, offset, y, x] = 1
    torch.testing.assert_close(result.bg_pos, bg_pos)
    torch.testing.assert_close(result.fg_pos, fg_pos)
    torch.testing.assert_close(result.neg, neg)


def test_neighbour_affinity_agrees_with_dense_affinity_and_a_hand_value():
    embedding = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    sparse = neighbour_affinity(embedding, radius=3)
    dense = dense_affinity(embedding, radius=3)
    for p, (dy, dx) in enumerate(neighbour_offsets(3)):
        for y in range(5):
            for x in range(6):
                inside = 0 <= y + dy < 5 and 0 <= x + dx < 6
                expected = dense[:, y * 6 + x, (y + dy) * 6 + x + dx] if inside else torch.zeros(2).double()
                torch.testing.assert_close(sparse[:, p, y, x], expected)
    pair = torch.tensor([[[[0.0, 1.0]], [[2.0, -1.0]]]])  # D = 2: mean |diff| = (1 + 3) / 2
    assert neighbour_affinity(pair, radius=2)[0, 0, 0, 0].item() == pytest.approx(math.exp(-2.0))


def test_dense_affinity_radius_mask_diagonal_and_symmetry():
    embedding = torch.randn(1, 4, 6, 6)
    dense = dense_affinity(embedding, radius=2)
    torch.testing.assert_close(dense, dense.transpose(1, 2))
    torch.testing.assert_close(dense.diagonal(dim1=1, dim2=2), torch.ones(1, 36))
    assert dense[0, 0, 1] > 0 and dense[0, 0, 7] > 0  # right neighbour, diagonal neighbour (1 + 1 < 4)
    assert dense[0, 0, 2] == 0 and dense[0, 0, 12] == 0  # two steps away: 4 is not < 4
    assert (dense_affinity(embedding, radius=None) > 0).all()


def test_affinity_loss_matches_a_hand_computation():
    affinity = torch.tensor([[[[0.9, 0.2]], [[0.5, 0.7]]]])
    labels = AffinityLabels(
        bg_pos=torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]]),
        fg_pos=torch.tensor([[[[0.0, 0.0]], [[1.0, 1.0]]]]),
        neg=torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]]]),
    )
    eps = 1e-5
    bg = -math.log(0.9 + eps) / (1 + eps)
    fg = -(math.log(0.5 + eps) + math.log(0.7 + eps)) / (2 + eps)
    neg = -math.log(1 + eps - 0.2) / (1 + eps)
    assert affinity_loss(affinity, labels).item() == pytest.approx(bg / 4 + fg / 4 + neg / 2, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        affinity_loss(affinity[:, :1], labels)


def test_affinity_head_shapes_errors_and_gradient():
    head = AffinityHead([8, 16, 32])
    features = [torch.randn(2, 8, 8, 10), torch.randn(2, 16, 4, 5), torch.randn(2, 32, 4, 5)]
    embedding = head(features)
    assert embedding.shape == (2, 64 + 128 + 256, 8, 10)
    labels = affinity_labels(torch.randint(0, 3, (2, 8, 10)), radius=5)
    affinity_loss(neighbour_affinity(embedding, radius=5), labels).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    with pytest.raises(ValueError, match="channels"):
        head(features[:2])
    with pytest.raises(ValueError, match="reduced width"):
        AffinityHead([8, 16], reduced_channels=[4])


def test_random_walk_on_affinitynet_affinity_spreads_within_a_region_only():
    # Two regions of constant embedding: the walk spreads a one-pixel seed over its own region only.
    embedding = torch.zeros(1, 4, 8, 8)
    embedding[..., 4:] = 10.0
    affinity = dense_affinity(embedding, radius=5)
    scores = torch.zeros(1, 2, 8, 8)
    scores[0, 1, 3, 1] = 1.0
    walked = AffinityRandomWalk("psa", bg_mode="keep")(torch.zeros(1, 3, 8, 8), scores, affinity)
    left, right = walked[0, 1, :, :4], walked[0, 1, :, 4:]
    assert right.max() < 1e-6
    # 64 steps mix the 32-pixel region: every pixel ends with the seed's stationary weight, near 1/32.
    assert left.max() / left.min() < 1.01 and 0.5 / 32 < left.mean() < 2 / 32
