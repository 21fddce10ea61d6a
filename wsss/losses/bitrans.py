"""Bi-Trans's consistency losses (Wang & Zhang): SCC (eq. 3) and PAC (eq. 11) between two views.

The paper writes both as an L1 norm without saying how it is reduced. Here a row is an attention
distribution, and both losses are the mean over rows (classes for SCC, patches for PAC) and over the batch
of the L1 distance between a row of the original view and the same row of the un-transformed second view:
SCC = (1/C)·‖M − f⁻¹(M̂)‖₁ exactly as eq. 3, and PAC = (1/N)·‖A − f⁻¹(A′)‖₁, i.e. eq. 11 divided by the
number of patches N so that its scale (and a good α) does not depend on the image size.
"""

from torch import Tensor

from wsss.models.views import ViewName, invert_view_affinity, invert_view_tokens


def scc_loss(seeds: Tensor, view_seeds: Tensor, view: ViewName, grid: tuple[int, int]) -> Tensor:
    """L_scc = (1/C)·‖M − f⁻¹(M̂)‖₁ on SC-CAMs (B, C, N), averaged over the batch (Bi-Trans eq. 3)."""
    if seeds.ndim != 3 or seeds.shape != view_seeds.shape:
        raise ValueError(
            f"scc_loss: SC-CAMs must both be (B, C, N), got {tuple(seeds.shape)} and "
            f"{tuple(view_seeds.shape)}"
        )
    restored = invert_view_tokens(view_seeds, view, grid)
    return (seeds - restored).abs().sum(dim=-1).mean()


def pac_loss(affinity: Tensor, view_affinity: Tensor, view: ViewName, grid: tuple[int, int]) -> Tensor:
    """L_pac = (1/N)·‖A_aff − f⁻¹(A′_aff)‖₁ on affinities (B, N, N), batch-averaged (Bi-Trans eq. 11)."""
    if affinity.ndim != 3 or affinity.shape != view_affinity.shape:
        raise ValueError(
            f"pac_loss: affinities must both be (B, N, N), got {tuple(affinity.shape)} and "
            f"{tuple(view_affinity.shape)}"
        )
    restored = invert_view_affinity(view_affinity, view, grid)
    return (affinity - restored).abs().sum(dim=-1).mean()
