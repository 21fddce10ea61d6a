"""Confusion-matrix segmentation metrics: mIoU (VOC convention) and the MCTformer background-threshold sweep.

Conventions (methods.md §6): masks are int64 with 0 = background, 1..K foreground and ``ignore_index`` (255)
ignored; the mean runs over the K + 1 classes including background. A class that appears neither in the
ground truth nor in the predictions over the *whole* evaluation has no IoU (NaN) and is left out of the
mean, as in IRN/SIPE/CRT (chainercv + ``nanmean``). MCTformer's ``evaluation.py`` instead counts such a
class as 0; the two agree whenever every class occurs, as on the VOC splits.

Both metrics keep sum-reduced confusion matrices as torchmetrics states, so they sync across DDP processes
and can be logged as objects (``self.log("val/miou", metric)``): ``compute()`` returns the scalar mIoU, and
the other views (per-class IoU, pixel accuracy, threshold curve) are methods that read the synced matrices.
"""

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from wsss.pseudo.background import keep_present_classes

IGNORE_INDEX = 255
MCTFORMER_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(60))


def iou_from_confusion(confmat: Tensor) -> Tensor:
    """Per-class IoU = TP / (TP + FP + FN) from (..., C, C) matrices (rows = truth, columns = prediction).

    NaN marks a class absent from both truth and prediction.
    """
    confmat = confmat.double()
    true_positive = confmat.diagonal(dim1=-2, dim2=-1)
    union = confmat.sum(-1) + confmat.sum(-2) - true_positive
    return true_positive / union  # 0 / 0 = NaN for absent classes


def _check_masks(
    name: str, preds: Tensor, target: Tensor, num_classes: int, ignore_index: int | None
) -> None:
    if preds.shape != target.shape:
        raise ValueError(
            f"{name}: predicted and target masks differ in shape: {tuple(preds.shape)} vs "
            f"{tuple(target.shape)}"
        )
    if preds.is_floating_point() or target.is_floating_point():
        raise ValueError(f"{name}: masks must hold integer labels, got {preds.dtype} and {target.dtype}")
    if preds.numel() and (preds.min() < 0 or preds.max() >= num_classes):
        raise ValueError(
            f"{name}: predicted labels must lie in [0, {num_classes - 1}], got values in "
            f"[{int(preds.min())}, {int(preds.max())}]"
        )
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bad.any():
        raise ValueError(
            f"{name}: target labels must lie in [0, {num_classes - 1}] or equal ignore_index="
            f"{ignore_index}, found {int(target[bad][0])}"
        )


def _synced(metric: Metric, state: str) -> Tensor:
    """A copy of one of ``metric``'s states, summed over DDP processes when running distributed."""
    with metric.sync_context():
        return getattr(metric, state).clone()


class SegmentationIoU(Metric):
    """Confusion-matrix mean IoU over ``num_classes`` mask classes (background included: K + 1 for VOC).

    ``update(preds, target)`` takes predicted label masks (B, H, W), or scores (B, num_classes, H, W) that are
    reduced by argmax, and target masks (B, H, W) where ``ignore_index`` pixels do not count.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"SegmentationIoU: num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate the confusion matrix of one batch."""
        if preds.ndim == target.ndim + 1:
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"SegmentationIoU: score maps need {self.num_classes} channels, got {tuple(preds.shape)}"
                )
            preds = preds.argmax(dim=1)
        _check_masks("SegmentationIoU", preds, target, self.num_classes, self.ignore_index)
        self.confmat = self.confmat + multiclass_confusion_matrix(
            preds, target, self.num_classes, ignore_index=self.ignore_index, validate_args=False
        )

    def compute(self) -> Tensor:
        """Mean IoU over the classes that occur (scalar; NaN before any labelled pixel)."""
        return iou_from_confusion(self.confmat).nanmean()

    def confusion_matrix(self) -> Tensor:
        """The (C, C) pixel counts, rows = truth, columns = prediction."""
        return _synced(self, "confmat")

    def per_class_iou(self) -> Tensor:
        """IoU of each class (C,), NaN for classes absent from both truth and prediction."""
        return iou_from_confusion(self.confusion_matrix())

    def pixel_accuracy(self) -> Tensor:
        """Fraction of labelled pixels predicted correctly."""
        confmat = self.confusion_matrix().double()
        return confmat.diagonal().sum() / confmat.sum()


class ThresholdSweepIoU(Metric):
    """mIoU of ``cams_to_mask`` at every constant background score in ``thresholds`` (MCTformer's seed curve).

    The reported value is the best mIoU over the sweep, which **tunes the threshold on the ground truth**
    (MCTformer issue #53 objects to this under weak supervision): report it as an upper bound next to a
    fixed threshold, and use :meth:`best_threshold` for pseudo-masks only with that caveat.
    ``early_stop=True`` copies MCTformer's ``evaluation.py --curve``, which stops at the first threshold
    that does not improve; the default takes the maximum of the whole curve.

    ``update(cams, target, cls_labels=None)`` takes CAMs (B, num_classes - 1, H, W), normalised per class as
    the convention requires (min–max for MCTformer), target masks (B, H, W) and optional image labels (B,
    K). A pixel is foreground at threshold t when its best present class scores strictly above t, exactly as
    :func:`wsss.pseudo.background.cams_to_mask`. All thresholds are counted in one pass (a histogram over
    "number of thresholds below the pixel's best score"), not a loop over thresholds.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] = MCTFORMER_THRESHOLDS,
        ignore_index: int | None = IGNORE_INDEX,
        early_stop: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"ThresholdSweepIoU: num_classes must be at least 2, got {num_classes}")
        if len(thresholds) == 0 or list(thresholds) != sorted(set(thresholds)):
            raise ValueError(
                f"ThresholdSweepIoU: thresholds must be non-empty, strictly increasing, got "
                f"{list(thresholds)}"
            )
        self.num_classes = num_classes
        self.thresholds = tuple(float(t) for t in thresholds)
        self.ignore_index = ignore_index
        self.early_stop = early_stop
        self.add_state(
            "confmat",
            default=torch.zeros(len(thresholds), num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, cams: Tensor, target: Tensor, cls_labels: Tensor | None = None) -> None:
        """Accumulate one confusion matrix per threshold for a batch of CAMs."""
        if cams.ndim != 4 or cams.shape[1] != self.num_classes - 1:
            raise ValueError(
                f"ThresholdSweepIoU: cams must be (B, {self.num_classes - 1}, H, W), got {tuple(cams.shape)}"
            )
        if cls_labels is not None:
            cams = keep_present_classes(cams, cls_labels)
        fg_score, fg_class = cams.max(dim=1)
        _check_masks("ThresholdSweepIoU", fg_class, target, self.num_classes, self.ignore_index)
        fg_score, fg_class, target = fg_score.flatten(), fg_class.flatten() + 1, target.flatten()
        if self.ignore_index is not None:
            labelled = target != self.ignore_index
            fg_score, fg_class, target = fg_score[labelled], fg_class[labelled], target[labelled]
        thresholds = torch.tensor(self.thresholds, dtype=fg_score.dtype, device=fg_score.device)
        # below[p] = number of thresholds under score[p]: the pixel is foreground at thresholds 0..below[p]-1
        below = torch.searchsorted(thresholds, fg_score.contiguous())
        n, c = len(self.thresholds), self.num_classes
        hist = torch.bincount((below * c + target) * c + fg_class, minlength=(n + 1) * c * c).view(
            n + 1, c, c
        )
        as_foreground = hist.flip(0).cumsum(0).flip(0)[1:]  # threshold i: pixels with below > i
        as_background = hist.sum(-1).cumsum(0)[:n]  # threshold i: pixels with below <= i, per true class
        as_foreground[:, :, 0] += as_background
        self.confmat = self.confmat + as_foreground

    def _best_index(self, curve: Tensor) -> int:
        if not self.early_stop:
            return int(curve.nan_to_num(float("-inf")).argmax())
        best = 0
        for i in range(1, len(curve)):
            if not curve[i] > curve[best]:
                break
            best = i
        return best

    def compute(self) -> Tensor:
        """The best mIoU over the sweep (scalar)."""
        curve = iou_from_confusion(self.confmat).nanmean(-1)
        return curve[self._best_index(curve)]

    def curve(self) -> tuple[Tensor, Tensor]:
        """Thresholds (T,) and the mIoU at each (T,)."""
        miou = iou_from_confusion(_synced(self, "confmat")).nanmean(-1)
        return torch.tensor(self.thresholds, dtype=torch.float64), miou

    def best_threshold(self) -> float:
        """The background score that gives the reported mIoU (chosen on the ground truth)."""
        return self.thresholds[self._best_index(self.curve()[1])]

    def per_class_iou(self) -> Tensor:
        """Per-class IoU (C,) at the best threshold, NaN for classes absent from truth and prediction."""
        confmat = _synced(self, "confmat")
        curve = iou_from_confusion(confmat).nanmean(-1)
        return iou_from_confusion(confmat[self._best_index(curve)])
