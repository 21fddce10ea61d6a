"""Official sparse-vit-wsss weights (HSG-AIML/sparse-vit-wsss@61e7c70, lucidrains-style ViT/MViT) -> wsss.

The official ``Transformer`` stores block ``i`` as ``layers.i.0`` (PreNorm + gated attention) and
``layers.i.1`` (PreNorm + MLP), q/k/v in one bias-free ``to_qkv`` whose rows already follow timm's
3 x heads x head_dim split, and each layer's gate as ``fn.gate.log_a`` of shape (1, heads, 1, 1). The patch
embeddings are Linear layers over patches flattened as (row, column, channel), the same map as a strided
convolution whose weight is ``weight.view(D, p, p, C).permute(0, 3, 1, 2)``. ``mlp_head`` (LayerNorm, Linear)
on the [CLS] token is timm's final ``norm`` (a per-token LayerNorm) followed by ``head``. Files are read as
every weights file is (:mod:`wsss.models.weights`: a bare state dict, a Lightning checkpoint's ...).
"""

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from wsss.models.weights import LoadReport, load_converted

BLOCK_KEYS = {
    "0.norm": "norm1",
    "0.fn.to_qkv": "attn.qkv",
    "0.fn.to_out.0": "attn.proj",
    "1.norm": "norm2",
    "1.fn.net.0": "mlp.fc1",
    "1.fn.net.3": "mlp.fc2",
}
BLOCK_KEY = re.compile(r"^layers\.(\d+)\.(.+)\.(weight|bias|log_a)$")


def official_transformer_state_dict(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
    """An official ``Transformer`` state dict (``layers.*``) -> timm ``blocks.*`` keys, and the gates'
    ``log_alpha`` as (layers, heads) (None when the official model was built without ``prune``)."""
    blocks: dict[str, Tensor] = {}
    gates: dict[int, Tensor] = {}
    for key, value in state.items():
        match = BLOCK_KEY.match(key)
        if match is None:
            raise ValueError(f"official transformer state dict: unexpected key {key!r} (expected layers.i.*)")
        index, module, kind = int(match[1]), match[2], match[3]
        if module == "0.fn.gate":
            gates[index] = value.flatten()
        elif module in BLOCK_KEYS:
            blocks[f"blocks.{index}.{BLOCK_KEYS[module]}.{kind}"] = value
        else:
            raise ValueError(f"official transformer state dict: unknown module in {key!r}")
    log_alpha = torch.stack([gates[i] for i in sorted(gates)]) if gates else None
    return blocks, log_alpha


def patch_linear_to_conv(weight: Tensor, patch_size: int) -> Tensor:
    """An official (D, p*p*C) patch Linear weight as the (D, C, p, p) weight of the equivalent convolution."""
    dim, patch_dim = weight.shape
    channels, rest = divmod(patch_dim, patch_size * patch_size)
    if rest:
        raise ValueError(f"a patch embedding of width {patch_dim} does not fit patch size {patch_size}")
    return weight.reshape(dim, patch_size, patch_size, channels).permute(0, 3, 1, 2).contiguous()


def official_sparse_vit_state_dict(state: Mapping[str, Tensor], patch_size: int) -> dict[str, Tensor]:
    """An official ``ViT`` / ``MViT`` state dict -> the state dict of :class:`wsss.methods.SparseViT`.

    MViT's ``m1`` / ``m2`` embeddings become the first / second modality projections (S1 then S2, the order
    the DFC2020 DataModule stacks them); a single-modality ViT's ``to_patch_embedding`` the only one. The
    gates (if any) go to ``gates.gate.log_alpha``.
    """
    embeddings = sorted(k for k in state if re.fullmatch(r"(m\d_)?to_patch_embedding\.1\.weight", k))
    if not embeddings:
        raise ValueError("not an official sparse-vit-wsss ViT/MViT state dict (no *to_patch_embedding.1.*)")
    out = {"vit.cls_token": state["cls_token"], "vit.pos_embed": state["pos_embedding"],
           "vit.norm.weight": state["mlp_head.0.weight"], "vit.norm.bias": state["mlp_head.0.bias"],
           "vit.head.weight": state["mlp_head.1.weight"], "vit.head.bias": state["mlp_head.1.bias"]}
    for m, key in enumerate(embeddings):
        prefix = f"vit.patch_embed.proj.projections.{m}"
        out[f"{prefix}.weight"] = patch_linear_to_conv(state[key], patch_size)
        out[f"{prefix}.bias"] = state[key.replace("weight", "bias")]
    transformer = {k[len("transformer."):]: v for k, v in state.items() if k.startswith("transformer.")}
    blocks, log_alpha = official_transformer_state_dict(transformer)
    out |= {f"vit.{k}": v for k, v in blocks.items()}
    if log_alpha is not None:
        out["gates.gate.log_alpha"] = log_alpha
    return out


def load_official_sparse_vit(model: torch.nn.Module, weights: str | Path | Mapping) -> LoadReport | None:
    """Load an official sparse-vit-wsss checkpoint (a file or snapshot folder, or a state dict in memory: the
    model's, or the Lightning module's with its ``model.`` prefix) into a :class:`wsss.methods.SparseViT`
    built with the same shape, strictly; the report is kept as ``model.weights_report``.

    Build the SparseViT like the official model: same image size, patch, width, depth, heads and gates;
    keep ``qkv_bias=False`` and ``norm_eps=1e-5`` (the defaults).
    """
    def convert(state: dict[str, Tensor]) -> dict[str, Tensor]:
        state = {k.removeprefix("model."): v for k, v in state.items()}
        converted = official_sparse_vit_state_dict(state, model.vit.patch_embed.patch_size[0])
        if model.gates is None:
            converted.pop("gates.gate.log_alpha", None)
        return converted

    report = load_converted(
        model, weights, convert, "SparseViT",
        fix="Build it like the official model (image size, patch, width, depth, heads, head_gates, "
            "qkv_bias=False) and pass an official sparse-vit-wsss ViT/MViT checkpoint.",
    )
    if report is not None:
        model.weights_report = report
        rank_zero_info(f"wsss: weights {report}")
    return report
