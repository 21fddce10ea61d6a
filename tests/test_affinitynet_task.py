"""Learned AffinityNet: confident-label merge, training task, learned-affinity walk and the CLI chain."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from wsss.data.voc import IMAGENET_MEAN, IMAGENET_STD, VOCDataModule
from wsss.main import main
from wsss.methods.affinitynet import AffinityNetTask
from wsss.pseudo import confident
from wsss.pseudo.affinity import AffinityRandomWalk
from wsss.pseudo.io import write_mask_png
from wsss.pseudo.learned_affinity import LearnedAffinityRandomWalk

RECIPES = Path(__file__).parents[1] / "recipes"
CAM_RECIPE = str(RECIPES / "cam_baseline_synthetic.yaml")


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def tiny_task() -> AffinityNetTask:
    torch.manual_seed(0)
    return AffinityNetTask(backbone="resnet18", num_classes=3, radius=3, optimizer="adamw", lr=1e-3)


def test_merge_keeps_confident_fg_and_bg_and_marks_the_rest_unsure(tmp_path: Path):
    fg, bg = tmp_path / "fg", tmp_path / "bg"
    fg.mkdir(), bg.mkdir()
    write_mask_png(np.array([[0, 1], [2, 0]]), fg / "a.png")
    write_mask_png(np.array([[0, 0], [2, 1]]), bg / "a.png")
    assert confident.main(["--fg", str(fg), "--bg", str(bg), "--out", str(tmp_path / "out")]) == 0
    # fg says a class -> the class; both say background -> 0; fg background but bg foreground -> unsure
    np.testing.assert_array_equal(read_png(tmp_path / "out" / "a.png"), [[0, 1], [2, 255]])

    foreign = tmp_path / "gt"
    foreign.mkdir()
    (foreign / "x.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not empty"):
        confident.merge_confident_labels(fg, bg, foreign)
    write_mask_png(np.zeros((2, 2)), fg / "b.png")
    with pytest.raises(FileNotFoundError, match="missing from"):
        confident.merge_confident_labels(fg, bg, tmp_path / "out2")


def confident_folder(synthetic_voc: Path, out: Path) -> Path:
    """Ground-truth masks with every other 8-pixel band of columns unsure (255)."""
    out.mkdir()
    for path in (synthetic_voc / "SegmentationClassAug").glob("*.png"):
        mask = read_png(path).copy()
        mask[:, 8:16] = 255
        mask[:, 32:40] = 255
        write_mask_png(mask, out / path.name)
    return out


def test_affinitynet_learns_on_confident_labels(synthetic_voc: Path, tmp_path: Path):
    labels = confident_folder(synthetic_voc, tmp_path / "confident")
    data = VOCDataModule(
        root=str(synthetic_voc),
        crop_size=48,
        scale_range=(1.0, 1.0),
        hflip=False,
        batch_size=4,
        supervision="dense",
        mask_dir=str(labels),
    )
    data.setup("fit")
    torch.manual_seed(0)  # the shuffle; no other randomness with the 48-px crop of 48-px images
    batch = next(iter(data.train_dataloader()))
    assert (batch["mask"] == 255).any() and (batch["mask"] != 255).any()
    task = tiny_task()
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        terms = task.training_losses(batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert terms["positive_affinity"] > terms["negative_affinity"]


def test_patch_affinity_is_the_dense_l1_affinity_within_the_radius():
    task = tiny_task().eval()
    images = torch.randn(2, 3, 40, 48)
    affinity = task.patch_affinity(images)
    embedding = task(images)
    h, w = embedding.shape[-2:]
    assert (h, w) == (5, 6) and affinity.shape == (2, 30, 30)
    assert torch.allclose(affinity, affinity.transpose(1, 2)) and torch.allclose(
        torch.diagonal(affinity, dim1=1, dim2=2), torch.ones(2, 30)
    )
    # cell (0, 0) -> (1, 2): distance² 5 < 9, so exp(-mean_c |f_i - f_j|); (0, 0) -> (0, 3): 9, outside
    f = embedding[1]
    expected = torch.exp(-(f[:, 0, 0] - f[:, 1, 2]).abs().mean())
    assert torch.isclose(affinity[1, 0, 1 * w + 2], expected, atol=1e-6)
    assert affinity[1, 0, 3] == 0
    assert bool((affinity >= 0).all() and (affinity <= 1).all())


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint of an untrained tiny AffinityNetTask."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(tiny_task())
    path = tmp_path / "affinitynet.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_learned_walk_normalises_the_image_and_delegates_the_walk(checkpoint: Path):
    refiner = LearnedAffinityRandomWalk(str(checkpoint), preset="irn", log_t=3)
    assert not refiner.needs_affinity and refiner.walk.params.beta == 10.0
    torch.manual_seed(1)
    image = torch.rand(2, 3, 48, 48) * 255
    scores = torch.rand(2, 4, 48, 48)
    refined = refiner(image, scores)
    assert refined.shape == scores.shape
    shape = (1, 3, 1, 1)
    normalised = (image - torch.tensor(IMAGENET_MEAN).view(shape)) / torch.tensor(IMAGENET_STD).view(shape)
    affinity = tiny_task().eval().patch_affinity(normalised)
    expected = AffinityRandomWalk(preset="irn", log_t=3)(image, scores, affinity)
    torch.testing.assert_close(refined, expected)


def test_missing_or_wrong_checkpoint_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.ckpt does not exist"):
        LearnedAffinityRandomWalk(str(tmp_path / "nowhere.ckpt"))
    with pytest.raises(ValueError, match="differ in length"):
        LearnedAffinityRandomWalk(__file__, mean=(0.0,), std=(1.0, 1.0))
    with pytest.raises(ValueError, match="is not an AffinityNetTask checkpoint"):
        LearnedAffinityRandomWalk(__file__)


def test_predict_twice_merge_fit_then_walk_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_fit_args: list[str], synthetic_voc: Path
):
    monkeypatch.chdir(tmp_path)
    fast_cams = ["--model.init_args.cam_scales=[1.0]", "--model.init_args.cam_flip=false"]
    written = tmp_path / "runs/cam_baseline_synthetic/pseudo_masks"
    for name, threshold in (("fg", 0.30), ("bg", 0.05)):
        main(
            [
                "predict",
                "--config",
                CAM_RECIPE,
                *tiny_fit_args,
                *fast_cams,
                f"--model.init_args.bg_threshold={threshold}",
            ]
        )
        written.rename(tmp_path / name)
    assert confident.main(["--fg", "fg", "--bg", "bg", "--out", "confident"]) == 0

    main(
        [
            "fit",
            "--config",
            str(RECIPES / "affinitynet_synthetic.yaml"),
            *tiny_fit_args,
            f"--data.init_args.mask_dir={tmp_path / 'confident'}",
            "--model.init_args.radius=3",
        ]
    )
    ckpt = next(tmp_path.glob("**/checkpoints/last.ckpt"))

    main(
        [
            "predict",
            "--config",
            CAM_RECIPE,
            "--config",
            str(RECIPES / "_base_/refine/learned_affinity.yaml"),
            *tiny_fit_args,
            *fast_cams,
            f"--trainer.callbacks.init_args.refiner.init_args.checkpoint={ckpt}",
        ]
    )
    refined = tmp_path / "runs/pseudo_masks_refined/learned_affinity"
    names = (synthetic_voc / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert sorted(p.stem for p in refined.glob("*.png")) == sorted(names)
    assert read_png(refined / f"{names[0]}.png").shape == (48, 48)
    assert 0 < json.loads((refined / "metrics.json").read_text())["pseudo_mask_miou"] <= 1
