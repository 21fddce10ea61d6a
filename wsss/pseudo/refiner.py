"""The interface every pseudo-mask refiner implements (random walk, dense CRF, pixel-adaptive refinement).

A refiner takes the image, the per-pixel class scores and, where it needs one, a patch-to-patch affinity, and
returns refined scores of the same shape; the prediction writer takes their argmax. Refiners are plain classes
with YAML-friendly constructor arguments, so a recipe can name one as ``class_path``/``init_args``.

Shared input conventions:

- ``image``: float (B, C, H, W) in the dataset's raw pixel scale (RGB 0..255 for VOC; any scale and band count
  for multi-band data; each refiner documents how it uses colour).
- ``scores``: float (B, K+1, H, W), non-negative, background channel first (CAMs stacked with a background
  score, e.g. by :func:`wsss.pseudo.background.scores_with_background`).
- ``affinity``: float (B, N, N) non-negative patch-to-patch affinity on an h×w token grid, N = h·w; only read
  by refiners whose ``needs_affinity`` is True.
"""

from abc import ABC, abstractmethod

from torch import Tensor


class Refiner(ABC):
    """Refines scores (B, K+1, H, W) using the image and, when ``needs_affinity``, a (B, N, N) affinity."""

    needs_affinity: bool = False

    @abstractmethod
    def __call__(self, image: Tensor, scores: Tensor, affinity: Tensor | None = None) -> Tensor:
        """Return refined scores of the same shape as ``scores``."""


def check_refiner_inputs(name: str, image: Tensor, scores: Tensor) -> None:
    """Raise ValueError unless image (B, C, H, W) and scores (B, K+1, H, W), K ≥ 1, are float and agree."""
    if image.ndim != 4 or not image.is_floating_point():
        raise ValueError(f"{name}: image must be float (B, C, H, W), got {image.dtype} {tuple(image.shape)}")
    if scores.ndim != 4 or not scores.is_floating_point() or scores.shape[1] < 2:
        raise ValueError(
            f"{name}: scores must be float (B, K+1, H, W) with the background channel first and at "
            f"least one class, got {scores.dtype} {tuple(scores.shape)}"
        )
    if image.shape[0] != scores.shape[0] or image.shape[-2:] != scores.shape[-2:]:
        raise ValueError(
            f"{name}: image {tuple(image.shape)} and scores {tuple(scores.shape)} must share the batch "
            "size and the spatial size (upsample the scores to the image first)"
        )
