"""MCTformer V1/V2 (Xu et al., CVPR 2022): class-specific attention of a multi-class-token ViT as CAMs.

Follows the official code at ``xulianuwa/MCTformer@9606597`` (methods.md §3):

- V1 logits are the mean over the embedding of each final class token (no final LayerNorm); the loss is
  the multi-label soft-margin loss (MLSM). V2 adds the Patch-CAM head (3×3 conv on the patch tokens, GAP,
  MLSM) and the two losses are summed unweighted.
- CAMs: the class→patch attention, head mean summed over the last ``cam_layers`` (3) blocks; V2 multiplies
  it by ReLU(Patch-CAM) (no square root: that is MCTformer+). ``affinity_refine`` multiplies the maps by the
  patch→patch attention summed over the last ``affinity_layers`` (all) blocks, as ``--patch-attn-refine``.
  ``patch_affinity(images)`` exposes that affinity to the ``AffinityRandomWalk`` refiner of the writer.
- Any input size: the rows and columns past the last whole 16-pixel patch are dropped, as the official
  patch convolution drops them (a flipped view is the flip of the full image, then cropped); the maps of
  the 23×31 grid of a 375×500 image are then upsampled to the full image.
- ``pos_interp="official"``: the position table follows the input size by MCTformer's "+0.1" bicubic
  interpolation (:mod:`wsss.models.mct_vit`).
- ``weight_decay_exempt=True``: biases, LayerNorm weights, the class tokens and the position tables get no
  weight decay, as DeiT's ``create_optimizer`` (timm's rule) does in the official ``main.py``.
- ``official_checkpoint``: a trained official V1/V2 ``checkpoint.pth`` loads into this model
  (:mod:`wsss.models.mct_official`); logits, attention, Patch-CAM, affinity, losses, gradients and the
  per-view CAMs then match the official code (``tests/test_parity_mctformer.py``).

Multi-scale + flip CAMs (``multiscale_cams``) follow ``generate_attention_maps_ms``: the raw per-view maps
(``raw_cams``) are upsampled bilinearly to the image size, flipped back, summed and min–max normalised per
present class once, (S − min) / (max − min + 1e-8). The single-view ``cams`` (validation) are min–max
normalised on the token grid.

Differences from the official code:

- Validation uses a fixed background threshold ``bg_threshold`` (the prediction writer also reports
  MCTformer's threshold sweep, tuned on the ground truth).
- ``pos_interp="timm"`` (a switch, not the default) resamples the position table with timm's antialiased
  bicubic ``resample_abs_pos_embed`` to the exact grid instead: 0.13–0.14 of the table's scale away from the
  official table at 320×480 / 375×500, so every view but a square 224×224 one changes.
- ``weight_decay_exempt=False`` (a switch) decays every parameter.
- Multi-scale views (``cam_scales`` other than 1; run.sh uses scale 1 only) are bilinear resizes of the
  normalised image tensor; the official dataset resizes the uint8 photo with PIL bicubic (both to
  round(s·H) × round(s·W)).
- Training recipe (``recipes/mctformer_v2_voc.yaml``): the cosine schedule decays to 0 (timm's stops at
  1e-5), and there is no RandAugment / ColorJitter / RandomErasing and no AMP.
"""

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from wsss.methods.base import WSSSMethod
from wsss.models.mct_official import load_official_checkpoint
from wsss.models.mct_vit import MCTOutput, MultiClassTokenViT, PosInterp, class_maps, patch_patch_attention
from wsss.pseudo.background import normalize_cams


class MCTformer(WSSSMethod):
    """MCTformer V1 (class-token attention) or V2 (+ Patch-CAM head) on a DeiT with C class tokens."""

    fusion_flip_back, fusion_stride, fusion_norm = "image", 1, "minmax"

    def __init__(
        self,
        backbone: str = "deit_small_patch16_224",
        weights: str | None = None,
        version: Literal["v1", "v2"] = "v2",
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
        super().__init__(num_classes, in_channels, bg_threshold, cam_scales, cam_flip,
                         weight_decay_exempt=weight_decay_exempt, **optim)
        if version not in ("v1", "v2"):
            raise ValueError(f"MCTformer: version must be 'v1' or 'v2', got {version!r}")
        if weights is not None and official_checkpoint is not None:
            raise ValueError("MCTformer: pass weights (an ImageNet DeiT) or official_checkpoint (a trained "
                             "official MCTformer), not both")
        self.net = MultiClassTokenViT(
            backbone, num_classes, in_channels, weights, img_size, drop_path_rate, pos_interp,
            **(backbone_kwargs or {}),
        )
        for name, layers in (("cam_layers", cam_layers), ("affinity_layers", affinity_layers)):
            if layers is not None and not 1 <= layers <= self.net.depth:
                raise ValueError(f"MCTformer: {name} must be in 1..{self.net.depth} (the depth): {layers}")
        patch_head = nn.Conv2d(self.net.embed_dim, num_classes, 3, padding=1)
        self.patch_head = patch_head if version == "v2" else None
        if official_checkpoint is not None:
            load_official_checkpoint(self, official_checkpoint)

    def forward_heads(
        self, images: Tensor, with_attention: bool = True
    ) -> tuple[MCTOutput, Tensor, Tensor | None]:
        """Backbone output, class-token logits (B, K) and the Patch-CAM (B, K, h, w) for V2 (None for V1).

        ``with_attention=False`` skips the attention maps (fused attention), for passes that read none.
        """
        output = self.net(images, with_attention)
        patch_cam = self.patch_head(output.patch_tokens) if self.patch_head is not None else None
        return output, output.class_tokens.mean(dim=-1), patch_cam

    def raw_maps_from(self, output: MCTOutput, patch_cam: Tensor | None) -> Tensor:
        """Unnormalised non-negative CAMs (B, K, h, w) of one forward pass (the official per-view maps)."""
        hp = self.hparams
        return class_maps(output, self.num_classes, hp.cam_layers, patch_cam, hp.affinity_layers,
                          hp.affinity_refine)

    def maps_from(self, output: MCTOutput, patch_cam: Tensor | None) -> Tensor:
        """Per-class min–max normalised CAMs (B, K, h, w) of one forward pass."""
        return normalize_cams(self.raw_maps_from(output, patch_cam), "minmax")

    def classify(self, images: Tensor) -> Tensor:
        """Class-token logits (B, K)."""
        return self.forward_heads(images, with_attention=False)[1]

    def cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """Class→patch attention (V1) or its fusion with ReLU(Patch-CAM) (V2), optionally affinity-refined."""
        output, _, patch_cam = self.forward_heads(images)
        return self.maps_from(output, patch_cam)

    def raw_cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """The same maps unnormalised, as the official multi-scale fusion sums them."""
        output, _, patch_cam = self.forward_heads(images)
        return self.raw_maps_from(output, patch_cam)

    def logits_and_cams(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and CAMs from one forward pass."""
        output, logits, patch_cam = self.forward_heads(images)
        return logits, self.maps_from(output, patch_cam)

    def patch_affinity(self, images: Tensor) -> Tensor:
        """Patch→patch attention (B, N, N), head mean summed over the last ``affinity_layers`` blocks."""
        attentions = self.net(images).attentions
        return patch_patch_attention(attentions, self.num_classes, self.hparams.affinity_layers)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """MLSM on the class-token logits, plus MLSM on the GAP of the Patch-CAM for V2 (unweighted sum)."""
        labels = batch["cls_labels"]
        _, logits, patch_cam = self.forward_heads(batch["image"], with_attention=False)  # no map is read
        losses = {"cls": F.multilabel_soft_margin_loss(logits, labels)}
        if patch_cam is not None:
            losses["patch_cls"] = F.multilabel_soft_margin_loss(patch_cam.mean(dim=(2, 3)), labels)
        return losses | {"loss": sum(losses.values())}
