"""The shared base of every LightningModule: plain-argument optimisation and the stage-1 CAM contract."""

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.eval import MultilabelMAP, SegmentationIoU
from wsss.methods.optim import (
    OptimizerName,
    SchedulerName,
    build_optimizer,
    exempt_from_weight_decay,
    lr_factor,
)
from wsss.models.cast_cache import cache_cast_weights, drop_cast_weights
from wsss.models.weights import restoring_checkpoint
from wsss.pseudo.background import cams_to_mask, keep_present_classes, scores_with_background
from wsss.pseudo.fusion import FlipBack, FusionNorm, check_fusion, normalize_fused, sum_views

log = logging.getLogger(__name__)


class BaseTask(L.LightningModule):
    """Optimiser (SGD / AdamW) and per-step schedule (warm-up + cosine / poly / constant), plain arguments.

    ``weight_decay_exempt`` gives biases, norm weights and the modules' ``no_weight_decay()`` parameters (e.g.
    class tokens, position tables) no weight decay, as timm's / DeiT's optimiser factory does; off, every
    parameter is decayed (the IRN / SIPE / CRT / SASFormer / sparse-ViT optimisers). ``lr_reference_batch``
    scales the learning rate linearly with the global batch (per-process batch × processes × gradient
    accumulation): ``lr × global_batch / lr_reference_batch``, DeiT's and MCTformer's rule (5e-4 ×
    batch / 512). ``min_lr`` is the floor of the cosine schedule and ``warmup_lr`` the rate the warm-up starts
    from (timm's ``lr_min`` and ``warmup_lr_init``: absolute rates, kept as they are when ``lr`` is scaled).
    Subclasses implement ``training_losses(batch)``; every term is logged as ``train/<name>``.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: OptimizerName = "sgd",
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: SchedulerName = "poly",
        warmup_epochs: float = 0.0,
        poly_power: float = 0.9,
        weight_decay_exempt: bool = False,
        lr_reference_batch: int | None = None,
        min_lr: float = 0.0,
        warmup_lr: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= min_lr <= lr or not 0 <= warmup_lr <= lr:
            raise ValueError(f"min_lr ({min_lr}) and warmup_lr ({warmup_lr}) must lie in [0, lr = {lr}]")
        if lr_reference_batch is not None and lr_reference_batch < 1:
            raise ValueError(f"lr_reference_batch must be a positive batch or None, got {lr_reference_batch}")
        self.save_hyperparameters()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's ``load_from_checkpoint``, building the networks without reading their initial
        weights files (``weights``, ``official_checkpoint``, ...): the checkpoint restores every tensor, and
        those files may have moved since."""
        with restoring_checkpoint():
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """The losses on a training batch; ``"loss"`` is the total that is optimised."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_losses")

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Optimise the method's total loss and log every term."""
        losses = self.training_losses(batch)
        size = batch["image"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=size)
        return losses["loss"]

    def on_validation_start(self) -> None:
        """Cast linear weights for autocast once per validation loop (:mod:`wsss.models.cast_cache`)."""
        cache_cast_weights(self)

    def on_validation_end(self) -> None:
        """Free the cast copies."""
        drop_cast_weights(self)

    def on_predict_start(self) -> None:
        """Cast linear weights for autocast once per prediction loop (:mod:`wsss.models.cast_cache`)."""
        cache_cast_weights(self)

    def on_predict_end(self) -> None:
        """Free the cast copies."""
        drop_cast_weights(self)

    def param_groups(self) -> list[dict]:
        """Parameter groups; a group may set ``lr_scale`` (e.g. 10 for a freshly initialised head)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def global_batch_size(self) -> int:
        """Samples per optimiser step: the DataModule's ``batch_size`` × processes × gradient accumulation."""
        batch = getattr(self.trainer.datamodule, "batch_size", None)
        if not isinstance(batch, int):
            raise ValueError("lr_reference_batch needs a DataModule with an integer batch_size")
        return batch * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def configure_optimizers(self) -> dict:
        """Build the optimiser and a per-step LambdaLR schedule over the whole run."""
        hp = self.hparams
        groups = self.param_groups()
        if hp.weight_decay_exempt:
            groups = exempt_from_weight_decay(self, groups)
        total = int(self.trainer.estimated_stepping_batches)  # also loads the training data
        lr = hp.lr
        if hp.lr_reference_batch is not None:
            batch = self.global_batch_size()
            lr = hp.lr * batch / hp.lr_reference_batch
            log.info("learning rate %g x global batch %d / %d = %g", hp.lr, batch, hp.lr_reference_batch, lr)
        fused = not self.trainer.gradient_clip_val  # Lightning cannot clip a fused step
        optimizer = build_optimizer(groups, hp.optimizer, lr, hp.weight_decay, hp.momentum, hp.betas, fused)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        warmup = round(hp.warmup_epochs * total / epochs)
        factor = partial(
            lr_factor, total_steps=total, warmup_steps=warmup, name=hp.scheduler, poly_power=hp.poly_power,
            floor=min(hp.min_lr / lr, 1.0), warmup_start=min(hp.warmup_lr / lr, 1.0),
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class WSSSMethod(BaseTask, ABC):
    """A stage-1 method: ``classify`` gives logits, ``cams`` gives per-class maps in [0, 1].

    Validation reports classification mAP and the seed mIoU of single-scale CAMs under a fixed background
    threshold (the IRN/CRT convention). ``predict`` returns multi-scale + flip CAMs and the score maps with a
    background channel that the prediction writer turns into pseudo-masks.

    Multi-scale fusion (``multiscale_maps``) sums the raw per-view maps of ``raw_cams`` and normalises once,
    as the official codes do. Three class-level settings select each method's official convention
    (:mod:`wsss.pseudo.fusion`): ``fusion_flip_back`` ("image": undo a flip after resizing to the image
    size; "cam": at the CAM grid, before resizing), ``fusion_stride`` (resize to a multiple of it, then crop
    the top-left image size) and ``fusion_norm`` ("max": S / (max + 1e-5); "minmax": (S − min) / (max − min
    + 1e-8)).
    """

    fusion_flip_back: FlipBack = "image"
    fusion_stride: int = 1
    fusion_norm: FusionNorm = "max"

    def __init__(
        self,
        num_classes: int = 20,
        in_channels: int = 3,
        bg_threshold: float = 0.15,
        cam_scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
        cam_flip: bool = True,
        **optim,
    ) -> None:
        super().__init__(**optim)
        self.num_classes = num_classes
        self.val_map = MultilabelMAP(num_labels=num_classes)
        self.val_seed_iou = SegmentationIoU(num_classes=num_classes + 1)

    @abstractmethod
    def classify(self, images: Tensor) -> Tensor:
        """Image-level logits (B, K)."""

    @abstractmethod
    def cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """Class activation maps (B, K, h, w), non-negative and normalised to max 1 per class."""

    def logits_and_cams(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and CAMs in one call; methods that share a forward pass override this."""
        return self.classify(images), self.cams(images)

    def score_maps(self, cams: Tensor, cls_labels: Tensor | None) -> Tensor:
        """Scores (B, K+1, H, W) with a background channel first: a constant threshold unless overridden."""
        return scores_with_background(cams, cls_labels, bg_threshold=self.hparams.bg_threshold)

    def raw_cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """Non-negative, unnormalised maps (B, C, h, w) of one view, at the method's own grid, for fusion.

        C = K, or K + 1 with the background first for methods whose ``multiscale_maps`` carry a learned
        background (SWTformer-V2). The default is ``cams`` (already normalised) for methods without raw maps.
        """
        return self.cams(images, cls_labels)

    def scale_views(self, scaled: Tensor, cls_labels: Tensor | None) -> list[tuple[Tensor, bool]]:
        """The raw maps of one scale's views (the image, then its flip when ``cam_flip``).

        Each map comes with whether it still has to be flipped back after resizing to the image size: with
        ``fusion_flip_back="cam"`` the flipped view's map is flipped back here, at its own grid (IRN/CRT).
        """
        views = [(self.raw_cams(scaled, cls_labels), False)]
        if self.hparams.cam_flip:
            flipped = self.raw_cams(scaled.flip(-1), cls_labels)
            at_cam = self.fusion_flip_back == "cam"
            views.append((flipped.flip(-1), False) if at_cam else (flipped, True))
        return views

    def multiscale_maps(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """``raw_cams`` of every scale and flip summed at the input size, then normalised once per channel.

        View s is the input resized bilinearly to round(s·H) × round(s·W) (the official view sizes), then
        flipped. The geometry and the normalisation follow the class settings ``fusion_flip_back``,
        ``fusion_stride`` and ``fusion_norm`` (:mod:`wsss.pseudo.fusion`).
        """
        check_fusion(self.fusion_flip_back, self.fusion_stride, self.fusion_norm)
        height, width = size = tuple(images.shape[-2:])

        def views():
            for scale in self.hparams.cam_scales:
                scaled = images if scale == 1.0 else F.interpolate(
                    images, size=(round(height * scale), round(width * scale)), mode="bilinear",
                    align_corners=False)
                yield from self.scale_views(scaled, cls_labels)

        return normalize_fused(sum_views(views(), size, self.fusion_stride), self.fusion_norm)

    def multiscale_cams(self, images: Tensor, cls_labels: Tensor | None = None) -> Tensor:
        """Multi-scale + flip CAMs (B, K, H, W) in [0, 1]; classes absent from ``cls_labels`` are 0."""
        cams = self.multiscale_maps(images, cls_labels)
        return cams if cls_labels is None else keep_present_classes(cams, cls_labels)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Classification mAP and single-scale seed mIoU (fixed background threshold, GT image labels)."""
        images, labels = batch["image"], batch["cls_labels"]
        logits, cams = self.logits_and_cams(images)
        self.val_map.update(logits.sigmoid(), labels.long())
        self.log("val/map", self.val_map, prog_bar=True, batch_size=images.shape[0])
        if "mask" in batch:
            mask = batch["mask"]
            cams = F.interpolate(cams, size=mask.shape[-2:], mode="bilinear", align_corners=False)
            self.val_seed_iou.update(cams_to_mask(cams, labels, bg_threshold=self.hparams.bg_threshold), mask)
            self.log("val/seed_miou", self.val_seed_iou, prog_bar=True, batch_size=images.shape[0])

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Multi-scale + flip CAMs and background scores; GT image labels when the batch has them."""
        images = batch["image"]
        labels = batch.get("cls_labels")
        if labels is None:
            labels = (self.classify(images) > 0).float()
        cams = self.multiscale_cams(images, labels)
        out = {
            "name": batch["name"],
            "cams": cams,
            "scores": self.score_maps(cams, labels),
            "cls_labels": labels,
        }
        return out | {k: batch[k] for k in ("image", "mask") if k in batch}
