"""CRT: CNN-refined transformer (Huo, Su, Wu; "Dual Progressive Transformations for WSSS", 2023)."""

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from wsss.eval import WSOLAccuracy
from wsss.eval.wsol import cam_to_box
from wsss.losses.crt import crt_loss
from wsss.methods.base import WSSSMethod
from wsss.models.crt_vit import CRTTransformer, Enlargement, TilePadding
from wsss.models.irn_resnet import create_irn_resnet, freeze_to_stride_8
from wsss.pseudo.background import normalize_cams

Task = Literal["wsss", "wsol"]


class CRT(WSSSMethod):
    """A CNN branch (IRN-style ResNet at output stride 16 + 1x1 CAM classifier without bias) and a DeiT branch
    (:class:`~wsss.models.crt_vit.CRTTransformer`) trained together with eq. 2; only the DeiT branch gives
    logits and CAMs (eq. 1, max-normalised) at inference.

    The CNN follows the paper (IRNet's ResNet with strides (2, 2, 2, 1); "refer to IRNet for other details")
    and the official code: ``cnn_dilated=False`` gives the last stage stride 1 without dilation (a timm
    ResNet; ``True``: timm's ``output_stride=16``, the last stage dilated by 2, any timm CNN), and
    ``cnn_frozen=True`` freezes the stem and layers 1-2 and keeps every BatchNorm at its running statistics
    (affine parameters trained; ``False``: everything trains with ordinary BatchNorm, e.g. from scratch).
    ``cam_l1_size``: side of the square to which both raw CAMs are up-sampled for the L1 term; ``None`` is the
    training input's size (the official code hard-codes 336, its crop size; the paper only says "the L1 loss
    of the two CAMs"). Official checkpoint files load with
    :func:`~wsss.models.crt_checkpoint.load_official_crt`.

    Multi-scale + flip CAMs follow ``step/make_cam.py`` (IRN): the ReLU'd eq. 1 map of each flipped view is
    flipped back at the CAM grid, each view is resized to (16·⌈H/16⌉, 16·⌈W/16⌉), the sum over views is
    cropped to H × W and divided per class by (max + 1e-5) once.

    ``vit_depth`` / ``vit_img_size`` / ``vit_kwargs`` (e.g. ``{patch_size: 2, embed_dim: 96}``) go to
    ``timm.create_model`` of ``vit``, which may be a hybrid ViT with a ResNet stem (the CPU-sized synthetic
    recipe).

    ``task="wsss"``: multi-label soft-margin losses on ``cls_labels``; validation reports mAP and seed mIoU.
    ``task="wsol"``: single-label softmax cross-entropy on ``label``; validation reports top-1 / top-5 /
    GT-known localisation through :class:`~wsss.eval.WSOLAccuracy` on the samples' ``boxes``; prediction gives
    the top-1 class and its box for :class:`~wsss.callbacks.LocalisationBoxWriter`.

    Differences from the official code (``huodongjian0603/crt@5aa670a``; pinned by tests/test_parity_crt.py):

    - Optimiser: SGD momentum is ``momentum`` and the poly power ``poly_power`` (IRN's ``PolyOptimizer``
      passes the weight decay 1e-4 as the momentum and reuses 0.9 as the poly power; recipes/crt_voc.yaml sets
      ``momentum: 1.0e-4`` to match); one optimiser with parameter groups replaces the two identical
      per-branch optimisers; the method's ``lr`` / ``momentum`` defaults are the shared ones (the recipe
      carries the official 0.1 / 1e-4).
    - ``cnn_frozen`` freezes layers 1-2 with ``requires_grad=False`` where the official code detaches the
      output of layer2 (same updates: SGD skips parameters without a gradient), and fixes BatchNorm by
      keeping it in eval mode instead of a ``FixedBatchNorm`` class.
    - Padding for cutting-merging follows the paper's tile counts (no extra half tile when a side is already
      a multiple of half a tile); ``tile_padding="official"`` reproduces the official one at inference.
    - Eq. 1 averages the attention maps over 12 blocks x 3 passes (the code sums them: a factor 36 that
      cancels after normalisation, up to the official + 1e-5 in the denominator).
    - The L1 term is off before ``cam_weight_start_epoch`` (official: epoch 0 off; the paper does not say).
    - Data (recipes): a random rescale of the image by ``scale_range`` replaces the official random long side
      in [210, 420] px (``resize_long``); [0.42, 0.84] matches it for VOC's ~500 px images.
    - Multi-scale views are a bilinear resize of the normalised tensor (official: PIL bicubic on the uint8
      image; both to round(s·H) × round(s·W)).
    """

    fusion_flip_back, fusion_stride, fusion_norm = "cam", 16, "max"

    def __init__(
        self,
        cnn_backbone: str = "resnet152",
        cnn_weights: str | None = None,
        vit: str = "deit_small_patch16_224",
        vit_weights: str | None = None,
        vit_depth: int | None = None,
        vit_img_size: int | None = None,
        vit_kwargs: dict | None = None,
        loops: int = 3,
        enlargement: Enlargement = "cut_merge",
        tile_padding: TilePadding = "paper",
        cnn_dilated: bool = False,
        cnn_frozen: bool = True,
        cam_weight: float = 0.1,
        cam_weight_start_epoch: int = 1,
        cam_l1_size: int | None = None,
        head_lr_scale: float = 10.0,
        task: Task = "wsss",
        wsol_cam_thresholds: Sequence[float] = (0.1,),
        num_classes: int = 20,
        in_channels: int = 3,
        bg_threshold: float = 0.15,
        cam_scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0, 0.75, 1.25, 1.75),
        cam_flip: bool = True,
        **optim,
    ) -> None:
        super().__init__(num_classes, in_channels, bg_threshold, cam_scales, cam_flip, **optim)
        if task not in ("wsss", "wsol"):
            raise ValueError(f"CRT: task must be 'wsss' or 'wsol', got {task!r}")
        self.cnn = create_irn_resnet(cnn_backbone, in_channels, cnn_weights, dilated=cnn_dilated)
        if cnn_frozen:
            freeze_to_stride_8(self.cnn)
        self.cnn_classifier = nn.Conv2d(self.cnn.feature_info.channels()[-1], num_classes, 1, bias=False)
        self.cnn.to(memory_format=torch.channels_last)  # oneDNN / cuDNN run NHWC convolutions faster
        sizes = {k: v for k, v in (("depth", vit_depth), ("img_size", vit_img_size)) if v is not None}
        self.transformer = CRTTransformer(
            vit, vit_weights, num_classes, in_channels, loops=loops, enlargement=enlargement,
            tile_padding=tile_padding, **sizes, **(vit_kwargs or {}),
        )
        self.val_wsol = WSOLAccuracy(cam_thresholds=wsol_cam_thresholds) if task == "wsol" else None
        self.train()  # fix the CNN's BatchNorms now: Lightning restores module modes, never calls train()

    def cnn_forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """CNN branch: logits (GAP of the raw CAM) and the raw CAM (B, K, H/16, W/16)."""
        cam = self.cnn_classifier(self.cnn(images.contiguous(memory_format=torch.channels_last))[-1])
        return cam.mean((2, 3)), cam

    def classify(self, images: Tensor) -> Tensor:
        """Transformer-branch logits (B, K)."""
        return self.transformer(images)[0]

    def logits_and_cams(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Transformer-branch logits and eq. 1 CAMs, ReLU'd and max-normalised, from one forward pass."""
        logits, cams = self.transformer.refined_cams(images)
        return logits, normalize_cams(cams, "max")

    def cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """Eq. 1 CAMs (B, K, ceil(H/s), ceil(W/s)) in [0, 1], s the token stride (16 for DeiT)."""
        return self.logits_and_cams(images)[1]

    def raw_cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """The ReLU'd, unnormalised eq. 1 CAMs that the multi-scale fusion sums."""
        return self.transformer.refined_cams(images)[1].relu()

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """Eq. 2 on raw CAMs up-sampled to the crop; lambda is 0 before ``cam_weight_start_epoch``."""
        hp = self.hparams
        images = batch["image"]
        logits_cnn, cam_cnn = self.cnn_forward(images)
        logits_vit, cam_vit = self.transformer(images)
        weight = hp.cam_weight if self.current_epoch >= hp.cam_weight_start_epoch else 0.0
        wsol = hp.task == "wsol"
        target, kind = (batch["label"], "single") if wsol else (batch["cls_labels"], "multilabel")
        size = images.shape[-2:] if hp.cam_l1_size is None else (hp.cam_l1_size, hp.cam_l1_size)
        return crt_loss(logits_cnn, logits_vit, cam_cnn, cam_vit, target, size, weight, kind)

    def train(self, mode: bool = True) -> "CRT":
        """Train mode, with the CNN's BatchNorms kept in eval mode when ``cnn_frozen`` (IRN's FixedBatchNorm:
        running statistics, trainable affine)."""
        super().train(mode)
        if self.hparams.cnn_frozen:
            for module in self.cnn.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """WSSS: mAP and seed mIoU (base class). WSOL: accumulate localisation hits of image-size CAMs."""
        if self.hparams.task == "wsss":
            return super().validation_step(batch, batch_idx)
        images = batch["image"]
        logits, cams = self.logits_and_cams(images)
        cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)
        self.val_wsol.update(logits, cams, batch["label"], list(batch["boxes"]))
        return None

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """WSSS: CAMs and scores (base class). WSOL: the top-1 class and the box of its min-max normalised CAM
        at the first of ``wsol_cam_thresholds`` (xyxy, pixels of the network input), for a box writer."""
        if self.hparams.task == "wsss":
            return super().predict_step(batch, batch_idx)
        images = batch["image"]
        logits, cams = self.logits_and_cams(images)
        cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)
        pick = torch.arange(len(images), device=images.device)
        pred = logits.argmax(1)
        top_cams = normalize_cams(cams[pick, pred], "minmax")
        threshold = self.hparams.wsol_cam_thresholds[0]
        out = {
            "name": batch["name"],
            "logits": logits,
            "pred": pred,
            "pred_boxes": torch.stack([cam_to_box(cam, threshold) for cam in top_cams]).to(images.device),
            "input_size": images.shape[-2:],
        }
        if "label" in batch:
            out["label_cams"] = cams[pick, batch["label"]]
        return out | {k: batch[k] for k in ("label", "boxes", "size") if k in batch}

    def on_validation_epoch_end(self) -> None:
        """WSOL: log ``val/loc_top1``, ``val/loc_top5``, ``val/loc_gt_known``, ... and reset the metric."""
        if self.val_wsol is not None:
            self.log_dict({f"val/{k}": v.float() for k, v in self.val_wsol.compute().items()})
            self.val_wsol.reset()

    def param_groups(self) -> list[dict]:
        """Both backbones at the base rate; both new CAM heads at ``head_lr_scale`` times it."""
        heads = [*self.cnn_classifier.parameters(), *self.transformer.head_parameters()]
        head_ids = {id(p) for p in heads}
        backbone = [p for p in self.parameters() if id(p) not in head_ids and p.requires_grad]
        return [{"params": backbone}, {"params": heads, "lr_scale": self.hparams.head_lr_scale}]
