"""Weight files in each release's key layout load strictly into every method; wrong files are one-line errors.

The files are written here from tiny timm / torchvision / smp networks in the exact key layout of the release:
DeiT (``{'model': …}``), Microsoft's Swin (``{'model': …}``, downsampling at the end of a stage, ``head.``,
``attn_mask`` and ``relative_position_index`` buffers), a timm ``features_only`` Swin (``layers_N.``), NVlabs'
MiT ``.pth`` (encoder + ``head.``), torchvision's ResNet, a Hugging Face snapshot folder, Lightning and DDP
wrappers.
"""

import re
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from wsss.methods.bitrans import BiTrans
from wsss.methods.cam_baseline import CAMBaseline
from wsss.methods.crt import CRT
from wsss.methods.mctformer import MCTformer
from wsss.methods.swtformer import SWTformer
from wsss.models.backbones import create_cnn_features, create_timm_model
from wsss.models.segformer import create_attention_segmenter
from wsss.models.segmenters import create_segmenter
from wsss.models.weights import WeightsError, WeightsNotFoundError, read_state_dict, weights_reports

DEIT = dict(patch_size=8, depth=2, embed_dim=32, num_heads=2, img_size=32)
SWIN = dict(embed_dim=16, depths=(2, 2, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, img_size=32,
            patch_size=2)


def deit_release(path: Path) -> dict:
    """A tiny DeiT saved as facebookresearch/deit releases it: ``{'model': state_dict}`` with the head."""
    state = timm.create_model("deit_tiny_patch16_224", **DEIT).state_dict()
    torch.save({"model": state}, path)
    return state


def microsoft_swin_release(state: dict) -> dict:
    """timm Swin keys in Microsoft's layout: each stage ends with the downsampling that timm puts at the
    start of the next one, ``head.`` instead of ``head.fc.``, and the two buffers timm does not persist."""
    release = {}
    for key, value in state.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", key)
        release[key.replace("head.fc.", "head.")] = value
    release["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    release["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    return {"model": release}


def test_deit_release_loads_into_mctformer_and_crt_and_sets_every_tensor(tmp_path: Path):
    state = deit_release(tmp_path / "deit_tiny.pth")
    vit_kwargs = {k: v for k, v in DEIT.items() if k != "img_size"}
    mct = MCTformer(backbone="deit_tiny_patch16_224", weights=str(tmp_path / "deit_tiny.pth"), num_classes=3,
                    cam_layers=2, img_size=32, drop_path_rate=0.0, backbone_kwargs=vit_kwargs)
    (report,) = weights_reports(mct)
    assert report.loaded == report.total == len(state) - 2 and report.new == ()  # all but the ImageNet head
    assert torch.equal(mct.net.vit.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])
    assert torch.equal(mct.net.class_tokens[0, 2], state["cls_token"][0, 0])  # [CLS] repeated per class
    bitrans = BiTrans(backbone="deit_tiny_patch16_224", weights=str(tmp_path / "deit_tiny.pth"),
                      num_classes=3, cam_layers=2, img_size=32, drop_path_rate=0.0,
                      backbone_kwargs=vit_kwargs)
    assert [r.loaded for r in weights_reports(bitrans)] == [len(state) - 2]
    crt = CRT(cnn_backbone="resnet18", vit="deit_tiny_patch16_224", vit_kwargs=DEIT, num_classes=3,
              vit_weights=str(tmp_path / "deit_tiny.pth"))
    assert torch.equal(crt.transformer.vit.patch_embed.proj.weight, state["patch_embed.proj.weight"])


def test_microsoft_swin_release_timm_features_and_snapshot_folder_load_into_swtformer(tmp_path: Path):
    source = timm.create_model("swin_tiny_patch4_window7_224", **SWIN)
    torch.save(microsoft_swin_release(source.state_dict()), tmp_path / "swin_tiny_patch4_window7_224.pth")
    features = timm.create_model("swin_tiny_patch4_window7_224", features_only=True, **SWIN).state_dict()
    assert any(k.startswith("layers_1.") for k in features)
    source_state = source.state_dict()
    features = {k: source_state[k.replace("layers_", "layers.")] for k in features}
    torch.save(features, tmp_path / "features_only.pth")
    cache = tmp_path / "models--timm--swin_tiny_patch4_window7_224.ms_in1k"  # a Hugging Face hub cache entry
    (cache / "snapshots/0123abc").mkdir(parents=True)
    save_file(source.state_dict(), cache / "snapshots/0123abc/model.safetensors")
    for weights in ("swin_tiny_patch4_window7_224.pth", "features_only.pth", cache.name):
        model = SWTformer(version="v1", weights=str(tmp_path / weights), backbone_overrides=SWIN,
                          hff_dims=(8, 8, 8, 8), num_classes=3)
        (report,) = weights_reports(model)
        assert report.loaded == report.total and report.total > 50
        swin = model.backbone.model
        merging = source.layers[1].downsample.reduction.weight
        assert torch.equal(swin.layers_1.downsample.reduction.weight, merging)
        qkv = source_state["layers.3.blocks.0.attn.qkv.weight"]
        assert torch.equal(swin.layers_3.blocks[0].attn.qkv.weight, qkv)


def test_torchvision_resnet_loads_into_the_cam_baseline_and_the_stage3_encoder(tmp_path: Path):
    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    cam = CAMBaseline(backbone="resnet18", weights=str(tmp_path / "resnet18-f37072fd.pth"), num_classes=3)
    (report,) = weights_reports(cam)
    assert report.loaded == report.total == 100  # conv and BatchNorm tensors; the ImageNet fc is not used
    assert torch.equal(cam.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    unet = create_segmenter("unet", "resnet18", 4, 3, encoder_weights=tmp_path / "resnet18-f37072fd.pth")
    assert torch.equal(unet.encoder.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert unet.encoder.weights_report.loaded == 100


def test_nvlabs_mit_release_loads_into_the_sasformer_segformer(tmp_path: Path):
    encoder = create_segmenter("segformer", "mit_b0", 3, 2).encoder.state_dict()
    release = encoder | {"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    torch.save(release, tmp_path / "mit_b0.pth")
    model = create_attention_segmenter("mit_b0", 3, 3, weights=str(tmp_path / "mit_b0.pth"))
    (report,) = weights_reports(model)
    assert report.loaded == report.total == len(encoder)
    assert torch.equal(model.model.encoder.block2[1].attn.q.weight, encoder["block2.1.attn.q.weight"])


@pytest.mark.parametrize("wrap", ["lightning", "ddp", "nested"])
def test_common_wrappers_are_unwrapped(tmp_path: Path, wrap: str):
    state = timm.create_model("resnet18").state_dict()
    wrapped = {
        "lightning": {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3},
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "nested": {"model": {"state_dict": state}, "args": None},
    }[wrap]
    torch.save(wrapped, tmp_path / "w.pth")
    assert read_state_dict(tmp_path / "w.pth").keys() == state.keys()
    model = create_cnn_features("resnet18", weights=tmp_path / "w.pth")
    assert torch.equal(model.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])


def test_a_resnet_file_into_deit_is_one_line_naming_the_file_and_keys(tmp_path: Path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(WeightsError) as err:
        create_timm_model("deit_tiny_patch16_224", tmp_path / "resnet18.pth", num_classes=0, **DEIT)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "resnet18.pth") in message
    assert "does not fit deit_tiny_patch16_224: 30 of the network's 30 tensors missing (cls_token" in message
    assert "102 tensor(s) it does not have (conv1.weight" in message and "(+99 more)" in message


def test_a_deit_file_into_swtformer_is_an_error(tmp_path: Path):
    deit_release(tmp_path / "deit.pth")
    with pytest.raises(WeightsError, match=r"deit\.pth does not fit swin_tiny_patch4_window7_224: \d+ of the "
                                           r"network's \d+ tensors missing \(patch_embed\.norm\.weight"):
        SWTformer(version="v1", weights=str(tmp_path / "deit.pth"), backbone_overrides=SWIN, num_classes=3)


def test_a_deeper_swin_fails_inside_timms_conversion_as_one_line(tmp_path: Path):
    """Swin-S into Swin-T at test size: timm's Swin filter looks up blocks the smaller model lacks."""
    deeper = timm.create_model("swin_tiny_patch4_window7_224", **SWIN).state_dict()
    torch.save(deeper, tmp_path / "deeper.pth")
    with pytest.raises(WeightsError, match=r"deeper\.pth does not fit swin_tiny_patch4_window7_224: timm's "
                                           r"conversion of it failed \(AttributeError: "):
        SWTformer(version="v1", weights=str(tmp_path / "deeper.pth"), num_classes=3,
                  backbone_overrides=SWIN | {"depths": (1, 1, 1, 1)})


def test_a_shallower_resnet_file_into_crts_cnn_is_an_error(tmp_path: Path):
    """The measured case, ResNet-50 into CRT's ResNet-152, with the same block type at test size."""
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(WeightsError, match=r"does not fit resnet34: 80 of the network's 180 tensors missing "
                                           r"\(layer1\.2\.conv1\.weight"):
        CRT(cnn_backbone="resnet34", cnn_weights=str(tmp_path / "resnet18.pth"), vit="deit_tiny_patch16_224",
            vit_kwargs=DEIT, num_classes=3)
    torch.save(timm.create_model("resnet34").state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(WeightsError, match=r"80 tensor\(s\) it does not have \(layer1\.2\.conv1\.weight"):
        create_cnn_features("resnet18", weights=tmp_path / "resnet34.pth")


def test_another_width_and_a_whole_lightning_run_are_errors_with_their_fix(tmp_path: Path):
    deit_release(tmp_path / "deit.pth")
    with pytest.raises(WeightsError, match=r"31 of another shape \(cls_token: \[1, 1, 32\] vs \[1, 1, 64\]"):
        create_timm_model("deit_tiny_patch16_224", tmp_path / "deit.pth", **DEIT | {"embed_dim": 64})
    run = {"state_dict": {f"backbone.{k}": v for k, v in timm.create_model("resnet18").state_dict().items()}
           | {"classifier.weight": torch.zeros(3, 512, 1, 1)}, "pytorch-lightning_version": "2.6"}
    torch.save(run, tmp_path / "last.ckpt")
    with pytest.raises(WeightsError, match="Lightning checkpoint of a whole run: continue that run with"):
        create_cnn_features("resnet18", weights=tmp_path / "last.ckpt")


def test_unreadable_files_and_missing_paths(tmp_path: Path):
    (tmp_path / "truncated.pth").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WeightsError, match=r"truncated\.pth cannot be read .*download it again"):
        create_cnn_features("resnet18", weights=tmp_path / "truncated.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_tensors.pth")
    with pytest.raises(WeightsError, match=r"holds no state dict of tensors \(found keys epoch, lr\)"):
        create_cnn_features("resnet18", weights=tmp_path / "no_tensors.pth")
    with pytest.raises(WeightsNotFoundError, match="never downloads"):
        create_cnn_features("resnet18", weights=tmp_path / "nope.pth")
    (tmp_path / "empty_snapshot").mkdir()
    with pytest.raises(WeightsNotFoundError, match=r"holds no model\.safetensors or pytorch_model\.bin"):
        create_cnn_features("resnet18", weights=tmp_path / "empty_snapshot")
