"""Backbones and segmenters load weights from local files only, with clear errors."""

from pathlib import Path

import pytest
import timm
import torch

from wsss.methods.cam_baseline import CAMBaseline
from wsss.models.backbones import create_cnn_features, create_timm_model
from wsss.models.segmenters import create_segmenter


def test_missing_weights_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        create_timm_model("resnet18", weights=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        CAMBaseline(backbone="resnet18", weights=str(tmp_path / "nope.pth"), num_classes=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_segmenter("unet", "resnet18", 3, 4, encoder_weights=tmp_path / "nope.pth")


def test_local_timm_weights_load_and_adapt_the_stem(tmp_path: Path):
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    rgb = create_cnn_features("resnet18", in_channels=3, weights=path)
    assert torch.equal(rgb.conv1.weight, source.conv1.weight)
    assert torch.equal(rgb.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    five = create_cnn_features("resnet18", in_channels=5, weights=path)
    assert five.conv1.weight.shape[1] == 5
    assert torch.equal(five.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_local_smp_encoder_weights_with_more_bands(tmp_path: Path):
    reference = create_segmenter("unet", "resnet18", 3, 4)
    path = tmp_path / "encoder.pth"
    torch.save(reference.encoder.state_dict(), path)
    model = create_segmenter("unet", "resnet18", 15, 4, encoder_weights=path)
    assert model.encoder.conv1.weight.shape[1] == 15
    assert torch.equal(model.encoder.layer2[0].conv1.weight, reference.encoder.layer2[0].conv1.weight)
    torch.save({"not": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"encoder\.pth does not fit the resnet18 encoder: 100 of the"):
        create_segmenter("unet", "resnet18", 3, 4, encoder_weights=path)
