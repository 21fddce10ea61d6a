"""Local weight files: reading every common release layout, and judging a load strictly.

A weights argument is a checkpoint file (PyTorch pickle or safetensors) or a Hugging Face snapshot folder
(``model.safetensors`` / ``pytorch_model.bin``). The tensors may be wrapped the usual ways (``{'model': …}``
as DeiT and Swin release them, ``{'state_dict': …}`` as Lightning saves them, every key prefixed ``module.``
or ``model.``); a timm ``features_only`` state dict (``layers_N.`` / ``stages_N.`` keys) is renamed to the
plain model's keys. A load that leaves any backbone tensor at its initialisation, or that finds tensors of
another architecture, is a one-line :class:`WeightsError` naming the file and the keys.
"""

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

#: files of a Hugging Face snapshot folder, in order of preference
SNAPSHOT_FILES = ("model.safetensors", "pytorch_model.bin")
#: keys that wrap a state dict (DeiT / Swin releases: ``model``; Lightning: ``state_dict``)
WRAPPER_KEYS = ("state_dict", "model", "module")
#: prefixes that wrappers put on every key (DistributedDataParallel: ``module.``; a LightningModule's
#: ``self.model``: ``model.``)
KEY_PREFIXES = ("module.", "model.")
#: how timm's ``features_only`` wrapper flattens a top-level Sequential: ``layers.0.`` -> ``layers_0.``
FLATTENED = re.compile(r"^(layers|stages)_(\d+)\.")
HELP = "README.md, 'Your data, your weights'"


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the network (one line: file, problem, fix)."""


class WeightsNotFoundError(FileNotFoundError):
    """A weights path that does not exist (wsss never downloads weights)."""


class LightningState(dict):
    """A state dict read from a Lightning checkpoint (a failed load then hints at ``--ckpt_path``)."""


def counted(keys: list[str]) -> list[str]:
    """The keys that count as weights: all but BatchNorm's step counters (torch never reports them)."""
    return [k for k in keys if not k.endswith("num_batches_tracked")]


def abbreviate(keys: Sequence[str], shown: int = 3) -> str:
    """The first ``shown`` keys and how many more, e.g. ``a, b, c (+12 more)``."""
    head = ", ".join(keys[:shown])
    return f"{head} (+{len(keys) - shown} more)" if len(keys) > shown else head


def weights_path(weights: str | Path | None) -> Path | None:
    """The file to read for ``weights`` (a file, or the weights file inside a snapshot folder), or None."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if path.is_dir():
        candidates = [path / name for name in SNAPSHOT_FILES]
        candidates += sorted(path.glob(f"snapshots/*/{SNAPSHOT_FILES[0]}"))  # a hub cache folder models--*
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise WeightsNotFoundError(
                f"weights folder {path} holds no {' or '.join(SNAPSHOT_FILES)}: pass the checkpoint file "
                "itself, or a Hugging Face snapshot folder"
            )
        return found
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights file {path} does not exist; wsss never downloads weights: download them yourself (e.g. "
            f"from the timm / Hugging Face model page) and pass the local path, or pass no weights ({HELP})"
        )
    return path


def _load_any(path: Path) -> object:
    """The object stored in ``path``: safetensors, else a PyTorch pickle of tensors (weights_only)."""
    if path.suffix == ".safetensors":
        return load_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # training args saved by DeiT-style code
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as pickle_error:
        try:
            return load_file(path)  # a safetensors file under another suffix
        except Exception:
            raise pickle_error from None


def read_state_dict(weights: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file or snapshot folder, unwrapped, without the wrappers' key prefixes."""
    path = weights_path(weights)
    try:
        state = _load_any(path)
    except Exception as err:
        blocked = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if blocked:
            raise WeightsError(
                f"weights file {path} holds pickled Python objects besides tensors ({blocked[1]}); if you "
                "trust it, save its state dict alone (torch.save(torch.load(f, weights_only=False)['model'], "
                "'clean.pth')) and pass that"
            ) from err
        lines = [line.strip() for line in str(err).split("WeightsUnpickler error:")[-1].splitlines()]
        reason = next((line for line in lines if line), type(err).__name__)
        raise WeightsError(
            f"weights file {path} cannot be read ({reason[:120]}): it is truncated, corrupt or not a "
            "PyTorch / safetensors checkpoint; download it again"
        ) from err
    lightning = isinstance(state, Mapping) and "pytorch-lightning_version" in state
    while isinstance(state, Mapping) and not any(isinstance(v, Tensor) for v in state.values()):
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)} if isinstance(state, Mapping) else {}
    if not tensors:
        found = f"keys {abbreviate(list(map(str, state)))}" if isinstance(state, Mapping) else type(state)
        raise WeightsError(
            f"weights file {path} holds no state dict of tensors (found {found}); pass a model checkpoint "
            f"({HELP})"
        )
    for prefix in KEY_PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
    tensors = {FLATTENED.sub(r"\1.\2.", k): v for k, v in tensors.items()}
    return LightningState(tensors) if lightning else tensors


@dataclass(frozen=True)
class LoadReport:
    """A load of ``path`` into ``model``: ``loaded`` of ``total`` tensors; ``new``: a classifier not in it."""

    path: Path
    model: str
    loaded: int
    total: int
    new: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.model}: {self.loaded}/{self.total} tensors loaded from {self.path}"
        return text + (f"; new classifier (not in the file): {abbreviate(self.new)}" if self.new else "")


def judge_load(
    path: Path, model: str, state: Mapping[str, Tensor], total: int, missing: Sequence[str],
    unexpected: Sequence[str], mismatched: Sequence[str] = (), head: Sequence[str] = (),
) -> LoadReport:
    """The report of a load, or a :class:`WeightsError` when any tensor outside the ``head`` prefixes was
    missing, unexpected or of another shape (``mismatched`` holds ``key: file shape vs model shape``)."""
    is_head = tuple(f"{h}." for h in head)
    lacking = [k for k in counted(list(missing)) if not k.startswith(is_head)]
    unexpected = counted(list(unexpected))
    if lacking or unexpected or mismatched:
        problems = []
        if lacking:
            problems.append(f"{len(lacking)} of the network's {total} tensors missing "
                            f"({abbreviate(lacking)})")
        if unexpected:
            problems.append(f"{len(unexpected)} tensor(s) it does not have ({abbreviate(unexpected)})")
        if mismatched:
            problems.append(f"{len(mismatched)} of another shape ({abbreviate(mismatched, 2)})")
        hint = (" It is a Lightning checkpoint of a whole run: continue that run with --ckpt_path (or "
                "`wsss resume`) instead." if isinstance(state, LightningState) else "")
        raise WeightsError(
            f"weights file {path} does not fit {model}: {'; '.join(problems)}. Pass a checkpoint of {model} "
            f"({HELP}), or no weights to start from scratch.{hint}"
        )
    new = tuple(k for k in missing if k.startswith(is_head))
    return LoadReport(path, model, total - len(new), total, new)


def load_strictly(module: nn.Module, weights: str | Path, name: str, head: Sequence[str] = ()) -> LoadReport:
    """Load a weights file into ``module`` (keys under ``head`` may be absent from it or left out of the
    network) and return the report; anything else missing, extra or mis-shaped is a :class:`WeightsError`."""
    path = weights_path(weights)
    state = read_state_dict(path)
    is_head = tuple(f"{h}." for h in head)
    own = module.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(is_head)}
    mismatched = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and v.shape != own[k].shape]
    missing = [k for k in counted(list(own)) if k not in state]
    unexpected = [k for k in state if k not in own]
    report = judge_load(path, name, state, len(counted(list(own))), missing, unexpected, mismatched, head)
    nn.Module.load_state_dict(module, state, strict=False)  # smp encoders override it without ``strict``
    return report


def weights_reports(module: nn.Module) -> list[LoadReport]:
    """The load reports of every sub-network of ``module`` built from a weights file."""
    reports = (getattr(m, "weights_report", None) for m in module.modules())
    return [report for report in reports if isinstance(report, LoadReport)]
