"""Random walk over a learned AffinityNet's affinity (PSA: Ahn & Kwak, CVPR 2018, Sec. 3.3; IRN's walk).

:class:`LearnedAffinityRandomWalk` loads an :class:`wsss.methods.affinitynet.AffinityNetTask` checkpoint,
computes its dense affinity W_ij = exp(−mean_c |f_i − f_j|) on the image it is given, and lets
:class:`wsss.pseudo.affinity.AffinityRandomWalk` walk the scores on it (T = D⁻¹ W^∘β, T^t). So any method's
CAMs can be refined in ``wsss predict`` without the method having a ``patch_affinity``.

Normalisation: the writer passes the image in the raw pixel scale; it is normalised with ``mean``/``std``,
which must be those of the DataModule the AffinityNet was trained with (ImageNet's by default, as for VOC,
COCO and CUB; give the DataModule's values for other data).
"""

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from wsss.data.voc import IMAGENET_MEAN, IMAGENET_STD
from wsss.methods.affinitynet import AffinityNetTask
from wsss.pseudo.affinity import AffinityRandomWalk, WalkBackground
from wsss.pseudo.refiner import Refiner, check_refiner_inputs


class LearnedAffinityRandomWalk(Refiner):
    """Walks scores (B, K+1, H, W) over the affinity of an AffinityNet checkpoint (PSA/IRN random walk).

    ``preset``, ``beta``, ``log_t`` and ``bg_mode`` are those of :class:`AffinityRandomWalk` (IRN's preset:
    β = 10, t = 2^8, foreground walked and background threshold 0.25).
    """

    needs_affinity = False

    def __init__(
        self,
        checkpoint: str,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        preset: Literal["psa", "irn", "sipe", "mctformer"] = "irn",
        beta: float | None = None,
        log_t: int | None = None,
        bg_mode: WalkBackground | None = None,
        bg_value: float | None = None,
    ) -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"LearnedAffinityRandomWalk: checkpoint {path} does not exist; train an AffinityNet first "
                "(`wsss fit --config recipes/affinitynet_synthetic.yaml`) and pass its .ckpt"
            )
        if len(mean) != len(std):
            raise ValueError(f"LearnedAffinityRandomWalk: mean {mean} and std {std} differ in length")
        try:
            self.model = AffinityNetTask.load_from_checkpoint(path, map_location="cpu").eval()
        except (KeyError, RuntimeError, TypeError, ValueError, pickle.UnpicklingError) as err:
            raise ValueError(
                f"LearnedAffinityRandomWalk: {path} is not an AffinityNetTask checkpoint ({err})"
            ) from err
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.walk = AffinityRandomWalk(
            preset=preset, beta=beta, log_t=log_t, bg_mode=bg_mode, bg_value=bg_value
        )

    @torch.no_grad()
    def affinity(self, image: Tensor) -> Tensor:
        """The AffinityNet's dense affinity (B, N, N) of a raw-scale image (B, C, H, W)."""
        if image.shape[1] != len(self.mean):
            raise ValueError(
                f"LearnedAffinityRandomWalk: image has {image.shape[1]} channels, mean/std have "
                f"{len(self.mean)}"
            )
        model = self.model.to(image.device)
        mean, std = (image.new_tensor(v).view(1, -1, 1, 1) for v in (self.mean, self.std))
        normalised = (image - mean) / std
        return model.patch_affinity(normalised)

    def __call__(self, image: Tensor, scores: Tensor, affinity: Tensor | None = None) -> Tensor:
        """Refined scores of the shape of ``scores``; ``affinity`` is ignored (the model computes its own)."""
        check_refiner_inputs("LearnedAffinityRandomWalk", image, scores)
        return self.walk(image, scores, self.affinity(image))
