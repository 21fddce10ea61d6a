"""Fully connected CRF (Krähenbühl & Koltun 2011) through ``pydensecrf``, with the presets of the WSSS papers.

``pydensecrf`` is an optional extra: ``pip install 'wsss[crf]'`` installs the maintained fork
``pydensecrf2`` (the original ``pydensecrf`` 1.0rc3 does not build on Python 3.11; never install both). The
CRF runs on the CPU, image by image, in numpy.

Presets (methods.md §6, "CRF parameters"; 10 mean-field iterations everywhere):

- ``psa``: PSA ``crf_inference`` on score unaries −log(clip(score, 1e-5, 1)); Gaussian sxy 3, compat 3;
  bilateral sxy 80, srgb 13, compat 10.
- ``irn``: IRN/SIPE/CRT ``crf_inference_label`` on the argmax label with ``gt_prob`` 0.7; Gaussian sxy 3,
  compat 3; bilateral sxy 50, srgb 5, compat 10.
- ``mctformer``: MCTformer segmentation test on probabilities; Gaussian sxy 4, compat 3; bilateral sxy 83,
  srgb 5, compat 3.
- ``deeplab``: deeplab-pytorch's CRF used by CRT's segmentation stage (methods.md §5d) on probabilities;
  Gaussian sxy 1, compat 3; bilateral sxy 67, srgb 3, compat 4.

Like PSA and IRN, which build the CRF over the present classes only, the CRF here runs over the background and
the classes whose score is positive somewhere in the image; the other channels come back as zero.

Image: the first three channels (a single band is repeated) become the CRF's uint8 RGB. Images already in
0..255 are rounded as they are; images in [0, 1] are multiplied by 255; anything else (standardised or
reflectance bands) is min–max scaled to 0..255 per channel.
"""

import importlib
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from wsss.pseudo.refiner import Refiner, check_refiner_inputs

MISSING_CRF_MESSAGE = (
    "DenseCRF needs the optional package pydensecrf: install it with pip install 'wsss[crf]' "
    "(or pip install pydensecrf2==1.1; it builds from source with gcc). The pure-PyTorch "
    "wsss.pseudo.par.PixelAdaptiveRefiner needs no extra package."
)


@dataclass(frozen=True)
class CRFParams:
    """DenseCRF settings: unary kind, Gaussian (sxy, compat), bilateral (sxy, srgb, compat), gt_prob."""

    unary: Literal["prob", "label"]
    gaussian_sxy: float
    gaussian_compat: float
    bilateral_sxy: float
    bilateral_srgb: float
    bilateral_compat: float
    gt_prob: float = 0.7


CRF_PRESETS: dict[str, CRFParams] = {
    "psa": CRFParams(
        "prob", gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10
    ),
    "irn": CRFParams(
        "label",
        gaussian_sxy=3,
        gaussian_compat=3,
        bilateral_sxy=50,
        bilateral_srgb=5,
        bilateral_compat=10,
        gt_prob=0.7,
    ),
    "mctformer": CRFParams(
        "prob", gaussian_sxy=4, gaussian_compat=3, bilateral_sxy=83, bilateral_srgb=5, bilateral_compat=3
    ),
    "deeplab": CRFParams(
        "prob", gaussian_sxy=1, gaussian_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4
    ),
}


def import_pydensecrf() -> tuple[ModuleType, ModuleType]:
    """Return ``(pydensecrf.densecrf, pydensecrf.utils)``, or raise ImportError saying how to install them."""
    try:
        return importlib.import_module("pydensecrf.densecrf"), importlib.import_module("pydensecrf.utils")
    except ImportError as error:
        raise ImportError(MISSING_CRF_MESSAGE) from error


def image_to_uint8_rgb(image: Tensor) -> np.ndarray:
    """A C-contiguous uint8 (H, W, 3) array from a float (C, H, W) image, scaled as the module doc says."""
    rgb = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    rgb = rgb.detach().to("cpu", torch.float64)
    low, high = rgb.min().item(), rgb.max().item()
    if low >= 0 and high <= 1:
        rgb = rgb * 255
    elif low < 0 or high > 255:
        channel_low = rgb.amin(dim=(1, 2), keepdim=True)
        channel_range = (rgb.amax(dim=(1, 2), keepdim=True) - channel_low).clamp_min(1e-12)
        rgb = (rgb - channel_low) / channel_range * 255
    return np.ascontiguousarray(rgb.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


class DenseCRF(Refiner):
    """Dense CRF over the present classes with a preset of :data:`CRF_PRESETS`; returns the CRF marginals.

    Any of the parameter arguments that is given overrides the preset's value.
    """

    def __init__(
        self,
        preset: Literal["psa", "irn", "mctformer", "deeplab"] = "psa",
        iterations: int = 10,
        gaussian_sxy: float | None = None,
        gaussian_compat: float | None = None,
        bilateral_sxy: float | None = None,
        bilateral_srgb: float | None = None,
        bilateral_compat: float | None = None,
        gt_prob: float | None = None,
    ) -> None:
        import_pydensecrf()
        if preset not in CRF_PRESETS:
            raise ValueError(f"DenseCRF: unknown preset {preset!r}; choose one of {sorted(CRF_PRESETS)}")
        if iterations < 1:
            raise ValueError(f"DenseCRF: iterations must be >= 1, got {iterations}")
        overrides = dict(
            gaussian_sxy=gaussian_sxy,
            gaussian_compat=gaussian_compat,
            bilateral_sxy=bilateral_sxy,
            bilateral_srgb=bilateral_srgb,
            bilateral_compat=bilateral_compat,
            gt_prob=gt_prob,
        )
        self.params = replace(CRF_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
        if not 0 < self.params.gt_prob < 1:
            raise ValueError(f"DenseCRF: gt_prob must lie in (0, 1), got {self.params.gt_prob}")
        self.iterations = iterations

    def _marginals(self, rgb: np.ndarray, scores: np.ndarray) -> np.ndarray:
        densecrf, utils = import_pydensecrf()
        n_labels, height, width = scores.shape
        p = self.params
        if p.unary == "prob":
            unary = utils.unary_from_softmax(scores)
        else:
            unary = utils.unary_from_labels(scores.argmax(0), n_labels, gt_prob=p.gt_prob, zero_unsure=False)
        crf = densecrf.DenseCRF2D(width, height, n_labels)
        crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
        crf.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
        crf.addPairwiseBilateral(
            sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=rgb, compat=p.bilateral_compat
        )
        return np.asarray(crf.inference(self.iterations), dtype=np.float32).reshape(n_labels, height, width)

    def __call__(self, image: Tensor, scores: Tensor, affinity: Tensor | None = None) -> Tensor:
        """CRF marginals (B, K+1, H, W) of the scores; channels of absent classes are zero."""
        check_refiner_inputs("DenseCRF", image, scores)
        refined = torch.zeros_like(scores)
        for b in range(scores.shape[0]):
            present = scores[b, 1:].flatten(1).amax(dim=1) > 0
            channels = torch.cat([present.new_ones(1), present]).nonzero().squeeze(1)
            if len(channels) == 1:
                refined[b, 0] = 1
                continue
            selected = scores[b, channels].detach().to("cpu", torch.float32).numpy()
            marginals = self._marginals(image_to_uint8_rgb(image[b]), selected)
            refined[b, channels] = torch.from_numpy(marginals).to(refined)
        return refined
