"""``wsss sweep``: run a wandb sweep file online (``wandb agent``) or sample it locally with no server.

A sweep file (``recipes/sweeps/*.yaml``) is wandb's sweep format. Its ``command`` runs ``wsss fit --config
RECIPE ${args_no_boolean_flags}`` and its parameters are dotted CLI paths (``model.init_args.lr``), so the
agent's ``--model.init_args.lr=0.01`` flags reach LightningCLI unchanged. ``metric.name`` is a logged metric
(``val/map``, ``val/seed_miou``, ``val/miou``).

- ``wsss sweep FILE [--count N] [--project P]`` creates the sweep on the wandb server and runs an agent here
  (needs ``WANDB_MODE=online`` and an account).
- ``wsss sweep --local FILE [--count N] [--seed S] [--out DIR] [-- OVERRIDES...]`` samples the same file with
  wandb's own sweep logic (the ``sweeps`` package; grid, random and bayes), runs each trial in this process
  through :func:`wsss.main.make_cli` with its own ``trainer.default_root_dir`` under ``DIR``, and rewrites
  ``DIR/results.csv`` and ``DIR/results.md`` (each trial's parameters and final metric) after every trial.
  OVERRIDES are extra CLI arguments given to every trial (e.g. a smaller dataset). Run it from the repository
  root: the recipe path in ``command`` is relative to it, as for ``wandb agent``.
"""

import argparse
import csv
import importlib
import math
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import yaml

ARG_MACROS = (
    "${args}",
    "${args_no_hyphens}",
    "${args_no_boolean_flags}",
    "${args_json}",
    "${args_json_file}",
)


@dataclass
class Trial:
    """One sampled configuration and the final value of the monitored metric."""

    params: dict[str, object]
    metric: float
    run_dir: Path


def load_sweep(path: str | Path) -> dict:
    """Read a sweep file and check it against wandb's sweep schema; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path} does not exist; the sweeps are in recipes/sweeps/")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"sweep file {path} is not valid YAML: {err}") from err
    problems = schema_violations(config) if isinstance(config, dict) else ["the file is not a mapping"]
    if not problems and "name" not in config.get("metric", {}):
        problems.append("metric.name is missing (the logged metric to optimise, e.g. val/map)")
    if not problems and not fit_arguments(config):
        problems.append("command must run `wsss fit --config RECIPE` followed by ${args_no_boolean_flags}")
    if problems:
        raise ValueError(f"sweep file {path} is not a valid wandb sweep: {'; '.join(problems)}")
    return config


def sweeps_package() -> ModuleType:
    """wandb's sweep logic (the ``sweeps`` package), with the install line when it is missing."""
    try:
        with warnings.catch_warnings():  # sweeps 0.3 still uses pydantic-v1 config names
            warnings.simplefilter("ignore")
            return importlib.import_module("sweeps")
    except ImportError as err:
        raise ImportError(
            "local sweeps need wandb's `sweeps` package: pip install --no-deps sweeps==0.3.0 jsonref "
            "(without --no-deps it downgrades numpy below 2)"
        ) from err


def schema_violations(config: dict) -> list[str]:
    """The problems that wandb's sweep schema finds in ``config``."""
    return sweeps_package().schema_violations_from_proposed_config(config)


def fit_arguments(config: dict) -> list[str]:
    """The ``fit --config RECIPE ...`` part of the sweep's command (empty when it runs something else)."""
    command = [str(token) for token in config.get("command", [])]
    if "wsss" not in command or not any(token in ARG_MACROS for token in command):
        return []
    args = [token for token in command[command.index("wsss") + 1 :] if not token.startswith("${")]
    return args if args[:1] == ["fit"] and "--config" in args else []


def recipe_path(config: dict) -> Path:
    """The recipe that the sweep's command trains (the first ``--config``)."""
    args = fit_arguments(config)
    return Path(args[args.index("--config") + 1])


def cli_flag(name: str, value: object) -> str:
    """``--name=value`` as ``${args_no_boolean_flags}`` writes it (booleans as true / false)."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"--{name}={text}"


def plain(value: object) -> object:
    """A sampled value as a plain Python scalar (the sampler returns numpy numbers)."""
    return value.item() if isinstance(value, np.generic) else value


def next_params(config: dict, trials: list[Trial]) -> dict[str, object] | None:
    """The next configuration wandb's sweep logic proposes after ``trials``; None when a grid is exhausted."""
    sweeps = sweeps_package()
    metric = config["metric"]["name"]
    runs = [
        sweeps.SweepRun(
            config={k: {"value": v} for k, v in t.params.items()},
            state=sweeps.RunState.finished,
            summary_metrics={metric: t.metric},
        )
        for t in trials
    ]
    proposed = sweeps.next_run(config, runs, validate=False)
    return None if proposed is None else {k: plain(v["value"]) for k, v in proposed.config.items()}


def run_trial(config: dict, params: dict[str, object], run_dir: Path, overrides: list[str]) -> float:
    """Fit one configuration through the CLI and return the final value of the sweep's metric."""
    from wsss.main import make_cli

    metric = config["metric"]["name"]
    args = [
        *fit_arguments(config),
        *(cli_flag(k, v) for k, v in params.items()),
        *overrides,
        f"--trainer.default_root_dir={run_dir}",
    ]
    cli = make_cli(args)
    value = cli.trainer.callback_metrics.get(metric)
    if value is None:
        raise ValueError(f"the trial logged no {metric!r}; logged: {sorted(cli.trainer.callback_metrics)}")
    return float(value)


def write_results(trials: list[Trial], config: dict, out: Path) -> None:
    """``results.csv`` and ``results.md``: one row per trial; the markdown shows the best metric in bold."""
    metric, goal = config["metric"]["name"], config["metric"].get("goal", "minimize")
    names = list(config["parameters"])
    rows = [
        [str(i), *(str(t.params.get(n, "")) for n in names), f"{t.metric:.6g}", str(t.run_dir)]
        for i, t in enumerate(trials)
    ]
    header = ["trial", *names, metric, "run_dir"]
    with (out / "results.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    finite = [t.metric for t in trials if math.isfinite(t.metric)]
    best = (max if goal == "maximize" else min)(finite) if finite else None
    for row, trial in zip(rows, trials, strict=True):  # the best metric in bold in the markdown table
        row[-2] = f"**{row[-2]}**" if trial.metric == best else row[-2]
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(r)} |" for r in rows)]
    out.joinpath("results.md").write_text(
        f"# Sweep: {config.get('name', out.name)} ({config['method']}, {goal} {metric})\n\n"
        f"Recipe: `{recipe_path(config)}`\n\n" + "\n".join(lines) + "\n"
    )


def run_local(
    path: str | Path, count: int | None, out: Path, overrides: list[str], seed: int = 0
) -> list[Trial]:
    """Sample and run up to ``count`` trials of a sweep file in this process; return them."""
    config = load_sweep(path)
    if count is None and config["method"] != "grid":
        raise ValueError(f"sweep file {path}: a {config['method']} sweep never ends by itself; give --count")
    if not recipe_path(config).is_file():
        raise FileNotFoundError(
            f"sweep file {path} trains {recipe_path(config)}, which does not exist here "
            "(run `wsss sweep` from the repository root)"
        )
    random.seed(seed)  # the sweeps package samples from Python's and numpy's global generators
    np.random.seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    trials: list[Trial] = []
    while count is None or len(trials) < count:
        params = next_params(config, trials)
        if params is None:
            break
        run_dir = out / f"trial_{len(trials)}"
        trials.append(Trial(params, run_trial(config, params, run_dir, overrides), run_dir))
        write_results(trials, config, out)
    return trials


def run_online(path: str | Path, count: int | None, project: str) -> None:
    """Create the sweep on the wandb server and run an agent that executes the file's command."""
    import wandb

    if os.environ.get("WANDB_MODE", "online") not in ("online", "run"):
        raise ValueError(
            f"a wandb sweep needs the wandb server, but WANDB_MODE={os.environ['WANDB_MODE']}: set "
            "WANDB_MODE=online (after `wandb login`), or sample the sweep here with --local"
        )
    sweep_id = wandb.sweep(load_sweep(path), project=project)
    wandb.agent(sweep_id, project=project, count=count)


def main(argv: list[str]) -> None:
    """``wsss sweep [--local] FILE [--count N] [--seed S] [--out DIR] [--project P] [-- OVERRIDES...]``."""
    argv, overrides = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="wsss sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_file", help="a wandb sweep YAML, e.g. recipes/sweeps/cam_baseline_lr.yaml")
    parser.add_argument("--local", action="store_true", help="sample and run the trials here, without wandb")
    parser.add_argument("--count", type=int, default=None, help="number of trials (default: the whole grid)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random / bayes sampling (--local)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default runs/sweeps/<file stem>)"
    )
    parser.add_argument("--project", default="wsss", help="wandb project of an online sweep")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    if not args.local:
        if overrides:
            parser.error("extra overrides after -- only apply to --local sweeps")
        run_online(args.sweep_file, args.count, args.project)
        return
    out = args.out or Path("runs/sweeps") / Path(args.sweep_file).stem
    trials = run_local(args.sweep_file, args.count, out, overrides, args.seed)
    print(f"wsss sweep: {len(trials)} trial(s); results in {out / 'results.md'}")
