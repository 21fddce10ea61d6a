"""Markdown report helpers."""

import math

import torch

from wsss.eval import iou_table, results_row


def test_iou_table_prints_percent_and_skips_nan_in_the_mean() -> None:
    table = iou_table(torch.tensor([0.5, math.nan, 0.75]), ["background", "cat", "dog"])
    assert table.splitlines() == [
        "| class | IoU (%) |",
        "|---|---:|",
        "| background | 50.0 |",
        "| cat | – |",
        "| dog | 75.0 |",
        "| **mIoU** | **62.5** |",  # (50 + 75) / 2
    ]


def test_results_row_with_and_without_header() -> None:
    results = {"miou": torch.tensor(0.61234), "map": 0.9}
    assert results_row(results) == "| 0.612 | 0.900 |"
    assert results_row(results, digits=1, header=True).splitlines() == [
        "| miou | map |",
        "|---:|---:|",
        "| 0.6 | 0.9 |",
    ]
