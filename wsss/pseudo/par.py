"""Pixel-adaptive refinement, pure PyTorch and batched (PAR of AFA: Ru et al., CVPR 2022; reused by ToCo).

Every pixel i looks at its 8 neighbours at each dilation d (offsets d·(dy, dx), replicate padding at the image
border), P = 8·len(dilations) neighbours j in all. For each image channel, the colour difference is divided by
that channel's standard deviation over the P neighbour values (unbiased); the colour logits are
κ_ij = −mean_c (|I_ic − I_jc| / (σ_ic + 1e-8) / w1)², and the position logits use the neighbour distances d or
d·√2 the same way (normalised by their std over the P neighbours). The weights are
(softmax_j κ_ij + w2 · softmax_j κ^pos_ij) / (1 + w2), and each iteration replaces the scores by the weighted
sum over the neighbours. Dividing by 1 + w2 keeps the weights a convex combination, so the scores stay on
their scale; AFA omits it, which multiplies every score by (1 + w2) per iteration and leaves the argmax
unchanged.

Because each channel is divided by its own local std, the weights do not change (up to the 1e-8 added to
the std) under any per-channel affine rescaling of the image: raw 0..255 RGB, ImageNet-normalised input and
multi-band reflectances of any band count all work as given.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.pseudo.refiner import Refiner, check_refiner_inputs

#: The 8 neighbour directions (dy, dx), row by row, as in AFA's 3×3 kernels.
NEIGHBOUR_DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class PixelAdaptiveRefiner(Refiner):
    """AFA/ToCo pixel-adaptive refinement of scores by dilated-neighbourhood colour affinities."""

    def __init__(
        self,
        iterations: int = 10,
        dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
        w1: float = 0.3,
        w2: float = 0.01,
    ) -> None:
        if iterations < 1:
            raise ValueError(f"PixelAdaptiveRefiner: iterations must be >= 1, got {iterations}")
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(f"PixelAdaptiveRefiner: dilations must be positive integers, got {dilations}")
        if w1 <= 0 or w2 < 0:
            raise ValueError(f"PixelAdaptiveRefiner: need w1 > 0 and w2 >= 0, got w1={w1}, w2={w2}")
        self.iterations = iterations
        self.dilations = tuple(int(d) for d in dilations)
        self.w1 = w1
        self.w2 = w2
        self.offsets = [(d * dy, d * dx) for d in self.dilations for dy, dx in NEIGHBOUR_DIRECTIONS]

    def _shifted(self, x: Tensor) -> list[Tensor]:
        """The P neighbour views (B, C, H, W) of x (B, C, H, W), with the border replicated."""
        pad = max(self.dilations)
        height, width = x.shape[-2:]
        padded = F.pad(x, [pad] * 4, mode="replicate")
        return [
            padded[..., pad + dy : pad + dy + height, pad + dx : pad + dx + width] for dy, dx in self.offsets
        ]

    def weights(self, image: Tensor) -> Tensor:
        """Neighbour weights (B, P, H, W) of an image (B, C, H, W); they sum to one over P."""
        batch, channels, height, width = image.shape
        logits = image.new_zeros(batch, len(self.offsets), height, width)
        for channel in range(channels):
            centre = image[:, channel]
            neighbours = torch.cat(self._shifted(image[:, channel : channel + 1]), dim=1)
            std = neighbours.std(dim=1, keepdim=True)
            logits -= ((neighbours - centre[:, None]).abs() / (std + 1e-8) / self.w1).square()
        colour = torch.softmax(logits / channels, dim=1)
        distance = torch.tensor(
            [(dy * dy + dx * dx) ** 0.5 for dy, dx in self.offsets], dtype=image.dtype, device=image.device
        )
        position = torch.softmax(-(distance / (distance.std() + 1e-8) / self.w1).square(), dim=0)
        return (colour + self.w2 * position[None, :, None, None]) / (1 + self.w2)

    def __call__(self, image: Tensor, scores: Tensor, affinity: Tensor | None = None) -> Tensor:
        """Propagate scores (B, K+1, H, W) over the image's neighbour weights for ``iterations`` steps."""
        check_refiner_inputs("PixelAdaptiveRefiner", image, scores)
        weights = self.weights(image.to(scores.dtype))[:, None]
        for _ in range(self.iterations):
            refined = torch.zeros_like(scores)
            for n, neighbour in enumerate(self._shifted(scores)):
                refined.addcmul_(weights[:, :, n], neighbour)
            scores = refined
        return scores
