"""Backbones from timm, with pretrained weights read only from a local file and loaded strictly."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import timm
from lightning.pytorch.utilities import rank_zero_info
from timm.models import _builder as timm_builder
from torch import nn

from wsss.models.weights import WeightsError, counted, judge_load, read_state_dict, weights_path

#: how torch reports a tensor of another shape in a state dict
SIZE_MISMATCH = re.compile(
    r"size mismatch for ([\w.]+): copying a param with shape torch.Size\((\[[\d, ]*\])\) from checkpoint, "
    r"the shape in current model is torch.Size\((\[[\d, ]*\])\)"
)
#: a plain model's key as timm's ``features_only`` wrapper names it: ``layers.0.`` -> ``layers_0.``
UNFLATTENED = re.compile(r"^(layers|stages)\.(\d+)\.")


@contextmanager
def _timm_loads_from(state: dict, path: Path, name: str, seen: dict) -> Iterator[None]:
    """While active, timm's pretrained loading reads ``state`` (through its own checkpoint filter, stem and
    head adaptation) and records the keys that did not load in ``seen`` instead of failing or warning.

    timm keeps the model-specific checkpoint filter (e.g. Microsoft's Swin layout) inside
    ``build_model_with_cfg`` and loads non-strictly whenever it drops the classifier, without returning what
    was missing; wrapping its ``load_pretrained`` is the one place where the model and the load result meet.
    """
    original = timm_builder.load_pretrained

    def load_and_record(model: nn.Module, pretrained_cfg: dict, *args, **kwargs) -> None:
        def record(module: nn.Module, incompatible) -> None:
            seen["missing"] = list(incompatible.missing_keys)
            seen["unexpected"] = list(incompatible.unexpected_keys)
            incompatible.missing_keys.clear()  # judged once the network is built, with the head allowed new
            incompatible.unexpected_keys.clear()

        head = pretrained_cfg.get("classifier") or ()
        seen["head"] = (head,) if isinstance(head, str) else tuple(head)
        hook = model.register_load_state_dict_post_hook(record)
        try:
            original(model, {**pretrained_cfg, "state_dict": state}, *args, **kwargs)
        except RuntimeError as err:  # shapes that do not fit: torch lists them after the key check
            mismatched = [f"{m[1]}: {m[2]} vs {m[3]}" for m in SIZE_MISMATCH.finditer(str(err))]
            if not mismatched:
                first = (str(err).splitlines() or [""])[0]
                raise WeightsError(f"weights file {path} does not fit {name}: {first}") from err
            total = len(counted(list(model.state_dict())))
            missing, unexpected = seen.get("missing", []), seen.get("unexpected", [])
            judge_load(path, name, state, total, missing, unexpected, mismatched)  # raises: shapes differ
            raise
        except Exception as err:  # inside timm's checkpoint filter or stem adaptation
            first = (str(err).splitlines() or [""])[0]
            raise WeightsError(
                f"weights file {path} does not fit {name}: timm's conversion of it failed "
                f"({type(err).__name__}: {first}). Pass a checkpoint of {name}, or no weights"
            ) from err
        finally:
            hook.remove()

    with mock.patch.object(timm_builder, "load_pretrained", load_and_record):
        yield


def create_timm_model(name: str, weights: str | Path | None = None, **kwargs) -> nn.Module:
    """``timm.create_model`` that loads ``weights`` from a local file (adapting stem and head) or none.

    The load is strict: only the classifier head (re-initialised for another class count) and parts that a
    ``features_only`` network drops may be absent from the file; anything else missing, extra or of another
    shape is a one-line :class:`~wsss.models.weights.WeightsError`. The returned network carries its
    :class:`~wsss.models.weights.LoadReport` as ``weights_report``.
    """
    path = weights_path(weights)
    if path is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    state, seen = read_state_dict(path), {}
    with _timm_loads_from(state, path, name, seen):
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    final = model.state_dict()
    missing = [k for k in seen["missing"] if k in final or UNFLATTENED.sub(r"\1_\2.", k) in final]
    total = len(counted(list(final)))
    report = judge_load(path, name, state, total, missing, seen["unexpected"], head=seen["head"])
    model.weights_report = report
    rank_zero_info(f"wsss: weights {report}")
    return model


def create_cnn_features(
    name: str, in_channels: int = 3, output_stride: int = 16, weights: str | Path | None = None
) -> nn.Module:
    """A timm CNN returning its last feature map at ``output_stride`` (dilated last stages)."""
    return create_timm_model(
        name,
        weights,
        in_chans=in_channels,
        features_only=True,
        output_stride=output_stride,
        out_indices=(-1,),
    )
