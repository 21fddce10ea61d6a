"""Bi-Trans's consistency losses (Wang & Zhang): SCC (eq. 3) and PAC (eq. 11) between two views.

The paper writes both as an L1 norm without saying how it is reduced. Here a row is an attention
distribution. ``reduction="sum"`` (the default, eq. 3 as printed) sums the L1 distance along a row of the
original view and the same row of the un-transformed second view, then averages over rows (classes for SCC,
patches for PAC) and the batch: SCC = (1/C)·‖M − f⁻¹(M̂)‖₁ exactly as eq. 3, and PAC = (1/N)·‖A − f⁻¹(A′)‖₁,
i.e. eq. 11 divided by the number of patches N so that its scale does not depend on the image size.
``reduction="mean"`` also averages along the row (1/N of the sum): the element-wise mean of SEAM's
equivariance loss, which the paper cites as its inspiration, and ``methods.md``'s suggestion.
"""

from typing import Literal

from torch import Tensor

from wsss.models.views import ViewName, invert_view_affinity, invert_view_tokens

Reduction = Literal["sum", "mean"]


def _row_l1(first: Tensor, second: Tensor, reduction: Reduction) -> Tensor:
    """The L1 distance of matching rows (summed or averaged along the row), averaged over rows and batch."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    distance = (first - second).abs()
    return distance.mean() if reduction == "mean" else distance.sum(dim=-1).mean()


def scc_loss(seeds: Tensor, view_seeds: Tensor, view: ViewName, grid: tuple[int, int],
             reduction: Reduction = "sum") -> Tensor:
    """L_scc = (1/C)·‖M − f⁻¹(M̂)‖₁ on SC-CAMs (B, C, N), averaged over the batch (Bi-Trans eq. 3)."""
    if seeds.ndim != 3 or seeds.shape != view_seeds.shape:
        raise ValueError(
            f"scc_loss: SC-CAMs must both be (B, C, N), got {tuple(seeds.shape)} and "
            f"{tuple(view_seeds.shape)}"
        )
    return _row_l1(seeds, invert_view_tokens(view_seeds, view, grid), reduction)


def pac_loss(affinity: Tensor, view_affinity: Tensor, view: ViewName, grid: tuple[int, int],
             reduction: Reduction = "sum") -> Tensor:
    """L_pac = (1/N)·‖A_aff − f⁻¹(A′_aff)‖₁ on affinities (B, N, N), batch-averaged (Bi-Trans eq. 11)."""
    if affinity.ndim != 3 or affinity.shape != view_affinity.shape:
        raise ValueError(
            f"pac_loss: affinities must both be (B, N, N), got {tuple(affinity.shape)} and "
            f"{tuple(view_affinity.shape)}"
        )
    return _row_l1(affinity, invert_view_affinity(view_affinity, view, grid), reduction)
