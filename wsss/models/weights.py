"""Local weight files: reading every common release layout, and judging a load strictly.

A weights argument is a checkpoint file (PyTorch pickle or safetensors) or a Hugging Face snapshot folder
(``model.safetensors`` / ``pytorch_model.bin``). The tensors may be wrapped the usual ways (``{'model': …}``
as DeiT and Swin release them, ``{'state_dict': …}`` as Lightning saves them, every key prefixed ``module.``
or ``model.``); a timm ``features_only`` state dict (``layers_N.`` / ``stages_N.`` keys) is renamed to the
plain model's keys. A load that leaves any backbone tensor at its initialisation, or that finds tensors of
another architecture, is a one-line :class:`WeightsError` naming the file and the keys. Official checkpoints
of other layouts go through the same reader and judgement with a key converter (:func:`load_converted`).

A network restored from a checkpoint (``--ckpt_path``, ``load_from_checkpoint``) is built without reading its
initial weights files (:func:`restoring_checkpoint`): the checkpoint overwrites every tensor, and the files
may have moved since.
"""

import argparse
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
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
#: what to do about a weights file that does not exist
DOWNLOAD_FIX = (
    "wsss never downloads weights: download them yourself (e.g. from the timm / Hugging Face model page) and "
    f"pass the local path, or pass no weights ({HELP})"
)
#: set while a checkpoint is about to restore every tensor (:func:`restoring_checkpoint`)
_RESTORING = ContextVar("restoring_checkpoint", default=False)


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


@contextmanager
def restoring_checkpoint() -> Iterator[None]:
    """While active, :func:`weights_path` gives None: networks are built without their initial weights files,
    because a checkpoint is about to restore every tensor (those files may have moved since the run)."""
    token = _RESTORING.set(True)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def weights_path(weights: str | Path | None, missing_fix: str = DOWNLOAD_FIX) -> Path | None:
    """The file to read for the initial ``weights`` of a network (:func:`weights_file`), or None (no weights,
    or while :func:`restoring_checkpoint`)."""
    if weights is None or _RESTORING.get():
        return None
    return weights_file(weights, missing_fix)


def weights_file(weights: str | Path, missing_fix: str = DOWNLOAD_FIX) -> Path:
    """The file ``weights`` names (the file, or the weights file inside a snapshot folder); ``missing_fix``
    ends the error of a missing file."""
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
        raise WeightsNotFoundError(f"weights file {path} does not exist; {missing_fix}")
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


def source(path: Path | None) -> str:
    """How messages name where a state dict came from: its file, or ``the state dict`` given in memory."""
    return "the state dict" if path is None else f"weights file {path}"


def read_state_dict(weights: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file or snapshot folder, unwrapped (:func:`unwrap_state_dict`)."""
    path = weights_file(weights)
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
    return unwrap_state_dict(state, path)


def unwrap_state_dict(state: object, path: Path | None = None) -> dict[str, Tensor]:
    """The tensors of a loaded checkpoint (read from ``path``), without the wrappers (:data:`WRAPPER_KEYS`)
    and the prefixes every key shares (:data:`KEY_PREFIXES`); ``layers_N.`` keys renamed ``layers.N.``."""
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
            f"{source(path)} holds no state dict of tensors (found {found}); pass a model checkpoint ({HELP})"
        )
    for prefix in KEY_PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
    tensors = {FLATTENED.sub(r"\1.\2.", k): v for k, v in tensors.items()}
    return LightningState(tensors) if lightning else tensors


@dataclass(frozen=True)
class LoadReport:
    """A load of ``path`` (None: a state dict in memory) into ``model``: ``loaded`` of ``total`` tensors;
    ``new``: a classifier not in it."""

    path: Path | None
    model: str
    loaded: int
    total: int
    new: tuple[str, ...] = ()

    def __str__(self) -> str:
        origin = "a state dict in memory" if self.path is None else self.path
        text = f"{self.model}: {self.loaded}/{self.total} tensors loaded from {origin}"
        return text + (f"; new classifier (not in the file): {abbreviate(self.new)}" if self.new else "")


def judge_load(
    path: Path | None, model: str, state: Mapping[str, Tensor], total: int, missing: Sequence[str],
    unexpected: Sequence[str], mismatched: Sequence[str] = (), head: Sequence[str] = (),
    fix: str | None = None,
) -> LoadReport:
    """The report of a load, or a :class:`WeightsError` when any tensor outside the ``head`` prefixes was
    missing, unexpected or of another shape (``mismatched`` holds ``key: file shape vs model shape``);
    ``fix`` (what to do) defaults to passing a checkpoint of ``model`` or none."""
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
        fix = fix or f"Pass a checkpoint of {model} ({HELP}), or no weights to start from scratch."
        hint = (" It is a Lightning checkpoint of a whole run: continue that run with --ckpt_path (or "
                "`wsss resume`) instead." if isinstance(state, LightningState) else "")
        raise WeightsError(f"{source(path)} does not fit {model}: {'; '.join(problems)}. {fix}{hint}")
    new = tuple(k for k in missing if k.startswith(is_head))
    return LoadReport(path, model, total - len(new), total, new)


def load_state(
    module: nn.Module, state: Mapping[str, Tensor], path: Path | None, name: str, head: Sequence[str] = (),
    fix: str | None = None,
) -> LoadReport:
    """Load ``state`` (read from ``path``) into ``module`` (keys under ``head`` may be absent from it or left
    out of the network) and return the report; anything else missing, extra or mis-shaped is a
    :class:`WeightsError` ending with ``fix`` (see :func:`judge_load`)."""
    is_head = tuple(f"{h}." for h in head)
    own = module.state_dict()
    kept = {k: v for k, v in state.items() if k in own or not k.startswith(is_head)}
    mismatched = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in kept.items()
                  if k in own and v.shape != own[k].shape]
    missing = [k for k in counted(list(own)) if k not in kept]
    unexpected = [k for k in kept if k not in own]
    total = len(counted(list(own)))
    report = judge_load(path, name, state, total, missing, unexpected, mismatched, head, fix)
    nn.Module.load_state_dict(module, kept, strict=False)  # smp encoders override it without ``strict``
    return report


def load_strictly(module: nn.Module, weights: str | Path, name: str, head: Sequence[str] = ()) -> LoadReport:
    """Read a weights file and load it into ``module`` with :func:`load_state`."""
    path = weights_file(weights)
    return load_state(module, read_state_dict(path), path, name, head)


def load_converted(
    module: nn.Module, weights: str | Path | Mapping | None, convert: Callable[[dict[str, Tensor]], Mapping],
    name: str, fix: str, missing_fix: str = DOWNLOAD_FIX,
) -> LoadReport | None:
    """Load an official checkpoint of another key layout into ``module``, strictly, and return the report.

    ``weights`` is a file or snapshot folder (read and unwrapped as any weights file; None while
    :func:`restoring_checkpoint`: nothing is read) or a state dict already in memory; ``convert`` maps its
    unwrapped tensors to ``module``'s keys (a pure function; its ``KeyError`` / ``ValueError`` means "not that
    official layout"). Every error is one :class:`WeightsError` line: the file, what is wrong, then ``fix``
    (``missing_fix`` for a file that does not exist).
    """
    if isinstance(weights, Mapping):
        path, state = None, unwrap_state_dict(weights)
    else:
        path = weights_path(weights, missing_fix)
        if path is None:
            return None
        state = read_state_dict(path)
    try:
        converted = convert(state)
    except WeightsError:
        raise
    except (KeyError, ValueError) as err:
        reason = err.args[0] if err.args else type(err).__name__
    else:
        return load_state(module, converted, path, name, fix=fix)
    # raised outside the handler, so that the command line reports this line and not the converter's alone
    raise WeightsError(f"{source(path)} does not convert to {name} ({reason}). {fix}")


def weights_reports(module: nn.Module) -> list[LoadReport]:
    """The load reports of every sub-network of ``module`` built from a weights file."""
    reports = (getattr(m, "weights_report", None) for m in module.modules())
    return [report for report in reports if isinstance(report, LoadReport)]
