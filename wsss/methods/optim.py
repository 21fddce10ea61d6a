"""Optimiser and learning-rate schedule built from plain arguments."""

import math
from typing import Literal

import torch

OptimizerName = Literal["sgd", "adamw"]
SchedulerName = Literal["cosine", "poly", "constant"]


def build_optimizer(
    param_groups: list[dict],
    name: OptimizerName,
    lr: float,
    weight_decay: float,
    momentum: float,
    betas: tuple[float, float],
) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW over groups that may carry an ``lr_scale`` multiplier."""
    groups = [{**g, "lr": lr * g.pop("lr_scale", 1.0)} for g in (dict(g) for g in param_groups)]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adamw'")


def lr_factor(
    step: int, total_steps: int, warmup_steps: int, name: SchedulerName, poly_power: float = 0.9
) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine to 0, poly decay, or constant."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "poly":
        return (1.0 - progress) ** poly_power
    raise ValueError(f"unknown scheduler {name!r}; expected 'cosine', 'poly' or 'constant'")
