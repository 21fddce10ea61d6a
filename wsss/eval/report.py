"""Markdown tables of evaluation results: per-class IoU and one-line result rows."""

import math
from collections.abc import Mapping, Sequence

from torch import Tensor

MISSING = "–"


def _number(value: float | Tensor, digits: int, scale: float = 1.0) -> str:
    value = float(value)
    return MISSING if math.isnan(value) else f"{value * scale:.{digits}f}"


def iou_table(per_class_iou: Sequence[float] | Tensor, class_names: Sequence[str], digits: int = 1) -> str:
    """Markdown table of IoU in percent per class, then the mIoU over the classes that have one.

    NaN (a class absent from truth and prediction) prints as "–" and stays out of the mean.
    """
    values = [float(v) for v in per_class_iou]
    if len(values) != len(class_names):
        raise ValueError(f"iou_table: {len(values)} IoU values for {len(class_names)} class names")
    present = [v for v in values if not math.isnan(v)]
    miou = sum(present) / len(present) if present else math.nan
    lines = ["| class | IoU (%) |", "|---|---:|"]
    lines += [f"| {name} | {_number(v, digits, 100)} |" for name, v in zip(class_names, values, strict=True)]
    lines.append(f"| **mIoU** | **{_number(miou, digits, 100)}** |")
    return "\n".join(lines)


def results_row(results: Mapping[str, float | Tensor], digits: int = 3, header: bool = False) -> str:
    """One markdown table row of the values in ``results`` (in its order), with header lines if ``header``."""
    row = "| " + " | ".join(_number(v, digits) for v in results.values()) + " |"
    if not header:
        return row
    names = "| " + " | ".join(results) + " |"
    rule = "|" + "---:|" * len(results)
    return "\n".join([names, rule, row])
