"""SWTformer V1/V2 (Ahmadi & Kasaei): Swin patch-token CAMs, feature fusion, background-aware prototypes.

SWTformer has no public code; its V2 branch is SIPE's (chenqi1126/SIPE@e0c6a3b). Where the paper is silent
wsss follows SIPE, and ``tests/test_parity_sipe.py`` checks it against SIPE's own outputs
(``tests/data/parity/sipe.pt``): eq. 3's background (the max over all classes, then the label gate), CAM and
IS-CAM normalisation (+1e-5), soft-IoU seeds, prototypes, R-CAM, GSC's value and its gradients into the CAM
and F_hie (all / absent / faint classes) and SIPE's ``valid_mask`` on crop padding all match.

Differences from SIPE's code:

- Token similarity for the seeds is |cos| (eq. 4); SIPE uses ReLU(cos). ``seed_similarity="relu"`` gives
  SIPE's seeds.
- SWTformer's grids: T_out (seeds, M) is at stride 32 and F_hie at stride 16, whereas SIPE's CAM, x4 and
  F_hie all share stride 16. The seeds are nearest-up-sampled to F_hie (SIPE's ``get_prototype`` resize);
  M is bilinearly up-sampled with align_corners=True (SIPE's resize of M to side3's grid) for GSC and CCL.
- F_hie comes from the paper's HFF module (``wsss.models.hff``), not SIPE's L2-normalised side convolutions.
- Prototypes are seed-weighted means (divided by the seed count); SIPE divides by all h*w positions. Same
  direction, so R-CAM is unchanged.
- Absent classes are excluded before the seed argmax; SIPE zeroes their seeds after it. Identical whenever
  M is label-gated, which it always is here. SIPE's inference path (``CAM.forward``) instead seeds on an
  ungated M (pixels won by an absent class get no seed) with F_hie as the similarity feature; wsss uses the
  training path at inference too.
- Crop padding: SIPE's loader marks the padded crop area (``valid_mask``); wsss's batches do not, so it is
  taken as the pixels that are exactly 0 (the normalised-mean fill) in every channel. A real pixel that
  equals the mean in every channel would be masked too. ``mask_crop_padding=False`` turns the mask off.
- Small eps: the token L2 norm is clamped at 1e-12 (SIPE adds 1e-5) and the soft-IoU union at 1e-5 (SIPE:
  none); the seeds on the fixture are identical.
- Switches that are not SIPE's, off by default: ``background_over="present"`` (M_B from the present classes
  only, wsss's earlier rule: on the fixture's absent-class case it changes GSC from 0.0373 to 0.0497 and
  sends no gradient to absent classes) and ``gsc_detach_cam`` (GSC with the CAM side detached; SIPE's GSC
  sends gradients into both the CAM and, through the prototypes, F_hie).
- CCL (eq. 6) has no official code: ``ccl_reading="printed"`` is the formula with a per-class cosine (equal
  to the fixture's dump); ``"contrastive"`` is an interpretation; the other literal reading, one cosine per
  image over all channels, is not offered.
- Multi-scale views are a bilinear resize of the normalised tensor (SIPE: PIL bicubic on the uint8 photo;
  both to round(s·H) × round(s·W)). The fusion itself is SIPE's ``make_cam.py`` (see ``SWTformer``).
- Not SIPE's training set-up: the backbone is not partially frozen, no gradient clipping, AdamW (the paper's).
"""

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.losses.swtformer import CCLReading, ccl_loss, classification_loss, gsc_loss, total_loss
from wsss.methods.base import WSSSMethod
from wsss.models.hff import HierarchicalFeatureFusion
from wsss.models.prototypes import (
    BackgroundOver,
    Similarity,
    class_prototypes,
    locate_seeds,
    prototype_cams,
    similarity_cams,
    valid_channels,
    with_background,
)
from wsss.models.swin_cam import PatchTokenCAMHead, SwinFeatures
from wsss.pseudo.background import cams_with_bg_to_mask


def image_region(images: Tensor) -> Tensor:
    """(B, 1, H, W) float: 0 on crop padding, the pixels that are 0 (the normalised mean) in every channel."""
    return images.ne(0).any(1, keepdim=True).to(images.dtype)


class SWTformer(WSSSMethod):
    """SWTformer-V1 (``version="v1"``) and -V2 (``"v2"``). The authors' repository holds no code.

    **V1** (Sec. 3-2, 3-3): a timm Swin; a conv on the last stage's tokens T_out gives F_out; GAP(F_out) are
    the class scores (multi-label soft-margin loss, eq. 2); CAM = max-normalised ReLU(F_out) (eq. 1). Seeds
    use the base class's constant background threshold (the paper does not say how V1 seeds are scored).

    **V2** (Sec. 3-4, 3-5), SIPE's structure on Swin:

    - M = [1 - max_c M_c, label-gated M] at T_out's grid (eq. 3; the max over all classes, as SIPE);
    - seeds R from structure-aware seed locating with |cos| token similarity of T_out (eq. 4), SIPE's
      background x0.5, argmax over the background and the present classes;
    - F_hie from the HFF module (``wsss.models.hff``: at stage 3's grid, i.e. twice T_out's resolution); the
      seeds are up-sampled to it by nearest neighbour; prototypes are the seed-weighted means of F_hie;
      R-CAM = max-normalised ReLU(cos(F_hie, P_k)) including a background prototype;
    - L = L_CLS + L_GSC + L_CCL (eq. 7), GSC and CCL between R-CAM and M bilinearly up-sampled
      (align_corners=True) and zeroed on crop padding, as SIPE;
      ``ccl_reading`` switches eq. 6 between the literal formula and a class-wise contrastive reading.
    - Seeds (validation, predict) are R-CAMs; the mask is the argmax including the R-CAM background channel
      with no threshold (SIPE's convention). Absent labels at predict time come from ``logits > 0``.
    - Multi-scale (SIPE ``make_cam.py``): per scale, the image and its flip go through the backbone together
      and are fused *inside* the network (``scale_views``): their F_out, T_out and F_hie are summed with the
      flipped one flipped back, then the seeds, prototypes and the unnormalised IS-CAM (background included)
      are computed once. The IS-CAMs of the scales are resized to the image size, summed and divided per
      channel by (max + 1e-5). V1 sums the ReLU(F_out) of the views the same way (flips undone after
      resizing, as the base class).

    Interpretations (the paper is silent): HFF inputs are detached and the seeds are computed without
    gradient, as SIPE's side branches; the CAM head is a 3x3 conv (MCTformer-V2); SIPE's x0.5 background
    factor is kept; ``Norm`` in eq. 1 is max normalisation (SIPE). Unlike SIPE, the backbone is not
    partially frozen and no gradient clipping is applied (probed on the synthetic data, as is SIPE's 10x rate
    for new layers, ``head_lr_scale``: none prevents the GSC drop described below). Any input size works (see
    ``SwinFeatures``).

    ``gsc_detach_cam`` (default False: the paper's and SIPE's two-sided eq. 5) detaches the CAM side of
    GSC, so only the R-CAM branch follows the CAM. A deviation, off in every recipe: on the synthetic data,
    before the eq. 3 fix, the two-sided loss dragged the CAM towards the early, poor R-CAM
    (``docs/results/swtformer_pretrained.md``). ``background_over`` and ``seed_similarity`` are the other
    switches (see the module's Differences).

    ``stem_channels`` (default None: the paper's linear patch embedding) swaps the patch projection for a
    small conv stem (``ConvStemPatchEmbed``), a stand-in for ImageNet weights in from-scratch CPU runs.
    """

    def __init__(
        self,
        version: Literal["v1", "v2"] = "v2",
        backbone: str = "swin_tiny_patch4_window7_224",
        weights: str | None = None,
        backbone_overrides: dict[str, Any] | None = None,
        stem_channels: Sequence[int] | None = None,
        cam_kernel_size: int = 3,
        hff_dims: Sequence[int] = (128, 128, 256, 256),
        bg_seed_scale: float = 0.5,
        background_over: BackgroundOver = "all",
        seed_similarity: Similarity = "abs",
        mask_crop_padding: bool = True,
        gsc_weight: float = 1.0,
        gsc_detach_cam: bool = False,
        ccl_weight: float = 1.0,
        ccl_reading: CCLReading = "printed",
        head_lr_scale: float = 1.0,
        num_classes: int = 20,
        in_channels: int = 3,
        bg_threshold: float = 0.15,
        cam_scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
        cam_flip: bool = True,
        **optim,
    ) -> None:
        super().__init__(num_classes, in_channels, bg_threshold, cam_scales, cam_flip, **optim)
        if version not in ("v1", "v2"):
            raise ValueError(f"SWTformer: version must be 'v1' or 'v2', got {version!r}")
        if ccl_reading not in ("printed", "contrastive"):
            raise ValueError(f"SWTformer: ccl_reading must be 'printed' or 'contrastive': {ccl_reading!r}")
        if background_over not in ("all", "present"):
            raise ValueError(f"SWTformer: background_over must be 'all' or 'present': {background_over!r}")
        if seed_similarity not in ("abs", "relu"):
            raise ValueError(f"SWTformer: seed_similarity must be 'abs' or 'relu': {seed_similarity!r}")
        self.version = version
        self.backbone = SwinFeatures(backbone, weights, in_channels, backbone_overrides, stem_channels)
        self.head = PatchTokenCAMHead(self.backbone.channels[-1], num_classes, cam_kernel_size)
        self.hff = HierarchicalFeatureFusion(self.backbone.channels, hff_dims) if version == "v2" else None

    def forward_cam(self, images: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Logits (B, K), CAMs (B, K, P, P) at T_out's grid, and the four stage maps."""
        features = self.backbone(images)
        logits, cams = self.head(features[-1])
        return logits, cams, features

    def refine(
        self, cams: Tensor, features: list[Tensor], cls_labels: Tensor, inside: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """V2: M with background (B, K+1, P, P) and R-CAM (B, K+1, h3, w3) at F_hie's grid.

        ``inside`` (B, 1, H, W), 1 inside the image and 0 on crop padding, is SIPE's ``valid_mask``: the seeds
        are located on M zeroed outside and padded tokens get no seed. M itself is returned unmasked.
        """
        if self.hff is None:
            raise ValueError("SWTformer.refine: only version 'v2' has the HFF / prototype branch")
        fused = self.hff([f.detach() for f in features])
        cams_bg, seeds = self.seeds(cams, features[-1], fused, cls_labels, inside)
        return cams_bg, prototype_cams(fused, class_prototypes(fused, seeds))

    def seeds(
        self, cams: Tensor, tokens: Tensor, fused: Tensor, cls_labels: Tensor, inside: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """V2: M with background (B, K+1, P, P) and the seeds (no gradient) at F_hie's grid; see refine."""
        cams_bg = with_background(cams, cls_labels, self.hparams.background_over)
        with torch.no_grad():
            keep = 1.0 if inside is None else F.interpolate(inside, size=cams.shape[-2:], mode="nearest")
            seeds = keep * locate_seeds(cams_bg * keep, tokens, valid_channels(cls_labels),
                                        self.hparams.bg_seed_scale, self.hparams.seed_similarity)
        return cams_bg, F.interpolate(seeds, size=fused.shape[-2:], mode="nearest")

    def is_cams(self, maps: Tensor, tokens: Tensor, fused: Tensor, cls_labels: Tensor | None) -> Tensor:
        """V2: the unnormalised IS-CAM (B, K+1, h3, w3) from raw F_out, T_out and F_hie; labels from F_out."""
        labels = (maps.mean((2, 3)) > 0).to(maps.dtype) if cls_labels is None else cls_labels
        seeds = self.seeds(self.head.normalize(maps), tokens, fused, labels)[1]
        return similarity_cams(fused, class_prototypes(fused, seeds))

    def classify(self, images: Tensor) -> Tensor:
        """Image-level logits (B, K): GAP of F_out."""
        return self.forward_cam(images)[0]

    def background_scores(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """V2: R-CAM (B, K+1, h3, w3), background channel first; labels from ``logits > 0`` when None."""
        logits, cams, features = self.forward_cam(images)
        labels = (logits > 0).to(cams.dtype) if cls_labels is None else cls_labels
        return self.refine(cams, features, labels)[1]

    def cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """V1: CAMs at T_out's grid. V2: the foreground R-CAMs at F_hie's grid."""
        if self.version == "v1":
            return self.forward_cam(images)[1]
        return self.background_scores(images, cls_labels)[:, 1:]

    def raw_cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """V1: ReLU(F_out) (B, K, P, P). V2: the unnormalised IS-CAM (B, K+1, h3, w3), background first."""
        features = self.backbone(images)
        maps = self.head.conv(features[-1])
        if self.version == "v1":
            return maps.relu()
        return self.is_cams(maps, features[-1], self.hff([f.detach() for f in features]), cls_labels)

    def scale_views(self, scaled: Tensor, cls_labels: Tensor | None) -> list[tuple[Tensor, bool]]:
        """V2 with ``cam_flip``: SIPE's flip fusion: the pair's F_out, T_out and F_hie summed, flip undone."""
        if self.version == "v1" or not self.hparams.cam_flip:
            return super().scale_views(scaled, cls_labels)

        def pair_sum(x: Tensor) -> Tensor:
            image, flipped = x.chunk(2)
            return image + flipped.flip(-1)

        features = self.backbone(torch.cat([scaled, scaled.flip(-1)]))
        fused = pair_sum(self.hff([f.detach() for f in features]))
        maps, tokens = pair_sum(self.head.conv(features[-1])), pair_sum(features[-1])
        return [(self.is_cams(maps, tokens, fused, cls_labels), False)]

    def multiscale_cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """V1: as the base class. V2: the foreground channels of ``multiscale_maps`` (absent classes 0)."""
        if self.version == "v1":
            return super().multiscale_cams(images, cls_labels)
        return self.multiscale_maps(images, cls_labels)[:, 1:]

    def logits_and_cams(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and CAMs (V2: R-CAMs for the predicted labels) from one forward pass."""
        logits, cams, features = self.forward_cam(images)
        if self.version == "v1":
            return logits, cams
        return logits, self.refine(cams, features, (logits > 0).to(cams.dtype))[1][:, 1:]

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """V1: L_CLS. V2: eq. 7, L_CLS + L_GSC + L_CCL (weighted by ``gsc_weight`` / ``ccl_weight``)."""
        labels = batch["cls_labels"]
        logits, cams, features = self.forward_cam(batch["image"])
        cls = classification_loss(logits, labels)
        if self.version == "v1":
            return {"loss": cls, "cls": cls}
        inside = image_region(batch["image"]) if self.hparams.mask_crop_padding else None
        cams_bg, rcams = self.refine(cams, features, labels, inside)
        cams_bg = F.interpolate(cams_bg, size=rcams.shape[-2:], mode="bilinear", align_corners=True)
        if inside is not None:
            cams_bg = cams_bg * F.interpolate(inside, size=rcams.shape[-2:], mode="nearest")
        gsc = gsc_loss(cams_bg.detach() if self.hparams.gsc_detach_cam else cams_bg, rcams)
        ccl = ccl_loss(cams_bg, rcams, valid_channels(labels), self.hparams.ccl_reading)
        total = total_loss(cls, gsc, ccl, self.hparams.gsc_weight, self.hparams.ccl_weight)
        return {"loss": total, "cls": cls, "gsc": gsc, "ccl": ccl}

    def score_maps(self, cams: Tensor, cls_labels: Tensor | None) -> Tensor:
        """V1: a constant background threshold. V2: the derived background 1 - max_c M_c (eq. 3)."""
        if self.version == "v1":
            return super().score_maps(cams, cls_labels)
        labels = torch.ones_like(cams[:, :, 0, 0]) if cls_labels is None else cls_labels
        return with_background(cams, labels, self.hparams.background_over)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """V2: mAP, and the seed mIoU of R-CAMs (GT labels) by argmax with their background channel."""
        if self.version == "v1":
            return super().validation_step(batch, batch_idx)
        images, labels = batch["image"], batch["cls_labels"]
        logits, cams, features = self.forward_cam(images)
        self.val_map.update(logits.sigmoid(), labels.long())
        self.log("val/map", self.val_map, prog_bar=True, batch_size=images.shape[0])
        if "mask" in batch:
            scores = self.refine(cams, features, labels)[1]
            size = batch["mask"].shape[-2:]
            scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
            self.val_seed_iou.update(cams_with_bg_to_mask(scores, labels), batch["mask"])
            self.log("val/seed_miou", self.val_seed_iou, prog_bar=True, batch_size=images.shape[0])

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """V2: multi-scale + flip R-CAMs; ``scores`` carry the learned background channel."""
        if self.version == "v1":
            return super().predict_step(batch, batch_idx)
        images, labels = batch["image"], batch.get("cls_labels")
        if labels is None:
            labels = (self.classify(images) > 0).float()
        scores = self.multiscale_maps(images, labels)
        out = {"name": batch["name"], "cams": scores[:, 1:], "scores": scores, "cls_labels": labels}
        return out | {k: batch[k] for k in ("image", "mask") if k in batch}

    def param_groups(self) -> list[dict]:
        """The backbone at the base rate; the CAM head (and HFF) at ``head_lr_scale`` times it."""
        new = [*self.head.parameters(), *(self.hff.parameters() if self.hff is not None else [])]
        return [{"params": list(self.backbone.parameters())},
                {"params": new, "lr_scale": self.hparams.head_lr_scale}]
