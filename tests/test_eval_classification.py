"""MultilabelMAP against a hand-computed AP and sklearn's average_precision_score."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from wsss.eval import MultilabelMAP

SCORES = torch.tensor([[0.9, 0.2, 0.5], [0.8, 0.7, 0.1], [0.3, 0.6, 0.4], [0.1, 0.4, 0.2]])
LABELS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
# class 0 ranked: 0.9 (+), 0.8 (-), 0.3 (+), 0.1 (-) -> AP = (1/1 + 2/3) / 2 = 5/6
# class 1 ranked: 0.7 (+) first -> AP = 1;  class 2 has no positive -> left out
HAND_MAP = (5 / 6 + 1.0) / 2


def test_hand_example_ignores_classes_without_positives() -> None:
    metric = MultilabelMAP(num_labels=3)
    metric.update(SCORES, LABELS)
    per_class = metric.per_class_ap()
    assert per_class[:2].tolist() == pytest.approx([5 / 6, 1.0])
    assert math.isnan(per_class[2])
    assert metric.compute().item() == pytest.approx(HAND_MAP)


def test_two_updates_accumulate_and_reset_clears() -> None:
    metric = MultilabelMAP(num_labels=3)
    metric.update(SCORES[:1], LABELS[:1].long())
    metric.update(SCORES[1:], LABELS[1:])
    assert metric.compute().item() == pytest.approx(HAND_MAP)
    metric.reset()
    metric.update(SCORES[:2], LABELS[:2])
    # class 0: 0.9 (+), 0.8 (-) -> 1; class 1: 0.7 (+) above 0.2 (-) -> 1
    assert metric.compute().item() == pytest.approx(1.0)


def test_matches_sklearn_on_random_scores() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(40, 6, generator=gen)
    labels = (torch.rand(40, 6, generator=gen) > 0.7).long()
    labels[:, 4] = 0  # a class without positives
    metric = MultilabelMAP(num_labels=6)
    metric.update(scores[:25], labels[:25])
    metric.update(scores[25:], labels[25:])
    expected = [
        average_precision_score(labels[:, c].numpy(), scores[:, c].numpy()) for c in range(6) if c != 4
    ]
    assert metric.compute().item() == pytest.approx(np.mean(expected), abs=1e-6)


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="must both be"):
        MultilabelMAP(num_labels=3).update(SCORES, LABELS[:, :2])
