"""SWTformer's losses (eqs. 2, 5, 6, 7) against hand computations and loops."""

import pytest
import torch
import torch.nn.functional as F

from wsss.losses.swtformer import ccl_loss, classification_loss, gsc_loss, total_loss


def test_classification_loss_is_the_mean_binary_cross_entropy_over_classes():
    logits, labels = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])
    sigmoid = torch.sigmoid
    expected = -(torch.log(sigmoid(torch.tensor(2.0))) + torch.log(1 - sigmoid(torch.tensor(-1.0)))) / 2
    assert torch.isclose(classification_loss(logits, labels), expected)


def test_gsc_is_zero_when_cam_equals_rcam_and_the_mean_l1_otherwise():
    cams = torch.rand(2, 3, 4, 4)
    assert gsc_loss(cams, cams.clone()) == 0
    rcams = torch.zeros(1, 2, 1, 2)
    cams = torch.tensor([[[[1.0, 0.5]], [[0.0, 0.5]]]])
    assert torch.isclose(gsc_loss(cams, rcams), torch.tensor(0.5))  # (1 + 0.5 + 0 + 0.5) / 4
    with pytest.raises(ValueError, match="differ"):
        gsc_loss(cams, torch.zeros(1, 3, 1, 2))


def test_ccl_printed_by_hand():
    valid = torch.tensor([[True, True]])
    cams = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    # Identical maps: cos = 1, loss = 1/2 (2/3)^2 = 2/9 for each channel.
    assert torch.isclose(ccl_loss(cams, cams, valid), torch.tensor(2 / 9))
    # Orthogonal maps: cos = 0, loss = 1/2 (0 + 1) = 1/2.
    assert torch.isclose(ccl_loss(cams, cams.flip(1), valid), torch.tensor(0.5))
    # cos = 1/sqrt(2) on channel 0 only; channel 1 is invalid and excluded.
    rcams = torch.tensor([[[[1.0, 1.0]], [[5.0, 5.0]]]])
    c = 2 ** -0.5
    expected = 0.5 * ((2 / 3 * c) ** 2 + (1 - c) ** 2)
    assert torch.isclose(ccl_loss(cams, rcams, torch.tensor([[True, False]])), torch.tensor(expected))


def test_ccl_printed_is_minimal_below_perfect_agreement():
    c = torch.linspace(0, 1, 1301)
    values = 0.5 * ((2 / 3 * c) ** 2 + (1 - c) ** 2)
    assert abs(float(c[values.argmin()]) - 9 / 13) < 1e-3


def test_ccl_contrastive_matches_a_loop():
    torch.manual_seed(0)
    cams, rcams = torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 3)
    valid = torch.tensor([[True, True, False, True], [True, False, True, False]])
    pos, neg = [], []
    for b in range(2):
        for k in range(4):
            for j in range(4):
                if not (valid[b, k] and valid[b, j]):
                    continue
                cos = F.cosine_similarity(cams[b, k].flatten(), rcams[b, j].flatten(), dim=0)
                (pos.append((1 - cos) ** 2) if k == j else neg.append((2 / 3 * cos) ** 2))
    expected = 0.5 * (torch.stack(pos).mean() + torch.stack(neg).mean())
    assert torch.isclose(ccl_loss(cams, rcams, valid, reading="contrastive"), expected, atol=1e-6)
    with pytest.raises(ValueError, match="reading"):
        ccl_loss(cams, rcams, valid, reading="other")


def test_total_loss_is_the_weighted_sum():
    one, two, three = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    assert total_loss(one, two, three) == 6
    assert total_loss(one, two, three, gsc_weight=0.0, ccl_weight=0.5) == 2.5
