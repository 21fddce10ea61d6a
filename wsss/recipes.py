"""Recipe composition: a recipe may list ``_base_`` files that it extends (mmsegmentation style)."""

from pathlib import Path

import yaml


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into ``base``; lists, scalars and blocks whose class changes are replaced."""
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        same_class = not (
            isinstance(value, dict)
            and isinstance(old, dict)
            and "class_path" in value
            and value["class_path"] != old.get("class_path")
        )
        out[key] = (
            merge(old, value) if isinstance(old, dict) and isinstance(value, dict) and same_class else value
        )
    return out


def load_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Load a recipe YAML with its ``_base_`` files (paths relative to it) merged underneath, recursively."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"recipe {path} includes itself through _base_")
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist; the recipes are listed in recipes/")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"recipe {path} is not valid YAML: {err}") from err
    bases = config.pop("_base_", [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = merge(merged, load_recipe(path.parent / base, (*_seen, path)))
    return merge(merged, config)


def expand_config_args(argv: list[str]) -> list[str]:
    """Replace every ``--config FILE`` whose YAML has ``_base_`` by the merged YAML text."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            j, value = i + 1, out[i + 1]
        elif arg.startswith("--config="):
            j, value = i, arg.split("=", 1)[1]
        else:
            continue
        if (
            value.endswith((".yaml", ".yml"))
            and Path(value).is_file()
            and "_base_" in Path(value).read_text()
        ):
            text = yaml.safe_dump(load_recipe(value), sort_keys=False)
            out[j] = text if j != i else f"--config={text}"
    return out
