"""Learning-rate schedules and optimiser groups."""

import math

import pytest
import torch

from wsss.methods.optim import build_optimizer, lr_factor


def test_linear_warmup_then_cosine():
    # 4 warm-up steps: (s + 1) / 4; then cosine over the remaining 10 steps.
    assert [lr_factor(s, 14, 4, "cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 14, 4, "cosine") == pytest.approx(1.0)
    assert lr_factor(9, 14, 4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(14, 14, 4, "cosine") == pytest.approx(0.0)


def test_poly_and_constant():
    assert lr_factor(5, 10, 0, "poly", poly_power=0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(10, 10, 0, "poly") == 0.0
    assert lr_factor(7, 10, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown scheduler"):
        lr_factor(1, 10, 0, "step")


def test_groups_scale_the_learning_rate():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    groups = [{"params": a.parameters()}, {"params": b.parameters(), "lr_scale": 10.0}]
    sgd = build_optimizer(groups, "sgd", lr=0.01, weight_decay=1e-4, momentum=0.9, betas=(0.9, 0.999))
    assert [g["lr"] for g in sgd.param_groups] == [0.01, pytest.approx(0.1)]
    assert sgd.param_groups[0]["momentum"] == 0.9  # really the momentum, unlike IRN's PolyOptimizer
    adamw = build_optimizer([{"params": a.parameters()}], "adamw", 1e-3, 0.05, 0.9, (0.9, 0.95))
    assert adamw.param_groups[0]["betas"] == (0.9, 0.95)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer([{"params": a.parameters()}], "lamb", 1e-3, 0.0, 0.9, (0.9, 0.95))
