"""Bad data end to end through the command line (the readers' unit tests are in tests/test_data_*.py):
a corrupt JPEG stops ``fit`` with one line naming it, or is skipped everywhere with ``skip_bad_samples``;
a NaN Sentinel-1 pixel is filled and trains to finite weights, or stops the run with ``nan_policy=error``."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.data.fake_dfc2020 import write_fake_dfc2020
from wsss.data.io import read_label_png
from wsss.data.synthetic import make_synthetic_voc
from wsss.eval import SegmentationIoU
from wsss.main import main
from wsss.recipes import load_recipe, merge

RECIPES = Path(__file__).parents[1] / "recipes"
TINY_TRAINER = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture()
def voc_with_corrupt_jpeg(tmp_path: Path) -> tuple[Path, str]:
    """A tiny synthetic VOC folder whose first training image is not a JPEG; returns (root, its name)."""
    root = make_synthetic_voc(tmp_path / "voc", n_train=8, n_val=4, size=40, seed=2)
    name = (root / "ImageSets/Segmentation/train_aug.txt").read_text().split()[0]
    (root / "JPEGImages" / f"{name}.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    return root, name


def voc_args(root: Path, run: Path) -> list[str]:
    """The CAM baseline recipe on ``root``, logging and writing pseudo-masks under ``run``."""
    return [
        "--config",
        str(RECIPES / "cam_baseline_synthetic.yaml"),
        f"--data.init_args.root={root}",
        "--data.init_args.crop_size=40",
        "--data.init_args.batch_size=4",
        "--data.init_args.eval_batch_size=4",
        f"--trainer.default_root_dir={run}",
        *TINY_TRAINER,
    ]


def test_corrupt_jpeg_stops_fit_with_one_line_naming_it(voc_with_corrupt_jpeg, tmp_path: Path, capsys):
    root, name = voc_with_corrupt_jpeg
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *voc_args(root, tmp_path / "run")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wsss: error: ") and f"JPEGImages/{name}.jpg" in err and "\n" not in err


def test_errors_in_dataloader_workers_read_as_without_workers(voc_with_corrupt_jpeg, tmp_path: Path, capsys):
    root, _ = voc_with_corrupt_jpeg
    reports = []
    for workers in (0, 1):
        args = [*voc_args(root, tmp_path / f"run{workers}"), f"--data.init_args.num_workers={workers}"]
        with pytest.raises(SystemExit) as stopped:
            main(["fit", *args])
        reports.append((stopped.value.code, capsys.readouterr().err.strip().splitlines()[-1]))
    assert reports[1] == reports[0] and reports[0][0] == 2
    assert "Caught" not in reports[1][1] and "worker" not in reports[1][1]


def test_skip_bad_samples_trains_and_writes_every_other_mask(voc_with_corrupt_jpeg, tmp_path: Path, caplog):
    root, name = voc_with_corrupt_jpeg
    run, masks = tmp_path / "run", tmp_path / "masks"
    args = [*voc_args(root, run), "--data.init_args.skip_bad_samples=true"]
    main(["fit", *args])  # two batches of 4 are the whole split: the bad image is met
    assert f"JPEGImages/{name}.jpg" in caplog.text and "skipped 1 sample file(s)" in caplog.text
    ckpt = next(run.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    writer = "--trainer.callbacks=" + yaml.safe_dump(
        [{"class_path": "wsss.callbacks.PseudoMaskWriter", "init_args": {"output_dir": str(masks)}}],
        default_flow_style=True,
    )
    main(["predict", *args, writer, f"--ckpt_path={ckpt}"])
    names = set((root / "ImageSets/Segmentation/train_aug.txt").read_text().split())
    assert {p.stem for p in masks.glob("*.png")} == names - {name}
    iou = SegmentationIoU(num_classes=6)  # the readable images, each scored once
    for kept in sorted(names - {name}):
        truth = torch.from_numpy(read_label_png(root / "SegmentationClassAug" / f"{kept}.png")).long()
        iou.update(torch.from_numpy(read_label_png(masks / f"{kept}.png")).long()[None], truth[None])
    scored = json.loads((masks / "metrics.json").read_text())["pseudo_mask_miou"]
    assert scored == pytest.approx(float(iou.compute()), abs=1e-6)


def dfc_config(tmp_path: Path, nan_policy: str) -> Path:
    """The CAM baseline recipe on fake DFC2020 tiles (15 bands) with one NaN S1 pixel in every split."""
    root = write_fake_dfc2020(tmp_path / "dfc", n=4, size=32, nan_tile=1)
    data = load_recipe(RECIPES / "_base_/data/dfc2020.yaml")["data"]
    data["init_args"] |= {
        "root": str(root),
        "crop_size": 32,
        "batch_size": 2,
        "eval_batch_size": 2,
        "num_workers": 0,
        "nan_policy": nan_policy,
    }
    config = merge(load_recipe(RECIPES / "cam_baseline_synthetic.yaml"), {"data": data})
    config["trainer"] |= {"default_root_dir": str(tmp_path / "run"), "callbacks": []}
    path = tmp_path / f"dfc_{nan_policy}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_nan_sar_pixel_is_filled_counted_and_training_stays_finite(tmp_path: Path, caplog):
    main(["fit", "--config", str(dfc_config(tmp_path, "fill")), *TINY_TRAINER])
    assert "s1_0_p1.tif: filled 1 NaN, infinite or nodata pixel(s)" in caplog.text
    # the summary at the end of fit: one tile of train and one of val
    assert "DFC2020DataModule filled 2 NaN, infinite or nodata pixel(s) in 2 file(s)" in caplog.text
    ckpt = next((tmp_path / "run").glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    weights = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert weights["backbone.conv1.weight"].shape[1] == 15
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_nan_sar_pixel_with_nan_policy_error_names_the_tile(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(dfc_config(tmp_path, "error")), *TINY_TRAINER])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wsss: error: ") and "s1_0_p1.tif: 1 pixel(s) are NaN" in err
