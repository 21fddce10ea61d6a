"""The shared helpers of scripts/: synthetic pre-training weights load where the recipes read them, and a
results page keeps its hand-written reading when its script re-runs."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from wsss.models.segformer import SegFormerWithAttention
from wsss.models.swin_cam import SwinFeatures

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SWIN = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "patch_size": 2, "window_size": 4,
        "img_size": 32}


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrained_mit_encoder_loads_into_the_sasformer_segmenter(tmp_path: Path, monkeypatch):
    script = load_script("pretrain_synthetic")
    output = tmp_path / "mit.pth"
    monkeypatch.setattr(sys, "argv", [
        "pretrain_synthetic.py", "smp:mit_b0", "--output", str(output), "--root", str(tmp_path / "voc"),
        "--n-train", "8", "--n-val", "4", "--size", "48", "--epochs", "1", "--batch-size", "4",
    ])
    script.main()
    saved = torch.load(output, weights_only=True)
    segmenter = SegFormerWithAttention("mit_b0", 3, 6, str(output))
    for key, value in segmenter.model.encoder.state_dict().items():
        torch.testing.assert_close(value, saved[key])


def test_pretrained_swin_checkpoint_loads_into_swin_features(tmp_path: Path):
    script = load_script("pretrain_synthetic")
    classifier = script.TimmClassifier("swin_tiny_patch4_window7_224", 5, [8, 8], strict_img_size=False,
                                       **SWIN)
    state = classifier.backbone_state_dict()
    assert not any(key.startswith("head.") for key in state)
    torch.save(state, tmp_path / "swin.pth")
    features = SwinFeatures(weights=tmp_path / "swin.pth", overrides=SWIN, stem_channels=[8, 8])
    loaded = features.state_dict()
    torch.testing.assert_close(loaded["model.layers_3.blocks.0.mlp.fc2.weight"],
                               state["layers.3.blocks.0.mlp.fc2.weight"])
    torch.testing.assert_close(loaded["model.patch_embed.proj.0.weight"], state["patch_embed.proj.0.weight"])


def test_pretraining_refuses_the_evaluation_data_seed(tmp_path: Path, monkeypatch):
    script = load_script("pretrain_synthetic")
    monkeypatch.setattr(sys, "argv", ["pretrain_synthetic.py", "smp:mit_b0", "--output", str(tmp_path / "x"),
                                      "--data-seed", "0"])
    with pytest.raises(SystemExit):
        script.main()


def test_results_page_keeps_its_reading_on_rewrite(tmp_path: Path, capsys):
    markdown = load_script("results_markdown")
    page = tmp_path / "docs" / "page.md"
    markdown.write_results(page, "table v1\n")
    page.write_text(page.read_text() + "my reading\n")
    markdown.write_results(page, "table v2\n")
    assert page.read_text() == f"table v2\n{markdown.MARKER}\nmy reading\n"

