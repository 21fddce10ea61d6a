"""Sweep files: wandb's schema, parameters that exist in their recipes, and a local 2-trial sweep."""

import csv
import importlib
from pathlib import Path

import lightning as L
import pytest
from test_recipes import accepted_arguments

from wsss.recipes import load_recipe
from wsss.sweep import cli_flag, fit_arguments, load_sweep, main, next_params, recipe_path

ROOT = Path(__file__).parents[1]
SWEEPS = sorted((ROOT / "recipes" / "sweeps").glob("*.yaml"))


def test_there_are_sweeps_for_the_baseline_the_sparse_vit_and_sasformer():
    assert {p.stem for p in SWEEPS} >= {"cam_baseline_lr", "sparse_vit_lambda", "sasformer_point_alpha"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_valid_and_its_parameters_exist_in_its_recipe(path: Path):
    config = load_sweep(path)
    assert config["program"] == "wsss" and fit_arguments(config)[:2] == ["fit", "--config"]
    recipe = ROOT / recipe_path(config)
    if not recipe.is_file():
        pytest.skip(f"{path.name} sweeps {recipe_path(config)}, which is not written yet")
    blocks = load_recipe(recipe)
    for name in config["parameters"]:
        section, _, argument = name.partition(".")
        if section == "trainer":
            cls = L.Trainer
        else:
            assert section in ("model", "data") and argument.startswith("init_args."), f"{path.name}: {name}"
            module, _, class_name = blocks[section]["class_path"].rpartition(".")
            cls = getattr(importlib.import_module(module), class_name)
            argument = argument.removeprefix("init_args.")
        assert argument in accepted_arguments(cls), (
            f"{path.name}: {cls.__name__} has no argument {argument!r}"
        )


def test_invalid_sweep_files_name_the_file_and_the_problem(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "method: grid\nmetric: {name: val/map}\nparameters: {a: {values: 3}}\n"
        "command: [wsss, fit, --config, r.yaml, '${args}']\n"
    )
    with pytest.raises(ValueError, match=rf"{bad}.*invalid hyperparameter configuration: a"):
        load_sweep(bad)
    bad.write_text(
        "method: grid\nmetric: {name: val/map}\nparameters: {a: {values: [1]}}\n"
        "command: [wsss, predict, '${args}']\n"
    )
    with pytest.raises(ValueError, match="command must run `wsss fit --config RECIPE`"):
        load_sweep(bad)
    with pytest.raises(FileNotFoundError, match="recipes/sweeps"):
        load_sweep(tmp_path / "missing.yaml")


def test_grid_is_exhausted_and_random_sampling_stays_in_bounds():
    grid = {
        "method": "grid",
        "metric": {"name": "m"},
        "parameters": {"a": {"values": [1, 2]}, "b": {"value": 3}},
    }
    from wsss.sweep import Trial

    first = next_params(grid, [])
    second = next_params(grid, [Trial(first, 0.5, Path())])
    assert sorted([first["a"], second["a"]]) == [1, 2] and first["b"] == second["b"] == 3
    assert next_params(grid, [Trial(first, 0.5, Path()), Trial(second, 0.1, Path())]) is None
    uniform = {
        "method": "random",
        "metric": {"name": "m"},
        "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-1}},
    }
    values = [next_params(uniform, [])["lr"] for _ in range(20)]
    assert all(isinstance(v, float) and 1e-3 <= v <= 1e-1 for v in values) and len(set(values)) == 20
    assert cli_flag("model.init_args.cam_flip", False) == "--model.init_args.cam_flip=false"


def test_local_two_trial_sweep_writes_the_table(tmp_path: Path, tiny_fit_args: list[str]):
    out, logs = tmp_path / "sweep", tmp_path / "logs"
    csv_logger = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={logs}"]
    main(
        [
            "--local",
            str(ROOT / "recipes/sweeps/cam_baseline_lr.yaml"),
            "--count",
            "2",
            "--out",
            str(out),
            "--",
            *tiny_fit_args,
            *csv_logger,
        ]
    )
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 and len({row["model.init_args.lr"] for row in rows}) == 2
    for i, row in enumerate(rows):
        assert float(row["model.init_args.lr"]) in (0.01, 0.02, 0.05, 0.1)
        logged = logs / f"lightning_logs/version_{i}"  # the trials run one after the other
        assert f"lr: {row['model.init_args.lr']}" in (logged / "config.yaml").read_text()
        seed_miou = [
            r["val/seed_miou"] for r in csv.DictReader((logged / "metrics.csv").open()) if r["val/seed_miou"]
        ]
        assert float(row["val/seed_miou"]) == pytest.approx(float(seed_miou[-1]), rel=1e-5)
    table = (out / "results.md").read_text()
    assert "| trial | model.init_args.lr | val/seed_miou | run_dir |" in table and table.count("**") >= 2


def test_random_sweep_without_count_is_refused(tmp_path: Path):
    sweep = tmp_path / "random.yaml"
    sweep.write_text(
        "method: random\nmetric: {name: val/map}\nparameters: {model.init_args.lr: {min: 0.01, "
        "max: 0.1}}\ncommand: [wsss, fit, --config, recipes/cam_baseline_synthetic.yaml, '${args}']\n"
    )
    with pytest.raises(ValueError, match="never ends by itself; give --count"):
        main(["--local", str(sweep)])
