"""CRT on the synthetic VOC-layout data: lambda = 0.1 vs 0 (paper Table 1), overlapping cutting-merging vs
bilinear up-sampling of a one-tile CAM (Table 2), 3 loops vs 0 (Table 3), and WSOL accuracy on single-class
synthetic images with boxes derived from the masks. Writes docs/results/crt.md.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/results_crt.py

Every WSSS run is ``recipes/crt_synthetic.yaml`` with the overrides below; the table reports the single-scale
seed mIoU of the transformer branch's eq. 1 CAMs (background 0.15, GT image labels) on the val split after
training. The WSOL model is the recipe's model with ``task: wsol``.
"""

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import default_collate

from wsss.data.synthetic import make_synthetic_voc
from wsss.data.voc import VOCDataModule
from wsss.eval import WSOLAccuracy
from wsss.eval.wsol import DEFAULT_CAM_THRESHOLDS
from wsss.main import make_cli
from wsss.methods.crt import CRT
from wsss.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "crt_synthetic.yaml"
CRT_LABEL = "CRT (lambda 0.1, cut-merge, 3 loops)"
PAPER = {"cam_weight": 0.1, "enlargement": "cut_merge", "loops": 3}
VARIANTS = {  # label -> overrides of the paper's setting
    CRT_LABEL: {},
    "lambda = 0": {"cam_weight": 0.0},
    "bilinear up-sampling of a one-tile CAM": {"enlargement": "bilinear"},
    "0 loops": {"loops": 0},
}
TABLES = (  # (paper table, claim, the other variant, strict): CRT_LABEL is expected better (or equal)
    ("Table 1", "seed mIoU with lambda = 0.1 > lambda = 0", "lambda = 0", True),
    ("Table 2", "cutting-merging > bilinear up-sampling of a one-tile CAM",
     "bilinear up-sampling of a one-tile CAM", True),
    ("Table 3", "3 loops >= 0 loops", "0 loops", False),
)
MIN_BOX_PIXELS = 20


def run_wsss(overrides: dict, seed: int, args: argparse.Namespace, data_root: Path, out_dir: Path) -> tuple:
    """Fit the synthetic recipe with ``overrides``; return (val seed mIoU, val mAP)."""
    settings = PAPER | overrides
    cli = make_cli([
        "--config", str(RECIPE), f"--seed_everything={seed}",
        f"--data.init_args.root={data_root}", f"--data.init_args.crop_size={args.crop}",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--data.init_args.eval_batch_size={args.batch_size}",
        *(f"--model.init_args.{k}={v}" for k, v in settings.items()),
        f"--trainer.max_epochs={args.epochs}", f"--trainer.default_root_dir={out_dir}",
        "--trainer.callbacks=[]", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.check_val_every_n_epoch={args.epochs}", "--trainer.num_sanity_val_steps=0",
    ], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.callback_metrics
    return float(metrics["val/seed_miou"]), float(metrics["val/map"])


def mask_boxes(mask: np.ndarray, label: int) -> np.ndarray:
    """xyxy boxes (pixel edges) of the 8-connected regions of class ``label`` (255 bands split instances)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask == label).astype(np.uint8), connectivity=8)
    boxes = [(x, y, x + w, y + h) for x, y, w, h, area in stats[1:count] if area >= MIN_BOX_PIXELS]
    return np.array(boxes, np.float32).reshape(-1, 4)


class SingleClassWSOL(Dataset):
    """The single-class images of a synthetic VOC split as WSOL samples: ``label``, (eval) mask ``boxes``."""

    def __init__(self, samples: Dataset, with_boxes: bool) -> None:
        self.samples = samples
        self.with_boxes = with_boxes
        self.indices = [i for i in range(len(samples)) if samples[i]["cls_labels"].sum() == 1]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.samples[self.indices[index]])
        sample["label"] = int(sample["cls_labels"].argmax())
        if self.with_boxes:
            sample["boxes"] = torch.from_numpy(mask_boxes(sample["mask"].numpy(), sample["label"] + 1))
        return sample


def collate_with_boxes(samples: list[dict]) -> dict:
    """Default collation, except ``boxes``: a list of (N_i, 4) tensors."""
    boxes = [s.pop("boxes") for s in samples] if "boxes" in samples[0] else None
    batch = default_collate(samples)
    return batch if boxes is None else batch | {"boxes": boxes}


def run_wsol(seed: int, args: argparse.Namespace, data_root: Path, out_dir: Path) -> dict[str, float]:
    """Train the recipe's CRT with ``task: wsol`` on the single-class train images; localisation on the
    single-class val images."""
    L.seed_everything(seed)
    data = VOCDataModule(str(data_root), crop_size=args.crop, scale_range=(0.7, 1.3))
    train = SingleClassWSOL(data.dataset("train"), with_boxes=False)
    val = SingleClassWSOL(data.dataset("val"), with_boxes=True)
    recipe = load_recipe(RECIPE)["model"]["init_args"]
    model = CRT(**recipe | {"task": "wsol", "num_classes": data.num_classes, "cam_scales": (1.0,)})
    trainer = L.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out_dir,
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, DataLoader(train, batch_size=args.batch_size, shuffle=True))
    metric = WSOLAccuracy(cam_thresholds=DEFAULT_CAM_THRESHOLDS)
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(val, batch_size=1, collate_fn=collate_with_boxes):
            logits, cams = model.logits_and_cams(batch["image"])
            cams = F.interpolate(cams, size=batch["image"].shape[-2:], mode="bilinear", align_corners=False)
            metric.update(logits, cams, batch["label"], batch["boxes"])
    best = {k: float(v) for k, v in metric.compute().items()}
    curve = metric.localization_curve()
    at = int(np.argmin(np.abs(curve["cam_threshold"].numpy() - 0.1)))
    fixed = {f"{k}@0.1": float(curve[k][at]) for k in ("loc_top1", "loc_top5", "loc_gt_known")}
    return best | fixed | {"n_train": len(train), "n_val": len(val)}


def fmt(values: list[float]) -> str:
    """Mean (and the per-seed values when there are several) in percent."""
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ({', '.join(f'{100 * v:.1f}' for v in values)})"


def main() -> None:
    """Run every variant and seed, then the WSOL run(s); print progress and write the markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-val", type=int, default=48)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--wsol-n-train", type=int, default=480)
    parser.add_argument("--wsol-n-val", type=int, default=150)
    parser.add_argument("--output", type=Path, default=ROOT / "docs/results/crt.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    results: dict[str, tuple[list[float], list[float]]] = {}
    wsol: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_root = make_synthetic_voc(Path(tmp) / "voc", n_train=args.n_train, n_val=args.n_val,
                                       size=args.size, seed=args.data_seed)
        for label, overrides in VARIANTS.items():
            seeds, maps = results.setdefault(label, ([], []))
            for seed in args.seeds:
                miou, mean_ap = run_wsss(overrides, seed, args, data_root, Path(tmp) / "runs")
                seeds.append(miou)
                maps.append(mean_ap)
                print(f"[{time.time() - start:6.0f}s] {label} | seed {seed}: seed mIoU {miou:.4f} "
                      f"mAP {mean_ap:.4f}", flush=True)
        wsol_root = make_synthetic_voc(Path(tmp) / "wsol_voc", n_train=args.wsol_n_train,
                                       n_val=args.wsol_n_val, size=args.size, seed=args.data_seed + 1)
        for seed in args.seeds:
            wsol.append(run_wsol(seed, args, wsol_root, Path(tmp) / "wsol"))
            print(f"[{time.time() - start:6.0f}s] WSOL | seed {seed}: {wsol[-1]}", flush=True)
    write_markdown(args, results, wsol, (time.time() - start) / 60)


def optimiser_text() -> str:
    """The recipe's optimiser, learning rate, schedule and warm-up in words."""
    hp = load_recipe(RECIPE)["model"]["init_args"]
    warmup = hp.get("warmup_epochs", 0)
    return (f"{hp.get('optimizer', 'sgd')} lr {hp['lr']:g} {hp.get('scheduler', 'poly')}"
            + (f" with {warmup:g} warm-up epoch(s)" if warmup else ""))


def write_markdown(args: argparse.Namespace, results: dict, wsol: list[dict], minutes: float) -> None:
    """The tables, the checks of the issue, the command, the machine and the seeds."""
    lines = [
        "# CRT on the synthetic data (reduced CPU size)",
        "",
        "Paper 004 (CRT, Huo et al.): Table 1 (lambda), Table 2 (map enlargement), Table 3 (loops), WSOL. "
        "ResNet-18 + a 2-block hybrid ViT (ResNet stem, tokens at stride 8, 96-d) with 64 px tiles, both "
        "from scratch, AdamW (`recipes/crt_synthetic.yaml`, which lists and explains the changes from the "
        "paper, with the overrides of the script); the L1 term is off in epoch 0 as in the official code. "
        "Seed mIoU in % over background + 5 classes, transformer-branch eq. 1 CAMs at one scale, background "
        "0.15, val split; mean over the training seeds, per-seed values in brackets.",
        "",
        "| variant | lambda | enlargement | loops | seed mIoU | mAP |",
        "|---|---|---|---|---|---|",
    ]
    for label, (seeds, maps) in results.items():
        s = PAPER | VARIANTS[label]
        lines.append(f"| {label} | {s['cam_weight']} | {s['enlargement']} | {s['loops']} | {fmt(seeds)} | "
                     f"{fmt(maps)} |")
    lines += ["", "Checks (mean seed mIoU):", ""]
    for table, claim, other, strict in TABLES:
        a, b = statistics.fmean(results[CRT_LABEL][0]), statistics.fmean(results[other][0])
        holds = a > b if strict else a >= b
        lines.append(f"- {table}: {claim}: **{'yes' if holds else 'no'}** ({100 * a:.2f} vs {100 * b:.2f})")
    first = wsol[0]
    thresholds = ", ".join(f"{w['cam_threshold']:.2f}" for w in wsol)
    lines += [
        "",
        "## WSOL on single-class synthetic images",
        "",
        f"CRT with `task: wsol` (softmax cross-entropy in both branches) trained on the {first['n_train']} "
        f"single-class training images of a second synthetic set (`make_synthetic_voc(n_train="
        f"{args.wsol_n_train}, n_val={args.wsol_n_val}, size={args.size}, seed={args.data_seed + 1})`); "
        f"evaluated on its {first['n_val']} single-class val images, whose ground-truth boxes are the "
        "bounding boxes of the 8-connected regions of the class in the mask (regions of fewer than "
        f"{MIN_BOX_PIXELS} px dropped; a box with IoU >= 0.5 with any of them localises). "
        "Eq. 1 CAMs at one scale, min-max normalised at image size.",
        "",
        "| CAM threshold | top-1 loc | top-5 loc | GT-known loc | top-1 cls |",
        "|---|---|---|---|---|",
        f"| 0.1 (TS-CAM / CRT protocol) | {fmt([w['loc_top1@0.1'] for w in wsol])} | "
        f"{fmt([w['loc_top5@0.1'] for w in wsol])} | {fmt([w['loc_gt_known@0.1'] for w in wsol])} | "
        f"{fmt([w['cls_top1'] for w in wsol])} |",
        f"| best of 0.05-0.95 (tuned on GT boxes: {thresholds}) | "
        f"{fmt([w['loc_top1'] for w in wsol])} | {fmt([w['loc_top5'] for w in wsol])} | "
        f"{fmt([w['loc_gt_known'] for w in wsol])} | {fmt([w['cls_top1'] for w in wsol])} |",
        "",
        "With 5 classes, top-5 loc equals GT-known loc.",
        "",
        "## How this was run",
        "",
        "```",
        "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/results_crt.py "
        f"--n-train {args.n_train} --n-val {args.n_val} --size {args.size} --crop {args.crop} "
        f"--batch-size {args.batch_size} --epochs {args.epochs} --seeds {' '.join(map(str, args.seeds))} "
        f"--data-seed {args.data_seed} --wsol-n-train {args.wsol_n_train} --wsol-n-val {args.wsol_n_val}",
        "```",
        "",
        f"- Data: `make_synthetic_voc(n_train={args.n_train}, n_val={args.n_val}, size={args.size}, "
        f"seed={args.data_seed})`, 5 classes; {args.crop} px crops (2x2 overlapping 64 px tiles), batch "
        f"{args.batch_size}, {args.epochs} epochs, {optimiser_text()}, training seeds {args.seeds}.",
        f"- Machine: {platform.machine()} CPU ({platform.processor() or platform.platform()}), 1 thread, "
        f"shared with other jobs; torch {torch.__version__}; {minutes:.1f} min wall for all runs.",
        "- This is a reduced size (minutes of CPU, tiny models from scratch): compare the gaps with the "
        "spread of the per-seed values. The paper's numbers come from ImageNet-pretrained ResNet-152 + "
        "DeiT-S on VOC and are not comparable.",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
