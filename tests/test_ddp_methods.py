"""Every method fits and writes pseudo-masks under 2-process CPU DDP, each image exactly once.

Subprocesses of ``python -m wsss`` (``strategy=ddp`` re-launches argv; see tests/test_ddp.py, which also
checks that the synced metrics equal a one-process run).
"""

from pathlib import Path

import pytest

from tests.test_ddp import DDP, run_wsss
from wsss.data.synthetic import make_synthetic_dfc2020, make_synthetic_voc

RECIPES = Path(__file__).parents[1] / "recipes"
TINY = [
    "--data.init_args.batch_size=4",
    "--data.init_args.eval_batch_size=3",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
VOC_RECIPES = [
    "gradcam_synthetic",
    "sasformer_point_synthetic",
    "mctformer_v2_synthetic",
    "bitrans_synthetic",
    "swtformer_v2_synthetic",
    "crt_synthetic",
]
SPARSE_VIT = [
    "--data.init_args.crop_size=32",
    "--model.init_args.img_size=32",
    "--model.init_args.embed_dim=32",
    "--model.init_args.depth=2",
    "--model.init_args.num_heads=4",
]


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 training images (an odd count: a padding sampler would duplicate one) and 3 val images."""
    return make_synthetic_voc(tmp_path_factory.mktemp("voc"), n_train=7, n_val=3, size=48, seed=2)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [*VOC_RECIPES, "sparse_vit_synthetic"])
def test_method_fits_and_predicts_under_ddp(recipe: str, voc: Path, tmp_path: Path):
    if recipe == "sparse_vit_synthetic":
        root = make_synthetic_dfc2020(tmp_path / "dfc", n_train=7, n_test=3, size=48, seed=2)
        names = [f"ROIs0000_validation_p{i}" for i in range(7)]
        extra = SPARSE_VIT
    else:
        root = voc
        names = (voc / "ImageSets/Segmentation/train_aug.txt").read_text().split()
        extra = ["--data.init_args.crop_size=48"]
    args = [
        "--config",
        str(RECIPES / f"{recipe}.yaml"),
        f"--data.init_args.root={root}",
        *TINY,
        *extra,
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        *DDP,
    ]
    run_wsss(["fit", *args], tmp_path)
    ckpt = next((tmp_path / "run").glob("**/checkpoints/last.ckpt"))
    run_wsss(["predict", *args, f"--ckpt_path={ckpt}"], tmp_path)
    masks = tmp_path / "runs" / recipe / "pseudo_masks"
    assert sorted(p.stem for p in masks.glob("*.png")) == sorted(names)
    assert not [p for p in masks.iterdir() if p.name.startswith(".") and p.suffix == ".png"], (
        "temporary files"
    )
