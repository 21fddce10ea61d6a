"""Evaluation: segmentation mIoU (fixed rule or threshold sweep), multi-label mAP, WSOL accuracy, tables."""

from wsss.eval.classification import MultilabelMAP
from wsss.eval.report import iou_table, results_row
from wsss.eval.segmentation import SegmentationIoU, ThresholdSweepIoU, iou_from_confusion
from wsss.eval.wsol import WSOLAccuracy, cam_to_box

__all__ = [
    "MultilabelMAP",
    "SegmentationIoU",
    "ThresholdSweepIoU",
    "WSOLAccuracy",
    "cam_to_box",
    "iou_from_confusion",
    "iou_table",
    "results_row",
]
