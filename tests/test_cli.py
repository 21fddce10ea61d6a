"""The command line end to end on tiny data: fit, predict (pseudo-masks), stage-3 fit and test, synth."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from wsss.main import main, make_cli

RECIPES = Path(__file__).parents[1] / "recipes"


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from an empty folder, so the recipes' relative output paths land in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_fit_predict_then_stage3_through_the_cli(in_tmp: Path, tiny_fit_args: list[str], synthetic_voc: Path):
    main(["fit", "--config", str(RECIPES / "cam_baseline_synthetic.yaml"), *tiny_fit_args])
    version = next(in_tmp.glob("**/lightning_logs/version_0"))
    assert (version / "config.yaml").is_file(), "the resolved config is saved with the run"
    assert "CAMBaseline" in (version / "config.yaml").read_text()
    ckpt = next(version.glob("checkpoints/*.ckpt"))

    main(
        [
            "predict",
            "--config",
            str(RECIPES / "cam_baseline_synthetic.yaml"),
            *tiny_fit_args,
            f"--ckpt_path={ckpt}",
        ]
    )
    masks = in_tmp / "runs/cam_baseline_synthetic/pseudo_masks"
    names = (synthetic_voc / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert sorted(p.stem for p in masks.glob("*.png")) == sorted(names)
    first = Image.open(masks / f"{names[0]}.png")
    assert first.size == (48, 48) and first.mode == "P"
    metrics = json.loads((masks / "metrics.json").read_text())
    assert 0 < metrics["pseudo_mask_miou"] <= 1 and 0 < metrics["seed_miou"] <= 1
    assert (masks / "iou_table.md").read_text().startswith("|")

    stage3 = [*tiny_fit_args, f"--data.init_args.mask_dir={masks}"]
    main(["fit", "--config", str(RECIPES / "segmentation_synthetic.yaml"), *stage3])
    main(["test", "--config", str(RECIPES / "segmentation_synthetic.yaml"), *stage3])


def test_predict_refuses_to_write_over_ground_truth(
    in_tmp: Path, tiny_fit_args: list[str], synthetic_voc: Path
):
    gt = synthetic_voc / "SegmentationClassAug"
    before = {p.name: p.stat().st_mtime_ns for p in gt.iterdir()}
    writer = "--trainer.callbacks=wsss.callbacks.PseudoMaskWriter"
    with pytest.raises(SystemExit):
        main(
            [
                "predict",
                "--config",
                str(RECIPES / "gradcam_synthetic.yaml"),
                *tiny_fit_args,
                writer,
                f"--trainer.callbacks.output_dir={gt}",
            ]
        )
    assert {p.name: p.stat().st_mtime_ns for p in gt.iterdir()} == before


def test_missing_dataset_root_is_one_clear_line(in_tmp: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(RECIPES / "cam_baseline_voc.yaml"), "--data.init_args.root=nowhere"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("wsss: error: dataset root nowhere does not exist") and "wsss synth voc" in err
    assert "make train RECIPE=cam_baseline_synthetic" in err


def test_synth_command_and_python_dash_m(in_tmp: Path):
    main(["synth", "voc", "--root", str(in_tmp / "voc"), "--n-train", "4", "--n-val", "2", "--size", "40"])
    assert len(list((in_tmp / "voc/JPEGImages").iterdir())) == 6
    out = subprocess.run([sys.executable, "-m", "wsss", "--help"], capture_output=True, text=True, check=True)
    assert "fit" in out.stdout and "predict" in out.stdout


def test_batch_limits_read_an_integer_as_a_batch_count(synthetic_voc: Path):
    cli = make_cli(["--config", str(RECIPES / "cam_baseline_synthetic.yaml"),
                    f"--data.init_args.root={synthetic_voc}", "--trainer.logger=false",
                    "--trainer.limit_predict_batches=1", "--trainer.limit_val_batches=0.5",
                    "--trainer.val_check_interval=3"], run=False)
    assert cli.trainer.limit_predict_batches == 1 and isinstance(cli.trainer.limit_predict_batches, int)
    assert cli.trainer.limit_val_batches == 0.5 and cli.trainer.val_check_interval == 3
    assert isinstance(cli.trainer.val_check_interval, int)


def test_a_recipe_num_classes_replaced_by_the_data_is_logged(
    synthetic_voc: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    recipe = tmp_path / "twelve.yaml"
    recipe.write_text("model: {init_args: {num_classes: 12}}\n")
    base = ["--config", str(RECIPES / "cam_baseline_synthetic.yaml"),
            f"--data.init_args.root={synthetic_voc}", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false"]
    cli = make_cli(base, run=False)
    assert cli.model.num_classes == 5 and "is replaced by the data's" not in caplog.text
    cli = make_cli([*base, "--config", str(recipe)], run=False)
    assert cli.model.num_classes == 5
    assert "model.init_args.num_classes: 12 from the recipe is replaced by the data's 5" in caplog.text
    make_cli([*base, "--model.init_args.in_channels=4"], run=False)
    assert "model.init_args.in_channels: 4 from the recipe is replaced by the data's 3" in caplog.text
