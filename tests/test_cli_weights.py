"""Weights through the command line: one-line errors, the paper-recipe warning, the ``wsss check`` dry run."""

from pathlib import Path

import pytest
import timm
import torch
from jsonargparse import dict_to_namespace
from safetensors.torch import save_file

from wsss.main import main, scratch_warning
from wsss.methods.cam_baseline import CAMBaseline

RECIPES = Path(__file__).parents[1] / "recipes"
SYNTHETIC = str(RECIPES / "cam_baseline_synthetic.yaml")
PAPER = str(RECIPES / "cam_baseline_voc.yaml")


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Exit code (0 when it returned), stdout and stderr of ``wsss ARGS``."""
    try:
        main(args)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("wsss: error:")]


def test_a_corrupt_weights_file_is_one_line_naming_it(tmp_path: Path, tiny_fit_args: list[str], capsys):
    (tmp_path / "resnet18.pth").write_bytes(b"<html>404 Not Found</html>")
    code, _, err = run(["fit", "--config", SYNTHETIC, *tiny_fit_args,
                        f"--model.init_args.weights={tmp_path / 'resnet18.pth'}"], capsys)
    assert code == 2 and "Union subtypes" not in err and "Traceback" not in err
    (line,) = error_lines(err)
    assert line.startswith(f"wsss: error: weights file {tmp_path / 'resnet18.pth'} cannot be read (")
    assert line.endswith("download it again")


def test_a_wrong_architecture_is_one_line_with_the_keys(tmp_path: Path, tiny_fit_args: list[str], capsys):
    deit = timm.create_model("deit_tiny_patch16_224", depth=1, embed_dim=32, num_heads=2)
    torch.save({"model": deit.state_dict()}, tmp_path / "deit.pth")
    code, _, err = run(["fit", "--config", SYNTHETIC, *tiny_fit_args,
                        f"--model.init_args.weights={tmp_path / 'deit.pth'}"], capsys)
    assert code == 2 and "Union subtypes" not in err
    (line,) = error_lines(err)
    assert "deit.pth does not fit resnet18: 100 of the network's 100 tensors missing (conv1.weight" in line
    assert "tensor(s) it does not have (cls_token" in line


def test_a_missing_weights_file_gets_no_dataset_hint(synthetic_voc: Path, tmp_path: Path, capsys):
    code, _, err = run(["fit", "--config", PAPER, f"--data.init_args.root={synthetic_voc}",
                        f"--model.init_args.weights={tmp_path / 'resnet50.pth'}"], capsys)
    (line,) = error_lines(err)
    assert code == 2 and "resnet50.pth does not exist; wsss never downloads weights" in line
    assert "Without the dataset" not in line and "synthetic" not in line


def test_check_reports_weights_classes_splits_and_a_batch(tmp_path: Path, tiny_fit_args: list[str], capsys,
                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    snapshot = tmp_path / "resnet18.a1_in1k"  # a Hugging Face snapshot folder
    snapshot.mkdir()
    save_file(timm.create_model("resnet18").state_dict(), snapshot / "model.safetensors")
    code, out, err = run(["check", "--step", "--config", SYNTHETIC, *tiny_fit_args,
                          f"--model.init_args.weights={snapshot}"], capsys)
    assert code == 0 and "WARNING" not in err
    lines = dict(line.split(maxsplit=1) for line in out.splitlines() if line[:1].isalpha())
    assert lines["weights"] == f"resnet18: 100/100 tensors loaded from {snapshot / 'model.safetensors'}"
    assert lines["classes"].startswith("5 + background, 3 input channel(s): disc_dots, square_checker")
    assert lines["train"] == "split 'train_aug': 32 samples" and lines["val"] == "split 'val': 8 samples"
    assert lines["batch"].startswith("image (8, 3, 48, 48) float32; mask (8, 48, 48) int64")
    assert "cls_labels (8, 5) float32" in lines["batch"]
    assert lines["step"].startswith("1 training + 1 validation batch on cpu: train/loss ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [snapshot.name]  # nothing written


def test_a_paper_recipe_without_weights_warns_at_start(synthetic_voc: Path, capsys):
    args = ["check", "--config", PAPER, f"--data.init_args.root={synthetic_voc}",
            "--data.init_args.crop_size=48", "--data.init_args.num_workers=0"]
    code, out, err = run(args, capsys)
    assert code == 0 and "weights  none: every network starts from its random initialisation" in out
    assert ("wsss: WARNING: cam_baseline_voc is a paper recipe, but model.init_args.weights is null: the "
            "network starts from random weights, which the paper never does") in err
    code, out, err = run(["check", "--config", SYNTHETIC, f"--data.init_args.root={synthetic_voc}"], capsys)
    assert code == 0 and "WARNING" not in err


def test_the_scratch_warning_names_every_null_checkpoint_argument():
    crt = {"class_path": "wsss.methods.crt.CRT", "init_args": {"cnn_weights": None, "vit_weights": "d.pth"}}
    model = dict_to_namespace(crt)
    assert "model.init_args.cnn_weights is null" in scratch_warning(["recipes/crt_voc.yaml"], model)
    model.init_args.vit_weights = None
    assert "model.init_args.cnn_weights, model.init_args.vit_weights are null" in scratch_warning(
        ["recipes/crt_voc.yaml"], model)
    assert scratch_warning(["recipes/crt_synthetic.yaml"], model) == ""
    assert scratch_warning(["recipes/crt_synthetic.yaml", "recipes/_base_/wandb.yaml"], model) == ""
    assert scratch_warning(["/tmp/my_experiment.yaml"], model) == ""  # a user's file
    model.init_args.cnn_weights, model.init_args.vit_weights = "resnet152.pth", "deit_small.pth"
    assert scratch_warning(["recipes/crt_voc.yaml"], model) == ""


def test_an_official_checkpoint_counts_as_weights():
    mct = {"class_path": "wsss.methods.mctformer.MCTformer",
           "init_args": {"weights": None, "official_checkpoint": "MCTformer_v2.pth"}}
    model = dict_to_namespace(mct)
    assert scratch_warning(["recipes/mctformer_v2_voc.yaml"], model) == ""
    model.init_args.official_checkpoint = None
    assert "model.init_args.weights is null" in scratch_warning(["recipes/mctformer_v2_voc.yaml"], model)


def test_a_corrupt_or_imagenet_official_mctformer_checkpoint_is_one_line(
    tmp_path: Path, tiny_fit_args: list[str], capsys
):
    recipe = str(RECIPES / "mctformer_v2_synthetic.yaml")
    corrupt = tmp_path / "checkpoint.pth"
    corrupt.write_bytes(b"\x80\x02}q\x00(X\x05")  # a download cut short
    code, _, err = run(["fit", "--config", recipe, *tiny_fit_args,
                        f"--model.init_args.official_checkpoint={corrupt}"], capsys)
    assert code == 2 and "Union subtypes" not in err and "Traceback" not in err
    (line,) = error_lines(err)
    assert line.startswith(f"wsss: error: weights file {corrupt} cannot be read (")
    assert line.endswith("download it again")
    deit = timm.create_model("deit_tiny_patch16_224", depth=1, embed_dim=32, num_heads=2)
    torch.save({"model": deit.state_dict()}, tmp_path / "deit.pth")  # ImageNet DeiT, not a trained MCTformer
    code, _, err = run(["fit", "--config", recipe, *tiny_fit_args,
                        f"--model.init_args.official_checkpoint={tmp_path / 'deit.pth'}"], capsys)
    (line,) = error_lines(err)
    assert code == 2 and "Traceback" not in err
    assert line.startswith(f"wsss: error: weights file {tmp_path / 'deit.pth'} does not convert to "
                           "MCTformer-V2 (one class token: an ImageNet ViT / DeiT, pass it as `weights`)")


def test_a_checkpoint_never_needs_its_initial_weights_file(tmp_path: Path, tiny_fit_args: list[str], capsys,
                                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), weights)
    args = ["--config", SYNTHETIC, *tiny_fit_args, f"--model.init_args.weights={weights}"]
    assert run(["fit", *args], capsys)[0] == 0
    ckpt = next(tmp_path.glob("**/checkpoints/last.ckpt"))
    weights.unlink()  # the run's initial weights moved away
    code, _, err = run(["predict", *args, f"--ckpt_path={ckpt}"], capsys)
    assert code == 0 and not error_lines(err)
    assert len(list(tmp_path.glob("runs/cam_baseline_synthetic/pseudo_masks/*.png"))) == 32
    restored = CAMBaseline.load_from_checkpoint(ckpt)
    assert restored.hparams.weights == str(weights)
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(value, saved[key]) for key, value in restored.state_dict().items())
    code, _, err = run(["fit", *args], capsys)  # without a checkpoint, the file is read and missed
    assert code == 2 and "resnet18.pth does not exist" in error_lines(err)[0]
