"""Official MCTformer checkpoints (xulianuwa/MCTformer@9606597, V1 and V2) in the layout of wsss's MCTformer.

The official model keeps its C class tokens in ``cls_token`` (1, C, D) and one position table ``pos_embed``
(1, C + N, D), class slots first; its patch embedding and blocks use timm's names, and V2's 3×3 Patch-CAM conv
is ``head``. wsss keeps the class tokens and the two parts of the table as ``net.class_tokens``,
``net.class_pos_embed`` and ``net.patch_pos_embed``, the timm modules under ``net.vit.`` and the Patch-CAM
conv as ``patch_head``. V1's ``head`` (a Linear or Conv1d that its forward never uses) and the final ``norm``
(skipped by both official forwards) have no counterpart and are dropped. Files are read as every weights
file is (:mod:`wsss.models.weights`: ``{"model": ...}`` as main.py saves it, a ``module.`` prefix, ...).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from wsss.models.weights import LoadReport, load_converted

UNUSED = ("norm.weight", "norm.bias")


def official_version(state: Mapping[str, Tensor]) -> Literal["v1", "v2"]:
    """"v2" when the state dict has V2's 3×3 Patch-CAM conv ``head``, else "v1"."""
    if "cls_token" not in state or "pos_embed" not in state:
        raise ValueError("not an official MCTformer state dict: it has no cls_token / pos_embed")
    head = state.get("head.weight")
    return "v2" if head is not None and head.ndim == 4 else "v1"


def wsss_name(name: str, version: Literal["v1", "v2"]) -> str | None:
    """The wsss MCTformer key of an official key, None where wsss has no counterpart (V1 head, final norm).

    ``pos_embed`` is split in two (:func:`convert_official_state_dict`) and has no single name.
    """
    if name == "cls_token":
        return "net.class_tokens"
    if name.startswith(("patch_embed.", "blocks.")):
        return f"net.vit.{name}"
    if name.startswith("head."):
        return f"patch_head.{name.removeprefix('head.')}" if version == "v2" else None
    if name in UNUSED:
        return None
    raise ValueError(f"unexpected key {name!r} in an official MCTformer state dict")


def convert_official_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The wsss MCTformer state dict (``net.*``, ``patch_head.*``) of an official V1/V2 state dict."""
    version = official_version(state)
    num_classes = state["cls_token"].shape[1]
    converted = {
        "net.class_pos_embed": state["pos_embed"][:, :num_classes],
        "net.patch_pos_embed": state["pos_embed"][:, num_classes:],
    }
    for name, tensor in state.items():
        target = None if name == "pos_embed" else wsss_name(name, version)
        if target is not None:
            converted[target] = tensor
    return converted


def load_official_checkpoint(model: nn.Module, path: str | Path) -> LoadReport | None:
    """Load an official MCTformer V1/V2 checkpoint file into a wsss MCTformer of the same version and size,
    strictly; the report is kept as ``model.weights_report`` (None: nothing read, see
    :func:`~wsss.models.weights.load_converted`)."""
    model_version = "v2" if getattr(model, "patch_head", None) is not None else "v1"

    def convert(state: dict[str, Tensor]) -> dict[str, Tensor]:
        version = official_version(state)
        if state["cls_token"].shape[1] == 1 < model.net.num_classes:
            raise ValueError("one class token: an ImageNet ViT / DeiT, pass it as `weights`")
        if version != model_version:
            raise ValueError(f"an official MCTformer-{version.upper()} checkpoint; build the model with "
                             f"version={version!r}")
        return convert_official_state_dict(state)

    report = load_converted(
        model, path, convert, f"MCTformer-{model_version.upper()}",
        fix="Pass the checkpoint.pth that the official main.py saved, to a model built like it (version, "
            "num_classes, backbone size, img_size).",
        missing_fix="pass the path of the checkpoint.pth that the official main.py saved",
    )
    if report is not None:
        model.weights_report = report
        rank_zero_info(f"wsss: weights {report}")
    return report
