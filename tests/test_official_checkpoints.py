"""Official checkpoint files (MCTformer, CRT, SegFormer / SASFormer MiT) go through the shared weights reader:
the release wrappers and Hugging Face snapshot folders, a strict load with its report, one-line errors; and a
network restored from a Lightning checkpoint never reads them again."""

import shutil
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from safetensors.torch import save_file

from wsss.methods.crt import CRT
from wsss.methods.mctformer import MCTformer
from wsss.models.crt_checkpoint import load_official_crt
from wsss.models.segformer import SegFormerWithAttention
from wsss.models.weights import WeightsError, WeightsNotFoundError, counted, weights_reports

MCT_FIXTURE = Path(__file__).parent / "data/parity/mctformer.pt"
MCT_TINY = dict(backbone="deit_small_patch16_224", backbone_kwargs=dict(embed_dim=64, depth=4, num_heads=4),
                num_classes=20, drop_path_rate=0.0, cam_layers=3)
CRT_SMALL = dict(cnn_backbone="resnet18", vit="deit_tiny_patch16_224", vit_depth=1, vit_img_size=32,
                 num_classes=20)


def same_tensors(model: torch.nn.Module, other: torch.nn.Module) -> bool:
    theirs = other.state_dict()
    return all(torch.equal(value, theirs[key]) for key, value in model.state_dict().items())


def crt_releases(model: CRT) -> tuple[dict, dict]:
    """A CRT's tensors as the official code saves them: the CNN ``Net`` (``resnet50.*``, ``classifier.*`` and
    the modules it registers twice) and TS-CAM's DeiT (timm names, Conv3x3 ``head.*``)."""
    cnn = {"classifier.weight": model.cnn_classifier.weight.detach().clone()}
    cnn |= {f"resnet50.{k}": v.clone() for k, v in model.cnn.state_dict().items()}
    cnn["stage1.0.weight"] = cnn["resnet50.conv1.weight"].clone()
    deit = {k.removeprefix("vit."): v.clone().contiguous() for k, v in model.transformer.state_dict().items()}
    return cnn, deit


def test_official_crt_files_load_each_branch_strictly(tmp_path: Path):
    source = CRT(**CRT_SMALL)
    cnn, deit = crt_releases(source)
    torch.save({"state_dict": {f"module.{k}": v for k, v in cnn.items()}}, tmp_path / "res50_cam.pth")
    snapshot = tmp_path / "tscam_deit"  # a Hugging Face snapshot folder
    snapshot.mkdir()
    save_file(deit, snapshot / "model.safetensors")
    model = CRT(**CRT_SMALL)
    reports = load_official_crt(model, tmp_path / "res50_cam.pth", snapshot)
    cnn_total = len(counted(list(source.cnn.state_dict()))) + 1
    assert [str(r) for r in reports] == [
        f"CRT's CNN branch: {cnn_total}/{cnn_total} tensors loaded from {tmp_path / 'res50_cam.pth'}",
        f"CRT's DeiT branch: {len(deit)}/{len(deit)} tensors loaded from {snapshot / 'model.safetensors'}",
    ]
    assert weights_reports(model) == reports and same_tensors(model, source)
    with pytest.raises(WeightsError, match=(
            r"res50_cam\.pth does not fit CRT's DeiT branch: \d+ of the network's \d+ tensors missing \(vit\."
            r".*tensor\(s\) it does not have \(vit\.classifier\.weight, vit\.resnet50\.conv1\.weight"
            r".*Build the CRT like the official one")):
        load_official_crt(model, deit_checkpoint=tmp_path / "res50_cam.pth")
    with pytest.raises(WeightsError, match=r"model\.safetensors does not convert to CRT's CNN branch \("
                                           r"irn_resnet_to_crt_cnn: unexpected key 'blocks\.0\."):
        load_official_crt(model, cnn_checkpoint=snapshot)
    with pytest.raises(WeightsNotFoundError, match=r"cam1\.pth does not exist"):
        load_official_crt(model, cnn_checkpoint=tmp_path / "cam1.pth")


def test_official_segformer_file_loads_the_mit_encoder_strictly(tmp_path: Path):
    source = SegFormerWithAttention("mit_b0", classes=21)
    encoder = source.model.encoder.state_dict()
    mmseg = {"meta": {"CLASSES": ["background", "aeroplane"]},  # mmsegmentation's SegFormer checkpoint
             "state_dict": {**{f"backbone.{k}": v for k, v in encoder.items()},
                            "decode_head.linear_pred.weight": torch.zeros(21, 256, 1, 1)}}
    torch.save(mmseg, tmp_path / "segformer.b0.pth")
    model = SegFormerWithAttention("mit_b0", classes=21)
    report = model.load_official_encoder(tmp_path / "segformer.b0.pth")
    assert report.loaded == report.total == len(counted(list(encoder))) and report.new == ()
    assert weights_reports(model) == [report] and same_tensors(model.model.encoder, source.model.encoder)
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(WeightsError, match=r"resnet18\.pth does not fit this SegFormer's MiT encoder: \d+ of "
                                           r".*Pass official MiT weights of this encoder's size"):
        model.load_official_encoder(tmp_path / "resnet18.pth")


def test_official_mctformer_snapshot_loads_and_a_checkpoint_reloads_without_it(tmp_path: Path):
    fixture = torch.load(MCT_FIXTURE, weights_only=True)
    state = {k.removeprefix("v2/state_dict/"): v.clone().contiguous() for k, v in fixture.items()
             if k.startswith("v2/state_dict/")}
    snapshot = tmp_path / "mctformer_v2"
    snapshot.mkdir()
    save_file(state, snapshot / "model.safetensors")
    model = MCTformer(version="v2", official_checkpoint=str(snapshot), **MCT_TINY)
    (report,) = weights_reports(model)
    total = len(model.state_dict())
    assert str(report) == f"MCTformer-V2: {total}/{total} tensors loaded from {snapshot}/model.safetensors"
    assert torch.equal(model.patch_head.weight, state["head.weight"])
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    shutil.rmtree(snapshot)  # the official checkpoint moved away
    restored = MCTformer.load_from_checkpoint(tmp_path / "run.ckpt")
    assert restored.hparams.official_checkpoint == str(snapshot)
    assert same_tensors(restored, model) and weights_reports(restored) == []
    with pytest.raises(WeightsNotFoundError, match=r"checkpoint\.pth that the official main\.py saved"):
        MCTformer(version="v2", official_checkpoint=str(snapshot), **MCT_TINY)
