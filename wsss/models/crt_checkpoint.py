"""Official CRT / TS-CAM checkpoints (``huodongjian0603/crt``, ``vasgaowei/TS-CAM``) as wsss state dicts."""

from collections.abc import Mapping

from torch import Tensor

# the official CNN ``Net`` registers its ResNet modules a second time under these names
_CNN_ALIASES = ("stage1.", "stage2.", "stage3.", "stage4.", "backbone.", "newly_added.")


def _unwrap(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of a checkpoint, without a ``state_dict`` / ``model`` wrapper or a DataParallel prefix."""
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def tscam_to_crt_transformer(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official TS-CAM / CRT DeiT state dict (``net/deit_cam.TSCAM``) for :class:`CRTTransformer`.

    The ViT's names are timm's, so they gain the ``vit.`` prefix; the Conv3x3 CAM head stays ``head.*``.
    """
    state = _unwrap(state)
    return {(k if k.startswith("head.") else f"vit.{k}"): v for k, v in state.items()}


def irn_resnet_to_crt_cnn(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official CRT CNN state dict (``net/resnet50_cam.Net``: ``resnet50.*`` + ``classifier.weight``) for
    :class:`~wsss.methods.crt.CRT`'s ``cnn.*`` and ``cnn_classifier.weight``; the aliases are dropped."""
    out = {}
    for key, value in _unwrap(state).items():
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

    Load it with ``model.load_state_dict(state, strict=False)`` when only one branch is given.
    """
    out = irn_resnet_to_crt_cnn(cnn_state) if cnn_state is not None else {}
    if deit_state is not None:
        out |= {f"transformer.{k}": v for k, v in tscam_to_crt_transformer(deit_state).items()}
    return out
