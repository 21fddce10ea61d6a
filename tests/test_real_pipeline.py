"""The paper recipes end to end on the real layouts with tiny models (issue 16, items 7 and 8).

Stage 2 of the VOC recipes predicts the split stage 3 trains on, and every recipe's ``wsss predict`` writes
its masks (CUB: its localisation boxes) and says where.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.fake_cub import write_fake_cub
from tests.data.real_layouts import REAL_SIZES, write_devkit_voc
from wsss.main import main
from wsss.recipes import load_recipe

RECIPES = Path(__file__).parents[1] / "recipes"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
#: tiny stand-ins for the recipes' networks (no weights: these tests check files, not accuracy)
TINY_CAM = ["--model.init_args.backbone=resnet18", "--model.init_args.cam_scales=[1.0]",
            "--model.init_args.cam_flip=false"]
TINY_SEGMENTER = ["--model.init_args.encoder=resnet18"]
TINY_SASFORMER = ["--model.init_args.backbone=mit_b0", "--model.init_args.test_scales=[1.0]",
                  "--model.init_args.test_flip=false"]
TINY_CRT = ["--model.init_args.cnn_backbone=resnet18", "--model.init_args.vit=vit_tiny_r_s16_p8_224",
            "--model.init_args.vit_depth=1", "--model.init_args.vit_img_size=64",
            "--model.init_args.vit_kwargs={patch_size: 2, embed_dim: 96, num_heads: 3}"]


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``data/VOCdevkit/VOC2012`` (IRN + SASFormer layout) under the working folder, as the recipes expect."""
    monkeypatch.chdir(tmp_path)
    return write_devkit_voc(tmp_path / "data")


def names_of(root: Path, split: str) -> list[str]:
    return (root / "ImageSets/Segmentation" / f"{split}.txt").read_text().split()


def shapes(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.stem: np.asarray(Image.open(p)).shape for p in sorted(folder.glob("*.png"))}


def test_every_recipe_writes_its_predictions():
    writers = ("wsss.callbacks.PseudoMaskWriter", "wsss.callbacks.LocalisationBoxWriter",
               "wsss.callbacks.refinement_loop.RefinementLoop")
    for recipe in sorted(RECIPES.glob("*.yaml")):
        if recipe.stem == "affinitynet_synthetic":  # trains a refiner: its checkpoint is what it makes
            continue
        callbacks = load_recipe(recipe)["trainer"].get("callbacks", [])
        assert any(c["class_path"] in writers for c in callbacks), recipe.name


def test_voc_stage_2_predicts_the_split_stage_3_trains_on():
    stage_2 = load_recipe(RECIPES / "cam_baseline_voc.yaml")["data"]["init_args"]
    stage_3 = load_recipe(RECIPES / "segmentation_voc.yaml")["data"]["init_args"]
    assert stage_2["predict_split"] == stage_3["train_split"] == "train_aug"


@pytest.mark.slow
def test_voc_pipeline_stage_1_to_3_on_the_irn_layout(data_dir: Path, capsys: pytest.CaptureFixture):
    crops = ["--data.init_args.crop_size=96", "--data.init_args.batch_size=2", "--trainer.max_epochs=1",
             "--trainer.limit_train_batches=1", "--data.init_args.num_workers=0", *QUIET]
    cam = str(RECIPES / "cam_baseline_voc.yaml")
    main(["fit", "--config", cam, *crops, *TINY_CAM])
    ckpt = next(Path("runs/cam_baseline_voc").glob("**/checkpoints/last.ckpt"))
    main(["predict", "--config", cam, *crops, *TINY_CAM, f"--ckpt_path={ckpt}"])
    pseudo = Path("runs/cam_baseline_voc/pseudo_masks")
    train_aug = names_of(data_dir, "train_aug")
    assert shapes(pseudo) == {name: REAL_SIZES[i % 3] for i, name in enumerate(train_aug)}
    assert "wrote 4 mask(s) to runs/cam_baseline_voc/pseudo_masks" in capsys.readouterr().out

    seg = str(RECIPES / "segmentation_voc.yaml")
    stage_3 = [*crops, *TINY_SEGMENTER, f"--data.init_args.mask_dir={pseudo}"]
    main(["fit", "--config", seg, *stage_3])
    ckpt = next(Path("runs/segmentation_voc").glob("**/checkpoints/last.ckpt"))
    main(["validate", "--config", seg, *stage_3, f"--ckpt_path={ckpt}"])
    main(["predict", "--config", seg, *stage_3, "--data.init_args.predict_split=val", f"--ckpt_path={ckpt}"])
    predictions = Path("runs/segmentation_voc/predictions")
    val = names_of(data_dir, "val")
    assert shapes(predictions) == {name: REAL_SIZES[(4 + i) % 3] for i, name in enumerate(val)}
    assert "wrote 2 mask(s) to runs/segmentation_voc/predictions" in capsys.readouterr().out
    assert 0 <= json.loads((predictions / "metrics.json").read_text())["pseudo_mask_miou"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("supervision", ["point", "scribble"])
def test_sasformer_recipes_read_the_sasformer_layout_and_write_predictions(
    data_dir: Path, capsys: pytest.CaptureFixture, supervision: str
):
    recipe = str(RECIPES / f"sasformer_{supervision}.yaml")
    args = ["--data.init_args.crop_size=96", "--data.init_args.batch_size=2", "--trainer.max_steps=1",
            "--data.init_args.num_workers=0", "--trainer.limit_val_batches=1", *QUIET, *TINY_SASFORMER]
    main(["fit", "--config", recipe, *args])
    ckpt = next(Path(f"runs/sasformer_{supervision}").glob("**/checkpoints/last.ckpt"))
    main(["predict", "--config", recipe, *args, f"--ckpt_path={ckpt}"])
    out = Path(f"runs/sasformer_{supervision}/predictions")
    assert len(shapes(out)) == 4
    assert f"wrote 4 mask(s) to {out}" in capsys.readouterr().out


@pytest.mark.slow
def test_crt_cub_predict_writes_boxes_in_original_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture):
    monkeypatch.chdir(tmp_path)
    write_fake_cub(tmp_path / "data", sizes=((375, 500), (500, 333)))
    recipe = str(RECIPES / "crt_cub.yaml")
    args = ["--data.init_args.batch_size=2", "--data.init_args.eval_batch_size=2",
            "--data.init_args.crop_size=64", "--data.init_args.resize_size=72",
            "--data.init_args.num_workers=0", *QUIET, *TINY_CRT]
    main(["predict", "--config", recipe, *args])
    table = tmp_path / "runs/crt_cub/boxes/boxes.csv"
    assert f"wrote 3 box(es) to {Path('runs/crt_cub/boxes/boxes.csv')}" in capsys.readouterr().out
    with table.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["Bird_1_0001", "Bird_2_0001", "Bird_3_0001"]  # the even ids
    for row, (height, width) in zip(rows, ((500, 333), (500, 333), (500, 333)), strict=True):
        x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
        assert 0 <= x <= x + w <= width + 0.1 and 0 <= y <= y + h <= height + 0.1
        assert 1 <= int(row["class_id"]) <= 3 and row["class_name"] == f"Bird_{row['class_id']}"
    metrics = json.loads((table.parent / "metrics.json").read_text())
    assert set(metrics) >= {"loc_top1", "loc_gt_known", "cls_top1"}


def test_predict_without_a_writer_is_refused(data_dir: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        main(["predict", "--config", str(RECIPES / "cam_baseline_voc.yaml"), "--trainer.callbacks=[]",
              *TINY_CAM, *QUIET])
    assert "no prediction writer in trainer.callbacks" in capsys.readouterr().err


#: the paper recipes' own networks, narrowed and shortened (the patch size, window and strides stay)
TINY_PAPER = {
    "mctformer_v2_voc": ["--model.init_args.backbone_kwargs={depth: 3, embed_dim: 48, num_heads: 1}",
                         "--model.init_args.cam_flip=false"],
    "bitrans_voc": ["--model.init_args.backbone_kwargs={depth: 3, embed_dim: 48, num_heads: 1}",
                    "--model.init_args.cam_flip=false"],
    "swtformer_v1_voc": ["--model.init_args.backbone_overrides={embed_dim: 32, depths: [1, 1, 1, 1], "
                         "num_heads: [1, 2, 4, 8]}", "--model.init_args.cam_scales=[1.0]",
                         "--model.init_args.cam_flip=false"],
    "swtformer_v2_voc": ["--model.init_args.backbone_overrides={embed_dim: 32, depths: [1, 1, 1, 1], "
                         "num_heads: [1, 2, 4, 8]}", "--model.init_args.hff_dims=[32, 32, 64, 64]",
                         "--model.init_args.cam_scales=[1.0]", "--model.init_args.cam_flip=false"],
    "crt_voc": ["--model.init_args.cnn_backbone=resnet18", "--model.init_args.vit_depth=1",
                "--model.init_args.vit_kwargs={embed_dim: 48, num_heads: 1}",
                "--model.init_args.cam_scales=[1.0]", "--model.init_args.cam_flip=false"],
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(TINY_PAPER))
def test_paper_recipe_fit_validate_predict_at_real_sizes(data_dir: Path, capsys: pytest.CaptureFixture,
                                                         recipe: str):
    config = str(RECIPES / f"{recipe}.yaml")
    args = ["--data.init_args.batch_size=2", "--data.init_args.num_workers=0", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1", *QUIET, *TINY_PAPER[recipe]]
    main(["fit", "--config", config, *args])
    ckpt = next(Path(f"runs/{recipe}").glob("**/checkpoints/last.ckpt"))
    main(["validate", "--config", config, *args, f"--ckpt_path={ckpt}"])
    main(["predict", "--config", config, *args, f"--ckpt_path={ckpt}"])
    train_aug = names_of(data_dir, "train_aug")
    assert shapes(Path(f"runs/{recipe}/pseudo_masks")) == {
        name: REAL_SIZES[i % 3] for i, name in enumerate(train_aug)
    }
    assert f"wrote 4 mask(s) to runs/{recipe}/pseudo_masks" in capsys.readouterr().out
