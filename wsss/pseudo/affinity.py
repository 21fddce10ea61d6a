"""Random walk of class scores over a patch-to-patch affinity (PSA, IRN, SIPE; MCTformer's attention).

The transition matrix follows PSA (Ahn & Kwak, CVPR 2018, Sec. 3.3): T = D⁻¹ A^∘β with D the row sums, and the
walk is vec(M*_c) = T^t · vec(M_c) with t = 2^log_t reached by squaring T log_t times. Row i of T holds the
probabilities of stepping from patch i to every patch, so each walked score is a weighted average of the
scores where the walk from that patch ends. PSA's and IRN's code normalise the columns of A^∘β and compute
``cam_vec @ T``; for a symmetric A that is the same product, which is why the affinity is symmetrised
first ((A + Aᵀ)/2, on by default; MCTformer applies its attention affinity unsymmetrised, once, as
``P @ vec(CAM)``).

Mapping between the H×W scores and the h×w token grid: the scores are area-averaged onto h×w
(``adaptive_avg_pool2d``, PSA's 8×8 average pooling when H = 8h), walked, and bilinearly upsampled back to
H×W. The grid is the factorisation h·w = N whose aspect ratio is closest to H/W (see :func:`token_grid`).

Background options (methods.md §6): ``keep`` walks the given background channel with the classes (SIPE's
learned background); ``constant`` replaces it by ``bg_value`` (PSA/MCTformer walk: 0.39; a constant is a fixed
point of the walk); ``power`` replaces it by (1 − max_c score)^α before the walk (PSA's CRF labels);
``threshold`` walks the classes only, divides them by their maximum over classes and pixels and stacks a
constant ``bg_value`` (IRN: ``sem_seg_bg_thres`` 0.25).
"""

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.pseudo.refiner import Refiner, check_refiner_inputs

WalkBackground = Literal["keep", "constant", "power", "threshold"]


@dataclass(frozen=True)
class WalkParams:
    """Random-walk settings: affinity power β, t = 2^log_t steps, background rule, score power, symmetry."""

    beta: float
    log_t: int
    bg_mode: WalkBackground
    bg_value: float = 0.0
    alpha: float = 1.0
    score_power: float = 1.0
    symmetrize: bool = True


WALK_PRESETS: dict[str, WalkParams] = {
    # MCTformer's psa/infer_aff.py: β=8, logt=6 (T^64), constant background 0.39.
    "psa": WalkParams(beta=8.0, log_t=6, bg_mode="constant", bg_value=0.39),
    # IRN run_sample.py: β=10, exp_times=8 (T^256), foreground walked, max-normalised, bg threshold 0.25.
    "irn": WalkParams(beta=10.0, log_t=8, bg_mode="threshold", bg_value=0.25),
    # SIPE make_seg_labels.py: IRN's walk on IS-CAM^1.5 including its learned background channel.
    "sipe": WalkParams(beta=10.0, log_t=8, bg_mode="keep", score_power=1.5),
    # MCTformer CAM refinement: refined = P · vec(CAM) once with the raw attention affinity P.
    "mctformer": WalkParams(beta=1.0, log_t=0, bg_mode="keep", symmetrize=False),
}


def _check_affinity(name: str, affinity: Tensor) -> None:
    if affinity.ndim != 3 or affinity.shape[-1] != affinity.shape[-2]:
        raise ValueError(f"{name}: affinity must be (B, N, N), got {tuple(affinity.shape)}")
    if bool((affinity < 0).any()):
        raise ValueError(
            f"{name}: affinity must be non-negative (an attention map or exp(-distance)), "
            f"got a minimum of {affinity.min().item():.3g}"
        )


def transition_matrix(affinity: Tensor, beta: float = 8.0, symmetrize: bool = True) -> Tensor:
    """Row-stochastic T = D⁻¹ A^∘β (PSA Sec. 3.3) of a (B, N, N) affinity, symmetrised first when asked."""
    _check_affinity("transition_matrix", affinity)
    powered = affinity.pow(beta)
    if symmetrize:
        powered = 0.5 * (powered + powered.transpose(-1, -2))
    return powered / powered.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(powered.dtype).tiny)


def random_walk(
    affinity: Tensor, scores: Tensor, beta: float = 8.0, n_squarings: int = 6, symmetrize: bool = True
) -> Tensor:
    """Walk scores (B, C, N) over an affinity (B, N, N): out[b, c] = T^t · scores[b, c], t = 2^n_squarings."""
    if scores.ndim != 3 or scores.shape[0] != affinity.shape[0] or scores.shape[-1] != affinity.shape[-1]:
        raise ValueError(
            f"random_walk: scores must be (B, C, N) matching the affinity (B, N, N) "
            f"{tuple(affinity.shape)}, got {tuple(scores.shape)}"
        )
    if n_squarings < 0:
        raise ValueError(f"random_walk: n_squarings must be >= 0, got {n_squarings}")
    transition = transition_matrix(affinity.to(scores.dtype), beta, symmetrize)
    for _ in range(n_squarings):
        transition = transition @ transition
    return scores @ transition.transpose(-1, -2)


def token_grid(n_tokens: int, height: int, width: int) -> tuple[int, int]:
    """The grid (h, w) with h·w = n_tokens whose aspect ratio h/w is closest to height/width."""
    target = math.log(height / width)
    divisors = [h for h in range(1, n_tokens + 1) if n_tokens % h == 0]
    h = min(divisors, key=lambda d: abs(math.log(d / (n_tokens // d)) - target))
    return h, n_tokens // h


class AffinityRandomWalk(Refiner):
    """Refines scores by a random walk over a (B, N, N) patch affinity (PSA/IRN); see the module docstring.

    ``preset`` picks the settings of :data:`WALK_PRESETS` (psa, irn, sipe, mctformer); any other argument that
    is given overrides the preset's value.
    """

    needs_affinity = True

    def __init__(
        self,
        preset: Literal["psa", "irn", "sipe", "mctformer"] = "psa",
        beta: float | None = None,
        log_t: int | None = None,
        bg_mode: WalkBackground | None = None,
        bg_value: float | None = None,
        alpha: float | None = None,
        score_power: float | None = None,
        symmetrize: bool | None = None,
    ) -> None:
        if preset not in WALK_PRESETS:
            raise ValueError(
                f"AffinityRandomWalk: unknown preset {preset!r}; choose one of {sorted(WALK_PRESETS)}"
            )
        overrides = dict(
            beta=beta,
            log_t=log_t,
            bg_mode=bg_mode,
            bg_value=bg_value,
            alpha=alpha,
            score_power=score_power,
            symmetrize=symmetrize,
        )
        self.params = replace(WALK_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
        if self.params.bg_mode not in ("keep", "constant", "power", "threshold"):
            raise ValueError(f"AffinityRandomWalk: unknown bg_mode {self.params.bg_mode!r}")
        if self.params.log_t < 0:
            raise ValueError(f"AffinityRandomWalk: log_t must be >= 0, got {self.params.log_t}")

    def _background(self, scores: Tensor) -> Tensor:
        mode = self.params.bg_mode
        if mode == "constant":
            return torch.full_like(scores[:, :1], self.params.bg_value)
        if mode == "power":
            return (1 - scores[:, 1:].amax(dim=1, keepdim=True)).clamp_min(0).pow(self.params.alpha)
        return scores[:, :1]

    def __call__(self, image: Tensor, scores: Tensor, affinity: Tensor | None = None) -> Tensor:
        """Walk the scores (B, K+1, H, W) over ``affinity`` (B, N, N) and return them at H×W."""
        check_refiner_inputs("AffinityRandomWalk", image, scores)
        if affinity is None:
            raise ValueError(
                "AffinityRandomWalk needs an affinity (B, N, N): the method's patch-to-patch "
                "attention or an AffinityNet's dense_affinity"
            )
        _check_affinity("AffinityRandomWalk", affinity)
        if affinity.shape[0] != scores.shape[0]:
            raise ValueError(
                f"AffinityRandomWalk: affinity batch {affinity.shape[0]} != scores batch {scores.shape[0]}"
            )
        height, width = scores.shape[-2:]
        grid = token_grid(affinity.shape[-1], height, width)
        params = self.params
        if params.bg_mode == "threshold":
            walked_input = scores[:, 1:]
        else:
            walked_input = torch.cat([self._background(scores), scores[:, 1:]], dim=1)
        pooled = F.adaptive_avg_pool2d(walked_input.pow(params.score_power), grid).flatten(2)
        walked = random_walk(affinity.to(scores.device), pooled, params.beta, params.log_t, params.symmetrize)
        refined = F.interpolate(
            walked.unflatten(-1, grid), size=(height, width), mode="bilinear", align_corners=False
        )
        if params.bg_mode != "threshold":
            return refined
        peak = refined.amax(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(refined.dtype).tiny)
        return torch.cat([torch.full_like(refined[:, :1], params.bg_value), refined / peak], dim=1)
