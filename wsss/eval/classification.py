"""Multi-label classification mAP over the classes that have a positive example."""

import warnings

import torch
from torch import Tensor
from torchmetrics.classification import MultilabelAveragePrecision


class MultilabelMAP(MultilabelAveragePrecision):
    """Mean average precision over the classes with at least one positive label (VOC-style image-level mAP).

    torchmetrics gives a class without positives an AP of 0 (with a warning) and its ``macro`` average counts
    it; here such classes are left out of the mean instead (NaN in :meth:`per_class_ap`). ``update(preds,
    target)`` takes scores or logits (B, num_labels) and a multi-hot target (B, num_labels), float or integer.
    ``thresholds=None`` gives the exact AP (sklearn's ``average_precision_score``); an int bins the scores to
    bound memory.
    """

    def __init__(
        self, num_labels: int, thresholds: int | list[float] | Tensor | None = None, **kwargs
    ) -> None:
        super().__init__(num_labels=num_labels, average=None, thresholds=thresholds, **kwargs)
        self.add_state("positives", default=torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate scores and labels of one batch."""
        if preds.shape != target.shape or preds.ndim != 2 or preds.shape[1] != self.num_labels:
            raise ValueError(
                f"MultilabelMAP: preds and target must both be (B, {self.num_labels}), got "
                f"{tuple(preds.shape)} and {tuple(target.shape)}"
            )
        target = target.long()
        super().update(preds, target)
        self.positives = self.positives + (target == 1).sum(0)

    def _per_class(self) -> Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No positive samples found in target")
            per_class = super().compute()
        return torch.where(self.positives > 0, per_class, torch.nan)

    def compute(self) -> Tensor:
        """mAP over the classes with a positive example (scalar; NaN if there is none)."""
        return self._per_class().nanmean()

    def per_class_ap(self) -> Tensor:
        """AP of each class (num_labels,), NaN for classes without a positive example."""
        with self.sync_context():
            return self._per_class().clone()
