"""Official MCTformer checkpoints (xulianuwa/MCTformer@9606597, V1 and V2) in the layout of wsss's MCTformer.

The official model keeps its C class tokens in ``cls_token`` (1, C, D) and one position table ``pos_embed``
(1, C + N, D), class slots first; its patch embedding and blocks use timm's names, and V2's 3×3 Patch-CAM conv
is ``head``. wsss keeps the class tokens and the two parts of the table as ``net.class_tokens``,
``net.class_pos_embed`` and ``net.patch_pos_embed``, the timm modules under ``net.vit.`` and the Patch-CAM
conv as ``patch_head``. V1's ``head`` (a Linear or Conv1d that its forward never uses) and the final ``norm``
(skipped by both official forwards) have no counterpart and are dropped.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

UNUSED = ("norm.weight", "norm.bias")


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict in an official checkpoint file: ``{"model": ...}`` as main.py saves it, or bare."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"official MCTformer checkpoint {path} does not exist; pass the path of the "
                                "checkpoint.pth that the official main.py saved")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    return {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP-wrapped model


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


def load_official_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load an official MCTformer V1/V2 checkpoint file into a wsss MCTformer of the same version and size."""
    state = read_official_checkpoint(path)
    version = official_version(state)
    own = model.state_dict()
    model_version = "v2" if "patch_head.weight" in own else "v1"
    if version != model_version:
        raise ValueError(f"{path} is an official MCTformer-{version.upper()} checkpoint; build the model "
                         f"with version={version!r}")
    converted = convert_official_state_dict(state)
    for key, tensor in converted.items():
        if key in own and own[key].shape != tensor.shape:
            raise ValueError(
                f"{path}: {key} is {tuple(tensor.shape)} in the checkpoint but {tuple(own[key].shape)} in "
                "the model; build it with the checkpoint's num_classes, backbone size and img_size"
            )
    model.load_state_dict(converted, strict=True)
