"""Parity with the official MCTformer V1/V2 (xulianuwa/MCTformer@9606597) on its golden outputs.

The fixture and its notes are ``tests/data/parity/mctformer.{pt,md}``: random weights under the official key
names, the inputs, and what the official code computed. The official weights go through the converter that
users call (:mod:`wsss.models.mct_official`). The final multi-scale / flip CAM fusion (``*/final``) is
pinned by the fusion tests, not here; the per-view maps that enter it are.
"""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from wsss.methods.bitrans import BiTrans
from wsss.methods.mctformer import MCTformer
from wsss.methods.optim import exempt_from_weight_decay
from wsss.models.mct_official import convert_official_state_dict, load_official_checkpoint, wsss_name
from wsss.models.mct_vit import (
    class_maps,
    class_patch_attention,
    interpolate_pos_official,
    patch_patch_attention,
)

FIXTURE = Path(__file__).parent / "data/parity/mctformer.pt"
TINY = dict(backbone="deit_small_patch16_224", backbone_kwargs=dict(embed_dim=64, depth=4, num_heads=4),
            num_classes=20, drop_path_rate=0.0, cam_layers=3, affinity_layers=None)
TOL = 1e-5  # max|wsss - ref| / max|ref|, the .md's tolerance for maps, logits and gradients


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def official_state(ref: dict, version: str) -> dict[str, torch.Tensor]:
    prefix = f"{version}/state_dict/"
    return {k.removeprefix(prefix): v.clone() for k, v in ref.items() if k.startswith(prefix)}


def build(ref: dict, version: str, **kwargs) -> MCTformer:
    model = MCTformer(version=version, **TINY, **kwargs)
    model.load_state_dict(convert_official_state_dict(official_state(ref, version)), strict=True)
    return model.eval()


def images(ref: dict, key: str = "images_int8") -> torch.Tensor:
    return ref[key].float() / ref["images_step"]


def rel(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).abs().max() / reference.abs().max()).item()


def view_maps(model: MCTformer, views: list[torch.Tensor], refine: bool) -> list[torch.Tensor]:
    """The raw map of each view (V2 fused / V1 class attention, optionally affinity-refined)."""
    maps = []
    with torch.no_grad():
        for view in views:
            output, _, patch_cam = model.forward_heads(view)
            maps.append(class_maps(output, 20, 3, patch_cam, None, refine)[0])
    return maps


# --- the converter --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_converter_fills_every_wsss_tensor_and_drops_only_unused_official_ones(ref, version):
    state = official_state(ref, version)
    converted = convert_official_state_dict(state)
    model = MCTformer(version=version, **TINY)
    assert set(converted) == set(model.state_dict())
    dropped = {k for k in state if k != "pos_embed" and wsss_name(k, version) is None}
    unused_head = {"head.weight", "head.bias"} if version == "v1" else set()
    assert dropped == {"norm.weight", "norm.bias"} | unused_head
    assert torch.equal(converted["net.class_tokens"], state["cls_token"])
    assert torch.equal(torch.cat([converted["net.class_pos_embed"], converted["net.patch_pos_embed"]], 1),
                       state["pos_embed"])


def test_official_checkpoint_file_loads_through_the_method(ref, tmp_path):
    state = official_state(ref, "v2")
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)  # main.py's format, under DDP
    model = MCTformer(version="v2", official_checkpoint=str(path), **TINY)
    assert torch.equal(model.patch_head.weight, state["head.weight"])
    assert torch.equal(model.net.vit.blocks[3].mlp.fc2.bias, state["blocks.3.mlp.fc2.bias"])
    bitrans = BiTrans(official_checkpoint=str(path), **TINY)
    assert torch.equal(bitrans.net.patch_pos_embed, state["pos_embed"][:, 20:])


def test_official_checkpoint_errors_name_the_fix(ref, tmp_path):
    path = tmp_path / "v1.pth"
    torch.save({"model": official_state(ref, "v1")}, path)
    with pytest.raises(ValueError, match="MCTformer-V1 checkpoint; build the model with version='v1'"):
        MCTformer(version="v2", official_checkpoint=str(path), **TINY)
    with pytest.raises(ValueError, match=r"v1\.pth does not fit MCTformer-V1: 2 of another shape "
                       r"\(net\.class_pos_embed: \(1, 20, 64\) vs \(1, 10, 64\)"):
        MCTformer(version="v1", official_checkpoint=str(path), **(TINY | dict(num_classes=10)))
    with pytest.raises(ValueError, match="not both"):
        MCTformer(weights=str(path), official_checkpoint=str(path), **TINY)
    with pytest.raises(FileNotFoundError, match=r"checkpoint\.pth that the official main\.py saved"):
        load_official_checkpoint(MCTformer(**TINY), tmp_path / "missing.pth")


# --- forward: logits, Patch-CAM, attention, affinity ----------------------------------------------

def test_v1_logits_class_attention_and_affinity(ref):
    model = build(ref, "v1")
    with torch.no_grad():
        output, logits, patch_cam = model.forward_heads(images(ref))
    assert patch_cam is None
    assert rel(logits, ref["v1/logits"]) <= TOL
    assert rel(class_patch_attention(output.attentions, 20, 3), ref["v1/class_attn"]) <= TOL
    assert rel(patch_patch_attention(output.attentions, 20, None), ref["affinity"]) <= TOL


def test_v2_logits_patch_cam_fused_and_class_attention(ref):
    model = build(ref, "v2")
    with torch.no_grad():
        output, logits, patch_cam = model.forward_heads(images(ref))
    assert rel(logits, ref["v2/logits"]) <= TOL
    assert rel(patch_cam, ref["v2/patch_cam"]) <= TOL
    assert rel(patch_cam.mean((2, 3)), ref["v2/patch_logits"]) <= TOL
    assert rel(class_maps(output, 20, 3, patch_cam), ref["v2/fused"]) <= TOL
    assert rel(class_maps(output, 20, 3), ref["v2/class_attn"]) <= TOL
    assert rel(patch_patch_attention(output.attentions, 20, None), ref["affinity"]) <= TOL


# --- training: losses and gradients ---------------------------------------------------------------

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_losses_and_gradients(ref, version):
    model = build(ref, version).train()  # dropout and drop-path are 0, as in the official run
    losses = model.training_losses({"image": images(ref), "cls_labels": ref["labels"]})
    assert losses["loss"].item() == pytest.approx(ref[f"{version}/loss"].item(), rel=1e-6)
    assert losses["cls"].item() == pytest.approx(ref[f"{version}/loss_cls"].item(), rel=1e-6)
    if version == "v2":
        assert losses["patch_cls"].item() == pytest.approx(ref["v2/loss_patch"].item(), rel=1e-6)
    losses["loss"].backward()
    net = model.net
    grads = {
        "cls_token": net.class_tokens.grad,
        "pos_embed": torch.cat([net.class_pos_embed.grad, net.patch_pos_embed.grad], dim=1),
        "patch_embed.proj.bias": net.vit.patch_embed.proj.bias.grad,
        "blocks.0.attn.qkv.weight": net.vit.blocks[0].attn.qkv.weight.grad,
    }
    if version == "v2":
        grads |= {"head.weight": model.patch_head.weight.grad, "head.bias": model.patch_head.bias.grad}
    for name, grad in grads.items():
        assert rel(grad, ref[f"{version}/grad/{name}"]) <= TOL, name


# --- CAM generation: the per-view maps of generate_attention_maps_ms ------------------------------

@pytest.mark.parametrize(("version", "case", "refine"), [
    ("v2", "cam_s1", True), ("v1", "cam_s1", True), ("v2", "cam_s1_unrefined", False),
])
def test_scale_one_view_maps(ref, version, case, refine):
    image = images(ref)[:1]
    maps = torch.stack(view_maps(build(ref, version), [image, image.flip(-1)], refine))
    assert rel(maps, ref[f"{version}/{case}/views"]) <= TOL


def multiscale_views(image: torch.Tensor, scales) -> list[torch.Tensor]:
    """Each scale (torch bilinear resize, as the fixture's views were made) followed by its flip."""
    views = []
    for scale in scales:
        scaled = image if scale == 1.0 else F.interpolate(image, scale_factor=scale, mode="bilinear")
        views += [scaled, scaled.flip(-1)]
    return views


def test_multiscale_view_maps_with_the_official_position_interpolation(ref):
    views = multiscale_views(images(ref)[:1], ref["v2/cam_ms/scales"].tolist())
    maps = view_maps(build(ref, "v2"), views, refine=True)
    for i, view_map in enumerate(maps):
        assert rel(view_map, ref[f"v2/cam_ms/view{i}"]) <= TOL, i
    timm_maps = view_maps(build(ref, "v2", pos_interp="timm"), views, refine=True)
    assert rel(timm_maps[0], ref["v2/cam_ms/view0"]) <= TOL  # 14×14: the table is used as it is
    assert rel(timm_maps[2], ref["v2/cam_ms/view2"]) > 0.05  # 7×7: timm's exact-size antialiased resize


# --- position-table interpolation (gap 4) ---------------------------------------------------------

@pytest.mark.parametrize(("size", "grid"), [("320x480", (20, 30)), ("375x500", (23, 31))])
def test_official_position_interpolation_and_the_timm_switch(ref, size, grid):
    table = ref["v2/state_dict/pos_embed"][:, 20:]
    expected = ref[f"pos_interp/{size}"]
    assert rel(interpolate_pos_official(table, (14, 14), grid), expected) <= TOL
    official, timm = build(ref, "v2").net, build(ref, "v2", pos_interp="timm").net
    assert rel(official.patch_position_table(grid, square_image=False), expected) <= TOL
    resampled = timm.patch_position_table(grid, square_image=False)
    assert torch.equal(resampled, resample_abs_pos_embed(table, grid, (14, 14), num_prefix_tokens=0))
    assert rel(resampled, expected) > 0.05  # the documented difference (0.14 and 0.13 of the table's max)


def test_official_interpolation_keeps_the_table_only_for_a_square_image_with_the_training_grid(ref):
    net = build(ref, "v2").net
    assert net.patch_position_table((14, 14), square_image=True) is net.patch_pos_embed
    shifted = net.patch_position_table((14, 14), square_image=False)  # e.g. a 224×230 image: resampled
    assert torch.equal(shifted, interpolate_pos_official(net.patch_pos_embed, (14, 14), (14, 14)))
    assert not torch.equal(shifted, net.patch_pos_embed)


# --- a 375×500 input (gap 2) ----------------------------------------------------------------------

def test_375x500_input_matches_the_official_crop(ref):
    model = build(ref, "v2")
    image = images(ref, "x375/image_int8")
    with torch.no_grad():
        output, logits, patch_cam = model.forward_heads(image)
    assert output.grid == (23, 31)
    assert rel(logits, ref["x375/v2/logits"]) <= TOL
    assert rel(patch_cam.mean((2, 3)), ref["x375/v2/patch_logits"]) <= TOL
    assert rel(class_maps(output, 20, 3, patch_cam), ref["x375/v2/fused"]) <= TOL
    # the flipped view is the flip of the full image, then cropped (it sees original columns 4-499)
    views = torch.stack(view_maps(model, [image, image.flip(-1)], refine=True))
    assert rel(views, ref["x375/v2/cam_views"]) <= TOL


def test_375x500_validation_and_prediction_through_the_method(ref):
    model = build(ref, "v2", affinity_refine=True)
    image, labels = images(ref, "x375/image_int8"), ref["x375/labels"]
    batch = {"image": image, "cls_labels": labels, "mask": torch.zeros(1, 375, 500, dtype=torch.long),
             "name": ["x375"]}
    with torch.no_grad():
        model.validation_step(batch, 0)
        out = model.predict_step(batch, 0)
    assert model.val_seed_iou.compute().isfinite().all()
    assert out["cams"].shape == (1, 20, 375, 500) and out["scores"].shape == (1, 21, 375, 500)
    assert out["cams"].isfinite().all()


def test_bitrans_on_375x500_crops_before_making_the_second_view(ref):
    state = official_state(ref, "v2")
    model = BiTrans(**TINY).train()
    model.load_state_dict(convert_official_state_dict(state), strict=True)
    image, labels = images(ref, "x375/image_int8"), ref["x375/labels"]
    with torch.no_grad():
        full = model.training_losses({"image": image, "cls_labels": labels})
        cropped = model.training_losses({"image": image[..., :368, :496], "cls_labels": labels})
        assert model.eval().multiscale_cams(image, labels).shape == (1, 20, 375, 500)
    for name in ("cls", "coarse_cls", "scc", "pac", "loss"):
        assert torch.equal(full[name], cropped[name]), name


# --- weight decay (gap 3) -------------------------------------------------------------------------

def exempt_names(model: torch.nn.Module) -> set[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    groups = exempt_from_weight_decay(model, model.param_groups())
    return {names[id(p)] for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_weight_decay_exemptions_are_the_official_ones(ref, version):
    official = ref[f"{version}/no_weight_decay"].split("\n")
    assert len(official) == 38
    expected = {wsss_name(n, version) for n in official if n != "pos_embed"} - {None}
    expected |= {"net.class_pos_embed", "net.patch_pos_embed"}  # the two parts of pos_embed
    assert exempt_names(build(ref, version)) == expected


def test_configure_optimizers_applies_the_exemption_switch(ref):
    def groups(**kwargs):
        model = build(ref, "v2", optimizer="adamw", weight_decay=0.05, **kwargs)
        model.trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=1, gradient_clip_val=None)
        optimizer = model.configure_optimizers()["optimizer"]
        return {g["weight_decay"]: sum(p.numel() for p in g["params"]) for g in optimizer.param_groups}

    total = sum(p.numel() for p in build(ref, "v2").parameters())
    exempt = groups()  # on by default for MCTformer, as DeiT's optimiser
    assert set(exempt) == {0.0, 0.05} and sum(exempt.values()) == total
    assert groups(weight_decay_exempt=False) == {0.05: total}
