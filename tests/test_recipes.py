"""Recipe composition and the validity of every recipe in recipes/."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from wsss.recipes import expand_config_args, load_recipe, merge

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))  # not _base_/ fragments nor sweeps/


def test_merge_is_deep_and_replaces_lists_and_changed_classes():
    base = {"a": {"x": 1, "y": [1, 2]}, "model": {"class_path": "A", "init_args": {"p": 1, "q": 2}}}
    override = {"a": {"y": [3]}, "model": {"class_path": "B", "init_args": {"p": 5}}}
    assert merge(base, override) == {
        "a": {"x": 1, "y": [3]},
        "model": {"class_path": "B", "init_args": {"p": 5}},
    }
    same = {"model": {"class_path": "A", "init_args": {"p": 5}}}
    assert merge(base, same)["model"]["init_args"] == {"p": 5, "q": 2}


def test_bases_load_recursively_and_relative(tmp_path: Path):
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "a.yaml").write_text("trainer: {max_epochs: 1, devices: 1}\n")
    (tmp_path / "_base_" / "b.yaml").write_text("_base_: a.yaml\ntrainer: {max_epochs: 2}\n")
    (tmp_path / "r.yaml").write_text("_base_: [_base_/b.yaml]\ntrainer: {devices: 4}\n")
    assert load_recipe(tmp_path / "r.yaml") == {"trainer": {"max_epochs": 2, "devices": 4}}
    args = expand_config_args(["fit", "--config", str(tmp_path / "r.yaml"), "--trainer.devices=1"])
    assert (
        yaml.safe_load(args[2]) == {"trainer": {"max_epochs": 2, "devices": 4}}
        and args[3] == "--trainer.devices=1"
    )


def test_bad_recipes_get_clear_errors(tmp_path: Path):
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(ValueError, match="includes itself"):
        load_recipe(tmp_path / "loop.yaml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def accepted_arguments(cls: type) -> set[str]:
    """Constructor arguments of ``cls``, following ``**kwargs`` up the class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def class_blocks(node):
    """Every ``{class_path, init_args}`` block of a config, at any depth."""
    if isinstance(node, dict):
        if "class_path" in node:
            yield node
        for value in node.values():
            yield from class_blocks(value)
    elif isinstance(node, list):
        for value in node:
            yield from class_blocks(value)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_names_real_classes_and_arguments(path: Path):
    config = load_recipe(path)
    assert {"model", "data", "trainer"} <= set(config), f"{path.name} lacks model, data or trainer"
    for block in class_blocks(config):
        module, _, name = block["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        unknown = set(block.get("init_args", {})) - accepted_arguments(cls)
        assert not unknown, f"{path.name}: {block['class_path']} has no arguments {unknown}"
