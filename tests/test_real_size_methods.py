"""Every method through ``wsss fit``, ``validate`` and ``predict`` at real image sizes (issue 16).

The data is IRN's layout with SASFormer's sparse labels (:func:`~tests.data.real_layouts.write_devkit_voc`):
500x375, 333x500 and 640x426 images, masks for the devkit images only. The models are the CPU-sized
synthetic recipes, trained for one batch of crops; validation and prediction see the full images. The sparse
ViT runs on 256 x 256 DFC2020 tiles; stage 3 (SegmentationTask) and CRT's WSOL on CUB are in
``test_real_pipeline.py``.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.fake_dfc2020 import write_fake_dfc2020
from tests.data.real_layouts import REAL_SIZES, real_mask, write_devkit_voc
from wsss.main import main

RECIPES = Path(__file__).parents[1] / "recipes"

#: recipe -> extra arguments that keep it short
METHODS = {
    "cam_baseline_synthetic": ["--model.init_args.cam_scales=[1.0]"],
    "gradcam_synthetic": [],
    "mctformer_v2_synthetic": [],
    "bitrans_synthetic": [],
    "swtformer_v1_synthetic": ["--model.init_args.cam_scales=[1.0]"],
    "swtformer_v2_synthetic": ["--model.init_args.cam_scales=[1.0]"],
    "crt_synthetic": ["--model.init_args.vit_depth=1", "--model.init_args.cam_scales=[1.0]"],
    "sasformer_point_synthetic": ["--model.init_args.test_scales=[1.0]"],
    "sasformer_scribble_synthetic": ["--model.init_args.test_scales=[1.0]"],
}


def real_size_args(root: Path, run: Path) -> list[str]:
    """Full-size evaluation (batch 1: the sizes differ), one training batch of 96 px crops."""
    return [
        f"--data.init_args.root={root}",
        "--data.init_args.crop_size=96",
        "--data.init_args.batch_size=2",
        "--data.init_args.eval_batch_size=1",
        "--data.init_args.num_workers=0",
        "--data.init_args.predict_split=train_aug",
        f"--trainer.default_root_dir={run}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def written_shapes(folder: Path) -> dict[str, tuple[int, int]]:
    """name -> (H, W) of every PNG in ``folder``."""
    return {p.stem: np.asarray(Image.open(p)).shape for p in sorted(folder.glob("*.png"))}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(METHODS))
def test_fit_validate_predict_at_real_voc_sizes(
    recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    root = write_devkit_voc(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    config = str(RECIPES / f"{recipe}.yaml")
    args = [*real_size_args(root, tmp_path / "run"), *METHODS[recipe]]
    main(["fit", "--config", config, *args])
    ckpt = next((tmp_path / "run").glob("**/checkpoints/last.ckpt"))
    main(["validate", "--config", config, *args, f"--ckpt_path={ckpt}"])
    main(["predict", "--config", config, *args, f"--ckpt_path={ckpt}"])
    masks = tmp_path / f"runs/{recipe}/pseudo_masks"
    names = (root / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert written_shapes(masks) == {name: REAL_SIZES[i % 3] for i, name in enumerate(names)}
    assert f"wrote 4 mask(s) to runs/{recipe}/pseudo_masks" in capsys.readouterr().out
    assert 0 <= json.loads((masks / "metrics.json").read_text())["pseudo_mask_miou"] <= 1


@pytest.mark.slow
def test_sparse_vit_fit_validate_predict_on_real_size_dfc2020_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    root = write_fake_dfc2020(tmp_path / "dfc2020", n=2, size=256)  # DFC2020 tiles are 256 x 256
    monkeypatch.chdir(tmp_path)
    config = str(RECIPES / "sparse_vit_synthetic.yaml")
    args = [f"--data.init_args.root={root}", "--data.init_args.batch_size=2",
            "--data.init_args.eval_batch_size=1", f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]
    main(["fit", "--config", config, *args])
    ckpt = next((tmp_path / "run").glob("**/checkpoints/last.ckpt"))
    main(["validate", "--config", config, *args, f"--ckpt_path={ckpt}"])
    main(["predict", "--config", config, *args, f"--ckpt_path={ckpt}"])
    masks = tmp_path / "runs/sparse_vit_synthetic/pseudo_masks"
    assert set(written_shapes(masks).values()) == {(256, 256)} and len(written_shapes(masks)) == 2
    assert "wrote 2 mask(s) to runs/sparse_vit_synthetic/pseudo_masks" in capsys.readouterr().out


@pytest.mark.slow
def test_affinitynet_fits_at_real_voc_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AffinityNet has no validate or predict: its checkpoint feeds the learned-affinity refiner."""
    root = write_devkit_voc(tmp_path / "data")
    confident = tmp_path / "confident"  # stand-in confident labels: the true masks
    confident.mkdir()
    for i, name in enumerate((root / "ImageSets/Segmentation/train_aug.txt").read_text().split()):
        Image.fromarray(real_mask(i, *REAL_SIZES[i % 3])).save(confident / f"{name}.png")
    monkeypatch.chdir(tmp_path)
    config = str(RECIPES / "affinitynet_synthetic.yaml")
    args = [*real_size_args(root, tmp_path / "run"), f"--data.init_args.mask_dir={confident}",
            "--model.init_args.radius=3"]
    main(["fit", "--config", config, *args])
    assert next((tmp_path / "run").glob("**/checkpoints/last.ckpt")).is_file()
