"""Official CRT / TS-CAM checkpoints (``huodongjian0603/crt``, ``vasgaowei/TS-CAM``) as wsss state dicts.

The converters are pure functions of a state dict (wrappers and a DataParallel prefix removed as for every
weights file); :func:`load_official_crt` reads the files and loads each branch strictly.
"""

from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from wsss.models.weights import LoadReport, load_converted, unwrap_state_dict

# the official CNN ``Net`` registers its ResNet modules a second time under these names
_CNN_ALIASES = ("stage1.", "stage2.", "stage3.", "stage4.", "backbone.", "newly_added.")


def tscam_to_crt_transformer(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official TS-CAM / CRT DeiT state dict (``net/deit_cam.TSCAM``) for :class:`CRTTransformer`.

    The ViT's names are timm's, so they gain the ``vit.`` prefix; the Conv3x3 CAM head stays ``head.*``.
    """
    state = unwrap_state_dict(state)
    return {(k if k.startswith("head.") else f"vit.{k}"): v for k, v in state.items()}


def irn_resnet_to_crt_cnn(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official CRT CNN state dict (``net/resnet50_cam.Net``: ``resnet50.*`` + ``classifier.weight``) for
    :class:`~wsss.methods.crt.CRT`'s ``cnn.*`` and ``cnn_classifier.weight``; the aliases are dropped."""
    out = {}
    for key, value in unwrap_state_dict(state).items():
        if key.startswith(_CNN_ALIASES) or key.startswith("resnet50.fc."):
            continue
        if key.startswith("resnet50."):
            out["cnn." + key.removeprefix("resnet50.")] = value
        elif key.startswith("classifier."):
            out["cnn_" + key] = value
        else:
            raise KeyError(f"irn_resnet_to_crt_cnn: unexpected key {key!r} in an official CRT CNN checkpoint")
    return out


def official_crt_state_dict(
    cnn_state: Mapping[str, Tensor] | None = None, deit_state: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """A CRT state dict from the official ``cam1_weights_name`` (CNN) and ``cam2_weights_name`` (DeiT) files.

    Load it with ``model.load_state_dict(state, strict=False)`` when only one branch is given, or load the
    files with :func:`load_official_crt`.
    """
    out = irn_resnet_to_crt_cnn(cnn_state) if cnn_state is not None else {}
    if deit_state is not None:
        out |= {f"transformer.{k}": v for k, v in tscam_to_crt_transformer(deit_state).items()}
    return out


def load_official_crt(
    model: nn.Module, cnn_checkpoint: str | Path | Mapping | None = None,
    deit_checkpoint: str | Path | Mapping | None = None,
) -> list[LoadReport]:
    """Load the official CNN (``cam1_weights_name``) and / or DeiT (``cam2_weights_name``) checkpoint (files,
    snapshot folders or state dicts in memory) into a :class:`~wsss.methods.crt.CRT` of the same sizes, each
    branch strictly; each branch keeps its report (``model.cnn`` / ``model.transformer``)."""
    fix = "Build the CRT like the official one (backbones, num_classes) and pass that branch's checkpoint."
    branches = []
    if cnn_checkpoint is not None:  # the CNN and its classifier, keyed ``cnn.*`` / ``cnn_classifier.*``
        cnn = nn.ModuleDict({"cnn": model.cnn, "cnn_classifier": model.cnn_classifier})
        branches.append((cnn, model.cnn, cnn_checkpoint, irn_resnet_to_crt_cnn, "CRT's CNN branch"))
    if deit_checkpoint is not None:
        branches.append((model.transformer, model.transformer, deit_checkpoint, tscam_to_crt_transformer,
                         "CRT's DeiT branch"))
    reports = []
    for target, holder, checkpoint, convert, name in branches:
        report = load_converted(target, checkpoint, convert, name, fix=fix)
        if report is not None:
            holder.weights_report = report
            rank_zero_info(f"wsss: weights {report}")
            reports.append(report)
    return reports
