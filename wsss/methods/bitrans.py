"""Bi-Trans (Wang & Zhang): MCTformer-V2 trained on an image and a transformed view, with SCC and PAC losses.

There is no public code; this is a first implementation of the paper, built on :class:`MCTformer` (V2).
Per training image X the second view X' = f(X) is ``view`` (eq. 1; horizontal flip by default, the other
options are Table 2's). Both views go through the same network, one after the other (shared weights, no
stop-gradient), and the total loss is eq. 12:

    L = ½(L_cls1 + L_cls2) + ½(L_coarse1 + L_coarse2) + scc_weight·L_scc + α·L_pac

with L_cls the MLSM loss of the class-token logits (eqs. 4–5), L_coarse the MLSM loss of the GAP of the
Coarse-CAM (eqs. 6–7), L_scc the SC-CAM consistency (eq. 3) and L_pac the affinity consistency (eq. 11);
``scc_weight`` is 1 in eq. 12 and exists for Table 1's ablation (0 = PAC alone; α = 0 = SCC alone).
CAMs at inference are M_pseudo = SC-CAM ⊙ ReLU(Coarse-CAM) (eq. 8) and, with ``affinity_refine``,
PGT = A_aff · M_pseudo (eqs. 9–10); both are what :class:`MCTformer` V2 computes, and multi-scale + flip
CAMs are fused as MCTformer's official code does (raw maps summed, min–max normalised once).

Interpretations (the paper is silent or ambiguous; methods.md §3e):

- SC-CAM (eq. 2) is the class→patch attention, head mean summed over the last ``cam_layers`` (3) blocks, and
  A_aff (eq. 9) the patch→patch attention summed over the last ``affinity_layers`` (all) blocks: MCTformer's
  inference choices, used here for the losses as well. The losses act on these maps with gradients.
- The "Seg head" of eq. 6 is MCTformer-V2's 3×3 conv Patch-CAM head on the patch tokens (no resize needed
  at the token resolution); eq. 8 applies ReLU to it as MCTformer-V2 does.
- Eq. 5 lacks its minus sign; the MLSM loss (``multilabel_soft_margin_loss``) is meant.
- L1 reductions (``consistency_reduction``): ``"sum"`` (default) takes SCC as (1/C)·‖·‖₁ per image, eq. 3
  as printed, and PAC as ‖·‖₁/N per image (eq. 11 divided by the number of patches N); ``"mean"`` divides
  both by N once more, the element-wise mean of SEAM's equivariance loss that the paper cites
  (see :mod:`wsss.losses.bitrans`). Both are averaged over the batch.
- α is not given in the paper. The default α = 1: with the 1/N normalisation both consistency terms are mean
  L1 distances between attention rows (distributions summed over layers), so neither grows with the image
  size, and α = 1 weighs L_pac as eq. 12 weighs L_scc; it was fixed before any experiment, not tuned.
- "Twin network" is read as shared weights (one DeiT) and no stop-gradient on either branch.
- Watch for collapse: uniform class→patch attention makes L_scc exactly zero. On the small synthetic models
  the ``"sum"`` reduction does collapse (identical class tokens, M_pseudo = Coarse-CAM alone). Check the
  class-token mAP and ``train/class_attention_entropy`` (1 = uniform; ``docs/results/bitrans_pretrained.md``).
- "Rotation" (Table 2) is a quarter turn, the only rotation that permutes the patch grid exactly
  (:mod:`wsss.models.views`).
- In training the image is first cropped to whole patches and the second view is made from that crop, so
  f permutes the tokens exactly (the flip of a full 375×500 image would shift the patch grid by 4 pixels).
  At inference the flipped view is MCTformer's: the flip of the full image, then cropped.

Where the paper is silent the defaults are MCTformer's official code (see :mod:`wsss.methods.mctformer`,
whose list of differences applies here too): ``pos_interp="official"`` ("+0.1" position interpolation;
``"timm"`` is the switch), ``weight_decay_exempt=True`` (DeiT's optimiser exempts biases, norm weights, class
tokens and position tables; the paper only says AdamW; ``False`` decays everything), inputs of any size
cropped to whole patches, and ``official_checkpoint`` to start from a trained official MCTformer-V2.
"""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from wsss.losses.bitrans import Reduction, pac_loss, scc_loss
from wsss.methods.mctformer import MCTformer
from wsss.models.mct_vit import (
    PosInterp,
    attention_entropy,
    class_patch_attention,
    crop_to_patches,
    patch_patch_attention,
)
from wsss.models.views import ViewName, apply_view, check_view


class BiTrans(MCTformer):
    """Bi-branch MCTformer-V2 with the SCC (eq. 3) and PAC (eq. 11) consistency losses between two views."""

    def __init__(
        self,
        view: ViewName = "hflip",
        alpha: float = 1.0,
        scc_weight: float = 1.0,
        consistency_reduction: Reduction = "sum",
        backbone: str = "deit_small_patch16_224",
        weights: str | None = None,
        img_size: int = 224,
        drop_path_rate: float = 0.1,
        backbone_kwargs: dict | None = None,
        cam_layers: int = 3,
        affinity_layers: int | None = None,
        affinity_refine: bool = False,
        num_classes: int = 20,
        in_channels: int = 3,
        bg_threshold: float = 0.3,
        cam_scales: Sequence[float] = (1.0,),
        cam_flip: bool = True,
        pos_interp: PosInterp = "official",
        official_checkpoint: str | None = None,
        weight_decay_exempt: bool = True,
        **optim,
    ) -> None:
        check_view(view)
        if alpha < 0 or scc_weight < 0:
            raise ValueError(f"BiTrans: alpha and scc_weight must be >= 0, got {alpha} and {scc_weight}")
        if consistency_reduction not in ("sum", "mean"):
            raise ValueError(
                f"BiTrans: consistency_reduction must be 'sum' or 'mean', got {consistency_reduction!r}")
        super().__init__(
            backbone, weights, "v2", img_size, drop_path_rate, backbone_kwargs, cam_layers, affinity_layers,
            affinity_refine, num_classes, in_channels, bg_threshold, cam_scales, cam_flip, pos_interp,
            official_checkpoint, weight_decay_exempt, **optim,
        )

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Eq. 12 on the image and its view: classification, Coarse-CAM, SCC and α-weighted PAC losses.

        Also ``class_attention_entropy`` of the first view (logged, not optimised): near 1 the class tokens
        have collapsed (see the class docstring).
        """
        hp, k = self.hparams, self.num_classes
        labels = batch["cls_labels"]
        images = crop_to_patches(batch["image"], self.net.patch_size)  # the view then permutes whole patches
        branches = [self.forward_heads(images), self.forward_heads(apply_view(images, hp.view))]
        (first, _, _), (second, _, _) = branches
        cls = 0.5 * sum(F.multilabel_soft_margin_loss(logits, labels) for _, logits, _ in branches)
        coarse = 0.5 * sum(F.multilabel_soft_margin_loss(cam.mean((2, 3)), labels) for _, _, cam in branches)
        seeds = class_patch_attention(first.attentions, k, hp.cam_layers)
        scc = scc_loss(seeds, class_patch_attention(second.attentions, k, hp.cam_layers), hp.view, first.grid,
                       hp.consistency_reduction)
        pac = pac_loss(patch_patch_attention(first.attentions, k, hp.affinity_layers),
                       patch_patch_attention(second.attentions, k, hp.affinity_layers), hp.view, first.grid,
                       hp.consistency_reduction)
        total = cls + coarse + hp.scc_weight * scc + hp.alpha * pac
        entropy = attention_entropy(seeds.detach()).mean()
        return {"cls": cls, "coarse_cls": coarse, "scc": scc, "pac": pac, "loss": total,
                "class_attention_entropy": entropy}
