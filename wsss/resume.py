"""``wsss resume --config RECIPE [ARGS]``: continue the last ``fit`` of a recipe from its ``last.ckpt``.

The run directory is the recipe's ``trainer.default_root_dir`` (the last ``--config`` and any
``--trainer.default_root_dir`` override win, as in LightningCLI; the current folder when unset). The newest
``checkpoints/*.ckpt`` below it, normally ``lightning_logs/version_*/checkpoints/last.ckpt``, is passed as
``--ckpt_path``, so Lightning restores the weights, the optimiser and the learning-rate schedule, the loops'
progress (a mid-epoch checkpoint resumes that epoch) and the callbacks' state. A run writes ``last.ckpt``
only with a ``ModelCheckpoint(save_last=True)``. Resumed runs are not bit-identical to uninterrupted ones
(Lightning #17543), but they take the same number of optimiser steps.

Every candidate is checked before it is used: a checkpoint that does not load (truncated by a full disk or a
crash while it was copied) or holds weights only is passed over, with a note naming it, for the newest
``checkpoints/*.ckpt`` that does load (wsss writes checkpoints atomically, so this concerns files written
otherwise).
"""

import sys
from pathlib import Path
from typing import Any

import yaml

from wsss.checkpointing import checkpoint_problem
from wsss.recipes import load_recipe, merge


def option_values(argv: list[str], name: str) -> list[str]:
    """Every value given to ``--name VALUE`` or ``--name=VALUE`` in ``argv``, in order."""
    values = []
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
    return values


def config_value(argv: list[str], key: str) -> Any:
    """The value that ``argv``'s ``--config`` files (or YAML texts) and ``--key`` overrides give to the dotted
    ``key`` (the last one wins, as in LightningCLI); None when none gives it."""
    overrides = option_values(argv, key)
    if overrides:
        return yaml.safe_load(overrides[-1])
    config: Any = {}
    for value in option_values(argv, "config"):
        is_file = "\n" not in value and len(value) < 4096 and Path(value).is_file()
        inline = None if is_file else yaml.safe_load(value)
        config = merge(config, inline if isinstance(inline, dict) else load_recipe(value))
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def run_directory(argv: list[str]) -> Path:
    """The ``trainer.default_root_dir`` that ``wsss fit`` would use with these arguments."""
    root = config_value(argv, "trainer.default_root_dir")
    return Path(str(root)) if root else Path.cwd()


def find_last_checkpoint(root: str | Path) -> Path:
    """The newest ``checkpoints/*.ckpt`` below ``root`` that can continue training (usually a ``last.ckpt``).

    Unusable ones are passed over with a note on stderr; a clear error if none is usable.
    """
    root = Path(root)
    found = sorted(
        (path for path in root.glob("**/checkpoints/*.ckpt") if path.is_file()), key=modified, reverse=True
    )
    if not found:
        raise FileNotFoundError(
            f"no checkpoint (checkpoints/*.ckpt) below {root}: nothing to resume. Start the run with "
            "`wsss fit` and a ModelCheckpoint with save_last: true (every_n_train_steps saves within epochs)"
        )
    passed_over = []
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            if passed_over:
                print(f"wsss resume: continuing from {path}, the newest usable checkpoint", file=sys.stderr)
            return path
        passed_over.append(path)
        print(f"wsss resume: skipping {path}: it {problem}", file=sys.stderr)
    raise ValueError(
        f"no checkpoint below {root} can continue the run: {len(passed_over)} checked, none loads with its "
        f"training state (first: {passed_over[0]}); start again with `wsss fit`"
    )


def modified(path: Path) -> int:
    """The modification time of ``path`` in nanoseconds."""
    return path.stat().st_mtime_ns


def resume_args(argv: list[str]) -> list[str]:
    """``fit`` arguments that continue the run of ``argv`` from its last checkpoint."""
    if option_values(argv, "ckpt_path"):
        raise ValueError(
            "wsss resume finds the checkpoint itself; use `wsss fit --ckpt_path ...` to choose one"
        )
    return ["fit", *argv, f"--ckpt_path={find_last_checkpoint(run_directory(argv))}"]


def main(argv: list[str]) -> None:
    """Resume ``wsss fit`` with ``argv`` (the same ``--config`` and overrides as the interrupted run)."""
    from wsss.main import make_cli

    args = resume_args(argv)
    print(f"wsss resume: {args[-1].split('=', 1)[1]}")
    make_cli(args)
