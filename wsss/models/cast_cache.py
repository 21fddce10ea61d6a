"""Linear layers that cast their weights for autocast once per inference loop instead of at every call.

Under autocast, every ``F.linear`` casts its fp32 weight and bias to the autocast dtype. Autocast's own cache
of these casts is off in ``inference_mode``, where Lightning validates and predicts, so each pass of a
multi-scale, multi-flip CAM loop casts every weight again (on one CPU thread, DeiT-S: about a quarter of the
MCTformer-V2 CAM time in ``bf16-mixed``). :class:`CastCachingLinear` keeps the cast copies while inference
runs: the copies are exactly what autocast makes, so outputs are bit-identical.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CastCachingLinear(nn.Linear):
    """``nn.Linear`` that, in inference mode under autocast, reuses its weight and bias cast to the autocast
    dtype; the copies are remade when a parameter changes (its version or storage) and freed by
    :func:`drop_cast_weights`. Elsewhere (training, no autocast) it is ``nn.Linear``."""

    def forward(self, x: Tensor) -> Tensor:
        """``F.linear`` on the cached low-precision copies in inference mode under autocast."""
        device = x.device.type
        if not (torch.is_inference_mode_enabled() and torch.is_autocast_enabled(device)):
            return super().forward(x)
        dtype = torch.get_autocast_dtype(device)
        key = (dtype, *((p.data_ptr(), p._version) for p in (self.weight, self.bias) if p is not None))
        cache = getattr(self, "_cast_cache", None)
        if cache is None or cache[0] != key:
            bias = None if self.bias is None else self.bias.to(dtype)
            cache = self._cast_cache = (key, self.weight.to(dtype), bias)
        return F.linear(x, cache[1], cache[2])


def cache_cast_weights(model: nn.Module) -> None:
    """Make every plain ``nn.Linear`` in ``model`` a :class:`CastCachingLinear` (the same parameters, state
    dict and function) and drop copies left from an earlier loop."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = CastCachingLinear
    drop_cast_weights(model)


def drop_cast_weights(model: nn.Module) -> None:
    """Free the low-precision copies held by the :class:`CastCachingLinear` layers of ``model``."""
    for module in model.modules():
        if isinstance(module, CastCachingLinear):
            module.__dict__.pop("_cast_cache", None)
