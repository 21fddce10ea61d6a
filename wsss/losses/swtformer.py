"""SWTformer's losses (Ahmadi & Kasaei): CLS (eq. 2), GSC (eq. 5), CCL (eq. 6) and their sum (eq. 7).

Maps are (B, C+1, h, w) with the background first; ``valid`` (B, C+1) marks the background and the present
classes (see ``wsss.models.prototypes.valid_channels``).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

CCLReading = Literal["printed", "contrastive"]


def classification_loss(logits: Tensor, cls_labels: Tensor) -> Tensor:
    """Eq. 2: multi-label soft-margin loss of the GAP scores (as printed, eq. 2 lacks sigmoid and sign)."""
    return F.multilabel_soft_margin_loss(logits, cls_labels)


def gsc_loss(cams_bg: Tensor, rcams: Tensor) -> Tensor:
    """Eq. 5: L_GSC = 1/(C+1) ||CAM - R-CAM||_1, averaged over batch and pixels as well (SIPE's mean)."""
    if cams_bg.shape != rcams.shape:
        raise ValueError(f"gsc_loss: CAM {tuple(cams_bg.shape)} and R-CAM {tuple(rcams.shape)} differ")
    return (cams_bg - rcams).abs().mean()


def _class_cosines(cams_bg: Tensor, rcams: Tensor) -> Tensor:
    """(B, C+1, C+1) cosine similarity between every CAM channel (rows) and every R-CAM channel (columns)."""
    return F.normalize(cams_bg.flatten(2), dim=-1) @ F.normalize(rcams.flatten(2), dim=-1).transpose(1, 2)


def ccl_loss(
    cams_bg: Tensor, rcams: Tensor, valid: Tensor, reading: CCLReading = "printed", weight: float = 2 / 3
) -> Tensor:
    """Eq. 6: L_CCL = 1/2 [(2/3 cos(CAM, R-CAM))^2 + (1 - cos(CAM, R-CAM))^2].

    ``printed``: eq. 6 literally, with cos the per-class cosine between CAM_k and R-CAM_k over the pixels,
    averaged over the valid (background + present) channels. Note that this is minimal at cos = 9/13, not 1.
    ``contrastive``: the reading suggested by the text ("minimise the distance between similar classes,
    maximise it between dissimilar ones"): the second term over matching pairs (CAM_k, R-CAM_k), the first
    over the mismatched valid pairs (CAM_k, R-CAM_j), j != k, each averaged over its pairs, then halved.
    """
    if cams_bg.shape != rcams.shape or valid.shape != cams_bg.shape[:2]:
        raise ValueError(f"ccl_loss: CAM {tuple(cams_bg.shape)}, R-CAM {tuple(rcams.shape)} and valid "
                         f"{tuple(valid.shape)} do not match")
    cosines = _class_cosines(cams_bg, rcams)
    matching = cosines.diagonal(dim1=1, dim2=2)
    valid = valid.to(cams_bg.dtype)
    if reading == "printed":
        per_class = 0.5 * ((weight * matching) ** 2 + (1.0 - matching) ** 2)
        return (per_class * valid).sum() / valid.sum().clamp_min(1.0)
    if reading == "contrastive":
        pairs = valid[:, :, None] * valid[:, None, :]
        mismatched = pairs * (1.0 - torch.eye(valid.shape[1], dtype=valid.dtype, device=valid.device))
        positive = ((1.0 - matching) ** 2 * valid).sum() / valid.sum().clamp_min(1.0)
        negative = ((weight * cosines) ** 2 * mismatched).sum() / mismatched.sum().clamp_min(1.0)
        return 0.5 * (negative + positive)
    raise ValueError(f"ccl_loss: reading must be 'printed' or 'contrastive', got {reading!r}")


def total_loss(
    cls: Tensor, gsc: Tensor, ccl: Tensor, gsc_weight: float = 1.0, ccl_weight: float = 1.0
) -> Tensor:
    """Eq. 7: L_total = L_CLS + L_GSC + L_CCL (the weights, 1 in the paper, allow the Table 3 ablation)."""
    return cls + gsc_weight * gsc + ccl_weight * ccl
