"""``wsss check --config RECIPE [overrides]``: a dry run of a set-up before a long job.

Builds the recipe's data and model exactly as ``wsss fit`` would (same arguments and overrides), then prints
what every weights file loaded, the classes, the sample count of each split, and the shapes of one training
batch. ``--step`` also runs one training and one validation batch (Lightning's ``fast_dev_run``, one device,
no logger, checkpoint or callbacks). Nothing is written. A problem stops it with the same one-line error
``wsss fit`` would give.
"""

import sys
from collections.abc import Sequence

from torch import Tensor

from wsss.main import make_cli
from wsss.models.weights import weights_reports
from wsss.trainer import Trainer

ROLES = ("train", "val", "test", "predict")


def describe(value: object) -> str:
    """A batch entry in a few words: a tensor's shape and dtype, else the length of a list."""
    if isinstance(value, Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, list | tuple):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def check(args: Sequence[str], step: bool = False) -> list[str]:
    """The report lines of a dry run of ``args`` (``--config RECIPE`` and overrides); ``step`` runs one
    training and one validation batch too."""
    cli = make_cli(list(args), run=False)
    model, data = cli.model, cli.datamodule
    lines = [f"model    {type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters"]
    reports = weights_reports(model)
    lines += [f"weights  {report}" for report in reports]
    if not reports:
        lines.append("weights  none: every network starts from its random initialisation")
    names = list(data.class_names)
    lines.append(f"classes  {data.num_classes} + background, {data.in_channels} input channel(s): "
                 f"{', '.join(names[1:])}")
    for role in ROLES:
        lines.append(f"{role:<8} split {data.splits[role]!r}: {len(data.dataset(role))} samples")
    batch = next(iter(data.train_dataloader()))
    lines.append("batch    " + "; ".join(f"{key} {describe(value)}" for key, value in batch.items()))
    skipped = data.skipped_samples
    if skipped:
        lines.append(f"skipped  {len(skipped)} bad sample file(s), e.g. {skipped[0][0]}: {skipped[0][1]}")
    if step:
        trainer = Trainer(fast_dev_run=1, devices=1, logger=False, enable_checkpointing=False, callbacks=[],
                          enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, datamodule=data)
        metrics = ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items()))
        lines.append(f"step     1 training + 1 validation batch on {trainer.strategy.root_device}: {metrics}")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``wsss check [--step] --config RECIPE [overrides]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    step = "--step" in args
    print("\n".join(check([a for a in args if a != "--step"], step)))
