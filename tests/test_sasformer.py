"""The SASFormer LightningModule: sparse labels from the VOC reader, its losses, inference, and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.data import VOCDataModule
from wsss.data.sparse_labels import SCRIBBLESUP_VOC_NAMES, write_points_json, write_scribble_xml
from wsss.main import main
from wsss.methods.sasformer import SASFormer, partial_cross_entropy

RECIPES = Path(__file__).parents[1] / "recipes"
SIZE = 24


def tiny_sasformer(**kwargs) -> SASFormer:
    return SASFormer(backbone="mit_b0", num_classes=2, **kwargs)


def write_sparse_voc(root: Path) -> Path:
    """One 24 px training image with one click per class (JSON) and one scribble per class (XML)."""
    for folder in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation", "whats_the_point",
                   "scribble_annotation/pascal_2012"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(root / "JPEGImages/a.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[4:12, 4:20] = 1
    Image.fromarray(mask).save(root / "SegmentationClassAug/a.png")
    for split in ("train_aug", "val"):
        (root / f"ImageSets/Segmentation/{split}.txt").write_text("a\n")
    write_points_json({"a": [{"cls": 1, "x": 10, "y": 7}]}, root / "whats_the_point/voc_whats_the_point.json")
    write_points_json({"a": [{"cls": 0, "x": 18, "y": 19}]},
                      root / "whats_the_point/voc_whats_the_point_bg_from_scribbles.json")
    scribbles = [(1, np.array([[6.0, 8.0], [16.0, 8.0]])), (0, np.array([[3.0, 18.0], [3.0, 21.0]]))]
    write_scribble_xml(scribbles, root / "scribble_annotation/pascal_2012/a.xml", SCRIBBLESUP_VOC_NAMES,
                       "a.png", (SIZE, SIZE))
    return root


def plain_sparse(root: Path, supervision: str) -> torch.Tensor:
    dm = VOCDataModule(str(root), supervision=supervision, crop_size=None, scale_range=(1.0, 1.0),
                       hflip=False)
    return dm.dataset("train")[0]["sparse"]


def test_clicks_become_3px_discs_and_scribbles_3px_polylines_in_the_sparse_key(tmp_path: Path):
    root = write_sparse_voc(tmp_path / "VOC2012")
    points = plain_sparse(root, "point")
    expected = torch.full((SIZE, SIZE), 255)
    for x, y, cls in ((10, 7, 1), (18, 19, 0)):  # a disc of diameter 3: the pixel and its 4 neighbours
        expected[y, x - 1:x + 2] = cls
        expected[y - 1:y + 2, x] = cls
    assert torch.equal(points, expected)
    scribbles = plain_sparse(root, "scribble")
    expected = torch.full((SIZE, SIZE), 255)
    expected[7:10, 6:17] = 1  # horizontal stroke, 3 px wide ...
    expected[8, 5] = expected[8, 17] = 1  # ... with round ends (the 3 px vertex discs)
    expected[18:22, 2:5] = 0  # vertical stroke
    expected[17, 3] = expected[22, 3] = 0
    assert torch.equal(scribbles, expected)


def test_partial_cross_entropy_sees_labelled_pixels_only():
    logits = torch.randn(1, 3, 4, 4)
    sparse = torch.full((1, 4, 4), 255)
    sparse[0, 1, 2], sparse[0, 3, 0] = 2, 0
    log_p = logits.log_softmax(1)
    expected = -(log_p[0, 2, 1, 2] + log_p[0, 0, 3, 0]) / 2
    assert partial_cross_entropy(logits, sparse).item() == pytest.approx(expected.item(), rel=1e-6)
    assert partial_cross_entropy(logits, torch.full((1, 4, 4), 255)).item() == 0.0


def test_training_losses_combine_seg_and_alpha_times_affinity():
    torch.manual_seed(0)
    model = tiny_sasformer(alpha=1.2, affinity_levels=[1, 4])
    sparse = torch.full((2, 40, 40), 255)
    sparse[:, 5:8, 5:8], sparse[:, 30:33, 30:33] = 1, 0
    losses = model.training_losses({"image": torch.randn(2, 3, 40, 40), "sparse": sparse})
    assert losses["loss"].item() == pytest.approx((losses["seg"] + 1.2 * losses["aff"]).item(), rel=1e-6)
    losses["aff"].backward()
    assert model.segmenter.model.encoder.block1[0].attn.q.weight.grad.abs().sum() > 0
    batch = {"image": torch.randn(2, 3, 40, 40), "sparse": sparse}
    baseline = tiny_sasformer(alpha=0.0).training_losses(batch)
    assert set(baseline) == {"seg", "loss"}
    with pytest.raises(ValueError, match="supervision to point or scribble"):
        model.training_losses({"image": torch.randn(1, 3, 32, 32), "mask": sparse[:1]})


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="affinity_levels"):
        tiny_sasformer(affinity_levels=[0, 5])
    with pytest.raises(ValueError, match="alpha"):
        tiny_sasformer(alpha=-1.0)


def test_the_vit_option_trains_with_the_affinity_loss():
    model = SASFormer(backbone="vit_tiny_patch16_224", vit_levels=2, affinity_levels=[1, 2], num_classes=2,
                      backbone_kwargs={"depth": 2, "img_size": 32, "patch_size": 8, "embed_dim": 64,
                                       "num_heads": 2})
    sparse = torch.full((1, 32, 32), 255)
    sparse[0, 4:7, 4:7] = 2
    losses = model.training_losses({"image": torch.randn(1, 3, 32, 32), "sparse": sparse})
    assert losses["aff"] > 0 and losses["loss"].requires_grad


def test_multiscale_scores_are_averaged_probabilities_with_flip():
    model = tiny_sasformer(test_scales=[1.0], test_flip=True).eval()
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        scores = model.multiscale_scores(images)
        single = model(images).logits.softmax(1)
        flipped = model(images.flip(-1)).logits.softmax(1).flip(-1)
    assert torch.allclose(scores, (single + flipped) / 2, atol=1e-6)
    model.hparams.test_scales = [0.5, 1.0, 2.0]
    with torch.no_grad():
        scores = model.multiscale_scores(images)
    assert scores.shape == (1, 3, 32, 48) and torch.allclose(scores.sum(1), torch.ones(1, 32, 48), atol=1e-5)


def test_partial_cross_entropy_learns_the_clicks():
    torch.manual_seed(0)
    model = tiny_sasformer(alpha=0.2)
    images = torch.randn(4, 3, 32, 32)
    sparse = torch.full((4, 32, 32), 255)
    sparse[:, 4:7, 4:7], sparse[:, 20:23, 20:23], sparse[:, 10:13, 25:28] = 1, 0, 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        losses = model.training_losses({"image": images, "sparse": sparse})
        first = losses["seg"].item() if first is None else first
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert losses["seg"].item() < 0.5 * first


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("supervision", ["point", "scribble"])
def test_fit_test_and_predict_through_the_cli(in_tmp: Path, tiny_fit_args: list[str], supervision: str):
    recipe = str(RECIPES / f"sasformer_{supervision}_synthetic.yaml")
    fast = [*tiny_fit_args, "--model.init_args.test_scales=[0.75, 1.0]"]
    main(["fit", "--config", recipe, *fast])
    version = next(in_tmp.glob("**/lightning_logs/version_0"))
    assert f"supervision: {supervision}" in (version / "config.yaml").read_text()
    ckpt = next(version.glob("checkpoints/*.ckpt"))
    main(["test", "--config", recipe, *fast, f"--ckpt_path={ckpt}"])
    main(["predict", "--config", recipe, *fast, f"--ckpt_path={ckpt}"])
    masks = in_tmp / f"runs/sasformer_{supervision}_synthetic/pseudo_masks"
    assert len(list(masks.glob("*.png"))) == 32
    assert 0 < json.loads((masks / "metrics.json").read_text())["pseudo_mask_miou"] <= 1


@pytest.mark.parametrize("supervision", ["point", "scribble"])
def test_the_voc_recipe_without_voc_says_how_to_get_data(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                         supervision: str):
    recipe = RECIPES / f"sasformer_{supervision}.yaml"
    assert f"RECIPE=sasformer_{supervision}_synthetic" in recipe.read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe)])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wsss: error:")]
    assert len(errors) == 1 and "dataset root data/VOCdevkit/VOC2012 does not exist" in errors[0]
    assert "wsss synth voc" in errors[0]
    assert f"make train RECIPE=sasformer_{supervision}_synthetic" in errors[0]
