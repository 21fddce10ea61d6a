"""Hard-concrete head gates (Louizos et al. 2018) on the heads of a timm ViT (Hanna et al. 2023, eq. 3-4).

A gate multiplies the post-softmax attention map of its head, which multiplies that head's output
``attn @ V`` (eq. 3); the hook goes through :class:`wsss.models.attention.AttentionCapture`, so timm's blocks
are not rewritten. As in the official code (``ConcreteGate``): temperature 0.33, stretch (-0.1, 1.1), one
noise sample per forward pass shared by the batch, binary forward values with a straight-through gradient
through the stretched sample, and at evaluation ``sigmoid(log_alpha)`` without noise or temperature (a head
is open iff ``log_alpha > 0``, up to float rounding: in float32 ``log_alpha`` = 1e-8 still gives a closed
gate, as in the official code, and :meth:`HardConcreteGate.open_gates` reports exactly the gates applied).
"""

import math

import torch
from torch import Tensor, nn

from wsss.models.attention import AttentionCapture, vit_attention_modules


class StraightThroughStep(torch.autograd.Function):
    """Forward 1[x > 0.5] exactly; backward passes the gradient through unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        """The binary step."""
        return (x > 0.5).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        """The identity gradient."""
        return grad


class HardConcreteGate(nn.Module):
    """Binary stochastic gates of any ``shape``, hard-concrete relaxation (Louizos et al. 2018, eq. 9-12)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        temperature: float = 0.33,
        stretch: tuple[float, float] = (-0.1, 1.1),
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        low, high = stretch
        if not (low < 0 and high > 1):
            raise ValueError(f"HardConcreteGate: stretch must satisfy low < 0 < 1 < high, got {stretch}")
        if temperature <= 0:
            raise ValueError(f"HardConcreteGate: temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.stretch = (low, high)
        self.eps = eps
        self.log_alpha = nn.Parameter(torch.empty(shape))
        bound = math.sqrt(6.0 / (shape[-1] + 1))  # xavier-uniform of the official (1, heads, 1, 1) parameter
        nn.init.uniform_(self.log_alpha, -bound, bound)

    def forward(self) -> Tensor:
        """Gates in {0, 1}: sampled in training, deterministic in evaluation (straight-through gradient)."""
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(self.eps, 1 - self.eps)
            soft = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / self.temperature)
        else:
            soft = torch.sigmoid(self.log_alpha)
        return StraightThroughStep.apply(self._stretch(soft))

    def _stretch(self, soft: Tensor) -> Tensor:
        low, high = self.stretch
        return (soft * (high - low) + low).clamp(0, 1)

    def open_probability(self) -> Tensor:
        """P(g != 0) = sigmoid(log_alpha - temperature * log(-low / high)) (Louizos et al. eq. 12)."""
        low, high = self.stretch
        shift = self.temperature * math.log(-low / high)
        return torch.sigmoid(self.log_alpha - shift).clamp(self.eps, 1 - self.eps)

    def penalty(self) -> Tensor:
        """The expected L0 norm: the sum of P(g != 0) over all gates (Hanna et al. eq. 4, L_reg)."""
        return self.open_probability().sum()

    @torch.no_grad()
    def open_gates(self) -> Tensor:
        """The deterministic evaluation gates as booleans, computed as the forward pass does."""
        return self._stretch(torch.sigmoid(self.log_alpha)) > 0.5


class ViTHeadGates(nn.Module):
    """One hard-concrete gate per (layer, head) of a timm VisionTransformer, applied through attention hooks.

    ``gate = ViTHeadGates(vit)`` registers the hooks at once; every forward pass of ``vit`` samples the
    gates once (at its first block) and multiplies head ``h`` of layer ``l`` by ``gate[l, h]``. ``capture``
    holds the gated attention maps of the latest forward pass (``capture.maps[-1]`` is the last layer's).
    """

    def __init__(self, vit: nn.Module, temperature: float = 0.33,
                 stretch: tuple[float, float] = (-0.1, 1.1)) -> None:
        super().__init__()
        modules = vit_attention_modules(vit)
        self.gate = HardConcreteGate((len(modules), modules[0].num_heads), temperature, stretch)
        self._values: Tensor | None = None
        self.capture = AttentionCapture(modules, on_map=self._gate_map)

    def _gate_map(self, index: int, attn: Tensor) -> Tensor:
        if index == 0:
            self._values = self.gate()
        return attn * self._values[index].to(attn.dtype)[None, :, None, None]

    def penalty(self) -> Tensor:
        """The expected number of open heads over all layers (eq. 4, L_reg)."""
        return self.gate.penalty()

    def open_probability(self) -> Tensor:
        """P(g != 0) per (layer, head)."""
        return self.gate.open_probability()

    def open_gates(self) -> Tensor:
        """Evaluation-time open heads as a (layers, heads) boolean tensor."""
        return self.gate.open_gates()
