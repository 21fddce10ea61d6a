"""Learning-rate schedules, optimiser groups and weight-decay exemptions."""

import inspect
import math

import pytest
import torch
from torch import nn

from wsss.methods.base import BaseTask
from wsss.methods.bitrans import BiTrans
from wsss.methods.mctformer import MCTformer
from wsss.methods.optim import build_optimizer, exempt_from_weight_decay, lr_factor, no_weight_decay_names


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


class TokenNet(nn.Module):
    """A module with a token listed in timm's ``no_weight_decay()`` convention, a norm and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 2, 4))
        self.body = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.head = nn.Conv2d(4, 2, 1)

    def no_weight_decay(self) -> set[str]:
        return {"token"}


def test_weight_decay_exemption_splits_every_group_and_keeps_its_lr_scale():
    outer = nn.Module()
    outer.net = TokenNet()  # nested: the no_weight_decay() names get the submodule's prefix
    assert no_weight_decay_names(outer) == {"net.token"}
    net = outer.net
    groups = [{"params": [net.token, *net.body.parameters()]},
              {"params": net.head.parameters(), "lr_scale": 10.0}]
    split = exempt_from_weight_decay(outer, groups)
    optimizer = build_optimizer(split, "adamw", 1e-3, 0.05, 0.9, (0.9, 0.999))
    names = {id(p): n for n, p in outer.named_parameters()}
    got = [(g["lr"], g["weight_decay"], {names[id(p)] for p in g["params"]}) for g in optimizer.param_groups]
    assert got == [
        (1e-3, 0.05, {"net.body.0.weight"}),
        (1e-3, 0.0, {"net.token", "net.body.0.bias", "net.body.1.weight", "net.body.1.bias"}),
        (pytest.approx(1e-2), 0.05, {"net.head.weight"}),
        (pytest.approx(1e-2), 0.0, {"net.head.bias"}),
    ]


def test_exemption_is_off_by_default_and_on_for_the_deit_based_methods():
    # on where the official optimiser exempts (MCTformer's DeiT main.py, hence Bi-Trans); IRN / SIPE / CRT /
    # SASFormer / sparse-ViT decay every parameter, and those methods keep BaseTask's default
    assert inspect.signature(BaseTask).parameters["weight_decay_exempt"].default is False
    for method in (MCTformer, BiTrans):
        assert inspect.signature(method).parameters["weight_decay_exempt"].default is True


class _Linear(BaseTask):
    """A one-layer task for optimiser tests."""

    def __init__(self, **optim) -> None:
        super().__init__(**optim)
        self.layer = nn.Linear(3, 1)

    def training_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": self.layer(batch["image"]).square().mean()}


@pytest.mark.parametrize(("reference", "expected"), [(None, 0.1), (32, 0.1 * 4 * 2 / 32)])
def test_lr_scales_with_the_global_batch(tmp_path, reference, expected):
    import lightning as L
    from torch.utils.data import DataLoader

    class Data(L.LightningDataModule):
        batch_size = 4

        def train_dataloader(self) -> DataLoader:
            return DataLoader([{"image": torch.randn(3)} for _ in range(16)], batch_size=self.batch_size)

    model = _Linear(lr=0.1, scheduler="constant", lr_reference_batch=reference)
    trainer = L.Trainer(max_steps=1, accumulate_grad_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=Data())
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="lr_reference_batch"):
        _Linear(lr_reference_batch=0)


def test_cosine_floor_and_warmup_start_are_timms_lr_min_and_warmup_lr_init():
    # timm: warm-up from warmup_lr_init, cosine from lr down to lr_min (as fractions of the base rate here)
    assert lr_factor(0, 14, 4, "cosine", warmup_start=0.2) == pytest.approx(0.2 + 0.8 * 0.25)
    assert lr_factor(14, 14, 4, "cosine", floor=0.1) == pytest.approx(0.1)
    middle = lr_factor(9, 14, 4, "cosine", floor=0.1)
    assert middle == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(14, 14, 0, "poly", floor=0.1) == 0.0  # the floor is the cosine's only
    with pytest.raises(ValueError, match="min_lr"):
        _Linear(lr=1e-3, min_lr=1e-2)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_update_equals_the_loop_and_drops_lr_scale(name):
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = nets[0][2].weight.detach().clone()
    optimizers = [
        build_optimizer([{"params": net[:2].parameters()}, {"params": net[2].parameters(), "lr_scale": 10.0}],
                        name, 1e-2, 0.05, 0.9, (0.9, 0.999), fused=fused)
        for net, fused in zip(nets, (False, True), strict=True)
    ]
    assert [o.defaults["fused"] for o in optimizers] == [None, True]
    assert all("lr_scale" not in g for o in optimizers for g in o.param_groups)
    for _ in range(3):
        x = torch.randn(4, 5)
        for net, optimizer in zip(nets, optimizers, strict=True):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(nets[1][2].weight, start)  # the steps moved the weights


@pytest.mark.parametrize(("clip", "fused"), [(None, True), (1.0, None)])
def test_the_configured_optimiser_is_fused_unless_gradients_are_clipped(tmp_path, clip, fused):
    import lightning as L
    from torch.utils.data import DataLoader

    model = _Linear(lr=0.1, scheduler="constant", optimizer="adamw")
    trainer = L.Trainer(max_steps=1, gradient_clip_val=clip, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader([{"image": torch.randn(3)} for _ in range(4)], batch_size=2))
    assert trainer.optimizers[0].defaults["fused"] is fused
