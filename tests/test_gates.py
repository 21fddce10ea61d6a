"""Hard-concrete head gates: evaluation values, the L0 penalty, and gating timm attention heads."""

import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from wsss.models.gates import HardConcreteGate, ViTHeadGates


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(img_size=16, patch_size=8, in_chans=3, num_classes=3, embed_dim=32, depth=2,
                             num_heads=4)


def test_evaluation_gates_are_deterministic_binary_and_open_iff_log_alpha_positive():
    gate = HardConcreteGate((2, 5)).eval()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([[-3.0, -0.2, 0.1, 0.5, 4.0], [0.3, -0.01, 2.0, -5.0, 0.05]]))
    first, second = gate(), gate()
    assert torch.equal(first, second)
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(first.bool(), gate.log_alpha > 0)
    assert torch.equal(gate.open_gates(), gate.log_alpha > 0)


def test_training_gates_are_binary_with_a_straight_through_gradient():
    torch.manual_seed(0)
    gate = HardConcreteGate((64,)).train()
    values = gate()
    assert set(values.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(values, gate())  # sampled anew on every call (64 gates near 0.5)
    values.sum().backward()
    assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0


def test_penalty_is_the_hand_computed_sum_of_open_probabilities():
    gate = HardConcreteGate((3,), temperature=0.33, stretch=(-0.1, 1.1))
    alphas = [-1.0, 0.0, 2.5]
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor(alphas))
    shift = 0.33 * math.log(0.1 / 1.1)
    expected = sum(1 / (1 + math.exp(-(a - shift))) for a in alphas)
    assert gate.penalty().item() == pytest.approx(expected, rel=1e-6)


def test_bad_stretch_is_refused():
    with pytest.raises(ValueError, match="stretch"):
        HardConcreteGate((4,), stretch=(0.0, 1.1))


def reference_attention(attn_module, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """timm attention written out by hand with each head's output multiplied by its gate (eq. 3)."""
    b, n, c = x.shape
    h = attn_module.num_heads
    q, k, v = attn_module.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-2, -1) * attn_module.scale).softmax(-1)
    heads = (weights @ v) * gates[None, :, None, None]
    return attn_module.proj(heads.transpose(1, 2).reshape(b, n, c))


def test_gates_multiply_each_head_output_of_a_timm_block():
    torch.manual_seed(0)
    vit = tiny_vit().eval()
    gates = ViTHeadGates(vit).eval()
    with torch.no_grad():
        gates.gate.log_alpha.copy_(torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, 1.0, 1.0]]))
    x = torch.randn(2, 5, 32)
    attn = vit.blocks[1].attn
    gates.capture.on_map(0, torch.zeros(1, 4, 5, 5))  # samples the gates of this forward pass
    expected = reference_attention(attn, x, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.allclose(attn(x), expected, atol=1e-6)


def test_with_all_gates_closed_the_heads_contribute_nothing():
    torch.manual_seed(0)
    vit = tiny_vit().eval()
    gates = ViTHeadGates(vit).eval()
    with torch.no_grad():
        gates.gate.log_alpha.fill_(-5.0)
    out = vit.forward_features(torch.randn(2, 3, 16, 16))
    assert gates.capture.maps[-1].abs().sum() == 0
    x = torch.randn(2, 5, 32)
    attn = vit.blocks[0].attn
    assert torch.allclose(attn(x), attn.proj.bias.expand_as(x), atol=1e-6)  # only the projection's bias
    assert out.shape == (2, 5, 32)
