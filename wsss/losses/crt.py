"""CRT's objective (Huo et al. 2023, eq. 2): two classification losses and an L1 consistency of raw CAMs."""

from typing import Literal

import torch.nn.functional as F
from torch import Tensor


def cam_l1_loss(cam_cnn: Tensor, cam_vit: Tensor, size: tuple[int, int]) -> Tensor:
    """L_l1-cam of eq. 2: mean |up(CAM_cnn) - up(CAM_vit)| of raw CAMs bilinearly up-sampled to ``size``.

    Up-sampling uses ``align_corners=True`` as the official code (to the crop size, 336 on VOC).
    """
    if cam_cnn.shape[:2] != cam_vit.shape[:2]:
        raise ValueError(
            f"cam_l1_loss: the CAMs must agree in batch and classes, got {tuple(cam_cnn.shape)} and "
            f"{tuple(cam_vit.shape)}"
        )
    up_cnn = F.interpolate(cam_cnn, size=size, mode="bilinear", align_corners=True)
    up_vit = F.interpolate(cam_vit, size=size, mode="bilinear", align_corners=True)
    return (up_cnn - up_vit).abs().mean()


def classification_loss(logits: Tensor, target: Tensor, kind: Literal["multilabel", "single"]) -> Tensor:
    """L_cls of eq. 2: multi-label soft margin on multi-hot (B, K) targets (WSSS) or softmax cross-entropy
    on class indices (B,) (single-label WSOL)."""
    if kind == "multilabel":
        return F.multilabel_soft_margin_loss(logits, target)
    if kind == "single":
        return F.cross_entropy(logits, target)
    raise ValueError(f"classification_loss: kind must be 'multilabel' or 'single', got {kind!r}")


def crt_loss(
    logits_cnn: Tensor,
    logits_vit: Tensor,
    cam_cnn: Tensor,
    cam_vit: Tensor,
    target: Tensor,
    size: tuple[int, int],
    cam_weight: float,
    kind: Literal["multilabel", "single"] = "multilabel",
) -> dict[str, Tensor]:
    """Eq. 2: L = L_cls1 + L_cls2 + lambda * L_l1-cam; returns every term and the total as ``"loss"``."""
    cls_cnn = classification_loss(logits_cnn, target, kind)
    cls_vit = classification_loss(logits_vit, target, kind)
    cam_l1 = cam_l1_loss(cam_cnn, cam_vit, size)
    total = cls_cnn + cls_vit + cam_weight * cam_l1
    return {"cls_cnn": cls_cnn, "cls_vit": cls_vit, "cam_l1": cam_l1, "loss": total}
