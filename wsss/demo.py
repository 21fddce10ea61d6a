"""``wsss demo``: the three-stage pipeline on the synthetic benchmark, with one table and one picture.

1. generate the synthetic VOC-layout data (skipped when present);
2. stage 1: train the CAM baseline on image-level labels;
3. stage 2: write pseudo-masks for the training images and score seeds and masks against their ground truth;
4. stage 3: train a UNet on the pseudo-masks, and one on the true masks (the upper bound);
5. score everything on the held-out split next to two trivial baselines, print the table and write
   ``results.md`` and ``panel.png`` in the output folder.
"""

import argparse
import json
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image

from wsss.callbacks import PseudoMaskWriter
from wsss.data.synthetic import make_synthetic_voc
from wsss.eval import SegmentationIoU
from wsss.main import make_cli
from wsss.pseudo.background import cams_to_mask
from wsss.viz import cam_overlay, colorize_mask, image_preview, tile_panel

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def trivial_baselines(datamodule: L.LightningDataModule) -> dict[str, float]:
    """mIoU on the val split of all-background masks and of each image filled with its most frequent class."""
    num_classes = datamodule.num_classes + 1
    background, frequent = SegmentationIoU(num_classes), SegmentationIoU(num_classes)
    for batch in datamodule.val_dataloader():
        mask = batch["mask"]
        background.update(torch.zeros_like(mask), mask)
        counts = (
            F.one_hot(mask.clamp(max=num_classes - 1), num_classes)
            .masked_fill((mask == 255)[..., None], 0)
            .flatten(1, 2)
            .sum(1)
        )
        counts[:, 0] = -1  # the most frequent *present* class: a foreground class of the image
        frequent.update(counts.argmax(1)[:, None, None].expand_as(mask), mask)
    return {"all_background": float(background.compute()), "most_frequent_class": float(frequent.compute())}


def fit_and_test(recipe: str, out: Path, overrides: list[str]) -> tuple[L.LightningModule, float]:
    """Train a recipe and return the model and its test mIoU."""
    cli = make_cli(
        ["--config", str(RECIPES / recipe), f"--trainer.default_root_dir={out}", *overrides], run=False
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    result = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return cli.model, result["test/miou"]


@torch.no_grad()
def draw_panel(cam_model, seg_model, datamodule, path: Path, n: int = 6) -> None:
    """Columns: image, CAM, seed mask, stage-3 prediction, ground truth, for the first val images."""
    batch = next(iter(datamodule.val_dataloader()))
    images, labels, masks = batch["image"][:n], batch["cls_labels"][:n], batch["mask"][:n]
    cam_model.eval(), seg_model.eval()
    cams = (
        F.interpolate(cam_model.cams(images), size=images.shape[-2:], mode="bilinear")
        * labels[:, :, None, None]
    )
    seeds = cams_to_mask(cams, labels, bg_threshold=cam_model.hparams.bg_threshold)
    preds = seg_model(images).argmax(1)
    rows = []
    for i in range(images.shape[0]):
        preview = image_preview(images[i])
        rows.append(
            [
                preview,
                cam_overlay(preview, cams[i].amax(0)),
                colorize_mask(seeds[i]),
                colorize_mask(preds[i]),
                colorize_mask(masks[i]),
            ]
        )
    Image.fromarray(tile_panel(rows, ["image", "CAM", "seed", "stage 3", "truth"], scale=3)).save(path)


def results_table(results: dict[str, float]) -> str:
    """The demo's markdown table."""
    rows = [
        ("seed (CAM, best bg threshold), train", results["seed_miou"]),
        (
            f"pseudo-mask (CAM, bg {results['pseudo_mask_bg_threshold']:.2f}), train",
            results["pseudo_mask_miou"],
        ),
        ("final: UNet on pseudo-masks, val", results["final_miou"]),
        ("upper bound: UNet on true masks, val", results["upper_bound_miou"]),
        ("trivial: all background, val", results["all_background"]),
        ("trivial: most frequent class per image, val", results["most_frequent_class"]),
    ]
    lines = ["| stage | mIoU (%) |", "|---|---|"] + [f"| {name} | {100 * v:.1f} |" for name, v in rows]
    return "\n".join(lines) + "\n"


def run(data: Path, out: Path, epochs: int, seg_epochs: int, n_train: int, size: int) -> dict[str, float]:
    """Run the whole demo and return its numbers."""
    make_synthetic_voc(data, n_train=n_train, n_val=max(n_train // 4, 8), size=size, seed=0)
    out.mkdir(parents=True, exist_ok=True)
    data_args = [f"--data.init_args.root={data}", f"--data.init_args.crop_size={size}"]

    stage1 = make_cli(
        [
            "--config",
            str(RECIPES / "cam_baseline_synthetic.yaml"),
            *data_args,
            f"--trainer.default_root_dir={out / 'stage1'}",
            f"--trainer.max_epochs={epochs}",
        ],
        run=False,
    )
    stage1.trainer.fit(stage1.model, datamodule=stage1.datamodule)

    writer = PseudoMaskWriter(str(out / "pseudo_masks"))
    L.Trainer(callbacks=[writer], logger=False, default_root_dir=out / "stage2").predict(
        stage1.model, datamodule=stage1.datamodule, return_predictions=False
    )

    seg_args = [*data_args, f"--trainer.max_epochs={seg_epochs}"]
    seg_model, final = fit_and_test(
        "segmentation_synthetic.yaml",
        out / "stage3",
        [*seg_args, f"--data.init_args.mask_dir={out / 'pseudo_masks'}"],
    )
    _, upper = fit_and_test("segmentation_synthetic.yaml", out / "upper_bound", seg_args)

    results = {
        **writer.results,
        "pseudo_mask_bg_threshold": stage1.model.hparams.bg_threshold,
        "final_miou": final,
        "upper_bound_miou": upper,
        **trivial_baselines(stage1.datamodule),
    }
    table = results_table(results)
    draw_panel(stage1.model, seg_model, stage1.datamodule, out / "panel.png")
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{table}\npanel: {out / 'panel.png'}")
    return results


def main(argv: list[str] | None = None) -> None:
    """Parse the demo's options and run it."""
    parser = argparse.ArgumentParser(prog="wsss demo", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/synthetic_voc"), help="synthetic data folder")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument("--epochs", type=int, default=12, help="stage-1 epochs")
    parser.add_argument("--seg-epochs", type=int, default=12, help="stage-3 epochs")
    parser.add_argument("--n-train", type=int, default=400, help="synthetic training images")
    parser.add_argument("--size", type=int, default=96, help="synthetic image side")
    args = parser.parse_args(argv)
    run(args.data, args.out, args.epochs, args.seg_epochs, args.n_train, args.size)
