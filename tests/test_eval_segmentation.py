"""SegmentationIoU and ThresholdSweepIoU against hand computations and a numpy formulation."""

import math

import numpy as np
import pytest
import torch

from wsss.eval import SegmentationIoU, ThresholdSweepIoU
from wsss.pseudo.background import cams_to_mask

TARGET = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
PRED = torch.tensor([[[0, 1, 1], [1, 2, 2]]])
# labelled (truth, prediction) pairs: (0,0) (0,1) (1,1) (1,1) (2,2); the ignored pixel does not count
# class 0: TP 1, FP 0, FN 1 -> 1/2;  class 1: TP 2, FP 1, FN 0 -> 2/3;  class 2: TP 1 -> 1
HAND_IOU = [1 / 2, 2 / 3, 1.0]


def numpy_iou(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class IoU from set counts, NaN for classes absent from both."""
    keep = target != 255
    pred, target = pred[keep], target[keep]
    out = []
    for c in range(num_classes):
        inter = np.sum((pred == c) & (target == c))
        union = np.sum((pred == c) | (target == c))
        out.append(inter / union if union else np.nan)
    return np.array(out)


def test_hand_example_with_ignore() -> None:
    metric = SegmentationIoU(num_classes=3)
    metric.update(PRED, TARGET)
    assert torch.allclose(metric.per_class_iou(), torch.tensor(HAND_IOU, dtype=torch.float64))
    assert metric.compute().item() == pytest.approx(sum(HAND_IOU) / 3)
    assert metric.pixel_accuracy().item() == pytest.approx(4 / 5)
    assert metric.confusion_matrix().sum() == 5


def test_class_absent_everywhere_is_nan_and_left_out_of_the_mean() -> None:
    metric = SegmentationIoU(num_classes=4)
    metric.update(PRED, TARGET)
    per_class = metric.per_class_iou()
    assert math.isnan(per_class[3])
    assert metric.compute().item() == pytest.approx(sum(HAND_IOU) / 3)


def test_score_maps_are_reduced_by_argmax() -> None:
    scores = torch.nn.functional.one_hot(PRED, 3).permute(0, 3, 1, 2).float()
    metric = SegmentationIoU(num_classes=3)
    metric.update(scores, TARGET)
    assert metric.compute().item() == pytest.approx(sum(HAND_IOU) / 3)


def test_two_updates_accumulate_and_reset_clears() -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (4, 16, 16), generator=gen)
    target = torch.randint(0, 5, (4, 16, 16), generator=gen)
    target[target == 4] = 255
    metric = SegmentationIoU(num_classes=5)
    metric.update(pred[:2], target[:2])
    metric.update(pred[2:], target[2:])
    expected = numpy_iou(pred.numpy(), target.numpy(), 5)
    assert np.allclose(metric.per_class_iou().numpy(), expected, equal_nan=True)
    assert metric.compute().item() == pytest.approx(np.nanmean(expected))
    metric.reset()
    assert metric.confusion_matrix().sum() == 0
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(metric.compute().item())


def test_labels_out_of_range_are_clear_errors() -> None:
    metric = SegmentationIoU(num_classes=3)
    with pytest.raises(ValueError, match="target labels"):
        metric.update(PRED, torch.tensor([[[0, 0, 1], [1, 7, 255]]]))
    with pytest.raises(ValueError, match="predicted labels"):
        metric.update(torch.tensor([[[0, 1, 1], [1, 3, 2]]]), TARGET)
    with pytest.raises(ValueError, match="differ in shape"):
        metric.update(PRED[:, :1], TARGET)


def test_sweep_picks_the_threshold_that_separates_the_pixels() -> None:
    cams = torch.tensor([0.1, 0.3, 0.5, 0.7]).view(1, 1, 1, 4)
    target = torch.tensor([[[0, 0, 1, 1]]])
    # t=0.0: pred 1111 -> IoU (0, 2/4), mean 0.25;  t=0.2: pred 0111 -> (1/2, 2/3), mean 7/12
    # t=0.4: pred 0011 -> (1, 1), mean 1;            t=0.6: pred 0001 -> (2/3, 1/2), mean 7/12
    metric = ThresholdSweepIoU(num_classes=2, thresholds=(0.0, 0.2, 0.4, 0.6))
    metric.update(cams, target)
    thresholds, curve = metric.curve()
    assert thresholds.tolist() == [0.0, 0.2, 0.4, 0.6]
    assert torch.allclose(curve, torch.tensor([0.25, 7 / 12, 1.0, 7 / 12], dtype=torch.float64))
    assert metric.best_threshold() == 0.4
    assert metric.compute().item() == pytest.approx(1.0)
    assert torch.allclose(metric.per_class_iou(), torch.ones(2, dtype=torch.float64))


def test_sweep_early_stop_keeps_the_first_local_maximum() -> None:
    cams = torch.tensor([0.1, 0.3, 0.3, 0.5]).view(1, 1, 1, 4)
    target = torch.tensor([[[0, 0, 1, 0]]])
    # t=0.0: pred 1111 -> (0, 1/4) mean 1/8;    t=0.2: pred 0111 -> (1/3, 1/3) mean 1/3
    # t=0.4: pred 0001 -> (2/4, 0) mean 1/4;    t=0.6: pred 0000 -> (3/4, 0) mean 3/8
    kwargs = {"num_classes": 2, "thresholds": (0.0, 0.2, 0.4, 0.6)}
    full, early = ThresholdSweepIoU(**kwargs), ThresholdSweepIoU(**kwargs, early_stop=True)
    for metric in (full, early):
        metric.update(cams, target)
    assert (full.best_threshold(), full.compute().item()) == (0.6, pytest.approx(3 / 8))
    assert (early.best_threshold(), early.compute().item()) == (0.2, pytest.approx(1 / 3))


def test_sweep_matches_cams_to_mask_at_every_threshold() -> None:
    gen = torch.Generator().manual_seed(1)
    cams = torch.rand(3, 4, 12, 10, generator=gen)
    cams[0, 2, :3] = 0.3  # ties with a threshold go to the background in both
    labels = (torch.rand(3, 4, generator=gen) > 0.4).float()
    target = torch.randint(0, 5, (3, 12, 10), generator=gen)
    target[:, 0] = 255
    thresholds = (0.0, 0.1, 0.3, 0.55, 0.9)
    sweep = ThresholdSweepIoU(num_classes=5, thresholds=thresholds)
    sweep.update(cams[:1], target[:1], labels[:1])  # two updates accumulate
    sweep.update(cams[1:], target[1:], labels[1:])
    expected = []
    for t in thresholds:
        single = SegmentationIoU(num_classes=5)
        single.update(cams_to_mask(cams, labels, bg_threshold=t), target)
        expected.append(single.compute().item())
    assert np.allclose(sweep.curve()[1].numpy(), expected)
    assert sweep.compute().item() == pytest.approx(max(expected))
    sweep.reset()
    assert sweep.confmat.sum() == 0


def test_sweep_rejects_unsorted_thresholds_and_wrong_channels() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        ThresholdSweepIoU(num_classes=3, thresholds=(0.2, 0.1))
    with pytest.raises(ValueError, match="cams must be"):
        ThresholdSweepIoU(num_classes=3).update(
            torch.rand(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
        )
