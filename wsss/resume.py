"""``wsss resume --config RECIPE [ARGS]``: continue the last ``fit`` of a recipe from its ``last.ckpt``.

The run directory is the recipe's ``trainer.default_root_dir`` (the last ``--config`` and any
``--trainer.default_root_dir`` override win, as in LightningCLI; the current folder when unset). The newest
``checkpoints/last.ckpt`` below it (``lightning_logs/version_*/checkpoints/last.ckpt`` with the default
logger) is passed as ``--ckpt_path``, so Lightning restores the weights, the optimiser and the learning-rate
schedule, the loops' progress (a mid-epoch checkpoint resumes that epoch) and the callbacks' state. A run
writes ``last.ckpt`` only with a ``ModelCheckpoint(save_last=True)``. Resumed runs are not bit-identical
to uninterrupted ones (Lightning #17543), but they take the same number of optimiser steps.
"""

from pathlib import Path

import yaml

from wsss.recipes import load_recipe, merge

LAST_CHECKPOINT = "last.ckpt"


def option_values(argv: list[str], name: str) -> list[str]:
    """Every value given to ``--name VALUE`` or ``--name=VALUE`` in ``argv``, in order."""
    values = []
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
    return values


def run_directory(argv: list[str]) -> Path:
    """The ``trainer.default_root_dir`` that ``wsss fit`` would use with these arguments."""
    config: dict = {}
    for value in option_values(argv, "config"):
        inline = None if Path(value).is_file() else yaml.safe_load(value)
        config = merge(config, inline if isinstance(inline, dict) else load_recipe(value))
    overrides = option_values(argv, "trainer.default_root_dir")
    root = overrides[-1] if overrides else (config.get("trainer") or {}).get("default_root_dir")
    return Path(root) if root else Path.cwd()


def find_last_checkpoint(root: str | Path) -> Path:
    """The most recently written ``checkpoints/last.ckpt`` below ``root``; a clear error if there is none."""
    root = Path(root)
    found = [path for path in root.glob(f"**/checkpoints/{LAST_CHECKPOINT}") if path.is_file()]
    if not found:
        raise FileNotFoundError(
            f"no checkpoints/{LAST_CHECKPOINT} below {root}: nothing to resume. Start the run with "
            "`wsss fit` and a ModelCheckpoint with save_last: true (every_n_train_steps saves within epochs)"
        )
    return max(found, key=lambda path: path.stat().st_mtime_ns)


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
