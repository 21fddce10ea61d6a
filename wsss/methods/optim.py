"""Optimiser and learning-rate schedule built from plain arguments."""

import math
from typing import Literal

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

OptimizerName = Literal["sgd", "adamw"]
SchedulerName = Literal["cosine", "poly", "constant"]


def build_optimizer(
    param_groups: list[dict],
    name: OptimizerName,
    lr: float,
    weight_decay: float,
    momentum: float,
    betas: tuple[float, float],
    fused: bool = False,
) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW over groups that may carry an ``lr_scale`` multiplier.

    ``fused`` takes PyTorch's fused single-kernel update where every parameter allows it (floating point, on
    the CPU or a CUDA device): the same update up to float rounding, 2-3x faster than the per-tensor loop
    (DeiT-S AdamW on one CPU thread: 41 ms against 130 ms).
    """
    groups = []
    for group in map(dict, param_groups):
        scale = group.pop("lr_scale", 1.0)
        groups.append({**group, "lr": lr * scale, "params": list(group["params"])})
    params = [p for g in groups for p in g["params"]]
    allowed = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    fused = (fused and allowed) or None
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adamw'")


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """The full names that ``module`` and its submodules list in timm's ``no_weight_decay()`` convention."""
    names = set()
    for prefix, sub in module.named_modules():
        if callable(getattr(sub, "no_weight_decay", None)):
            names |= {f"{prefix}.{name}" if prefix else name for name in sub.no_weight_decay()}
    return names


def exempt_from_weight_decay(module: nn.Module, param_groups: list[dict]) -> list[dict]:
    """Split each group of ``module``'s parameters into those decayed and those given weight decay 0.

    The exempt ones are what timm's ``param_groups_weight_decay`` exempts (the rule of DeiT's / timm's
    ``create_optimizer``): 1-D tensors (norm weights), biases, and the ``no_weight_decay()`` names. Every
    other key of a group (e.g. ``lr_scale``) is kept on both halves.
    """
    timm_groups = param_groups_weight_decay(module, 1.0, no_weight_decay_list=no_weight_decay_names(module))
    exempt = {id(p) for group in timm_groups if group["weight_decay"] == 0 for p in group["params"]}
    split = []
    for group in param_groups:
        params = list(group["params"])
        decayed = [p for p in params if id(p) not in exempt]
        free = [p for p in params if id(p) in exempt]
        split += [{**group, "params": decayed}] if decayed else []
        split += [{**group, "params": free, "weight_decay": 0.0}] if free else []
    return split


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    name: SchedulerName,
    poly_power: float = 0.9,
    floor: float = 0.0,
    warmup_start: float = 0.0,
) -> float:
    """Multiplier of the base learning rate: linear warm-up from ``warmup_start``, then cosine down to
    ``floor`` (timm's ``warmup_lr_init`` and ``lr_min``, as fractions of the base rate), poly decay to 0, or
    constant."""
    if step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if name == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "poly":
        return (1.0 - progress) ** poly_power
    raise ValueError(f"unknown scheduler {name!r}; expected 'cosine', 'poly' or 'constant'")
