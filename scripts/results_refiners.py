"""Pseudo-mask refinement on the synthetic VOC-layout data: unrefined vs PAR vs CRF vs random walk (issue 8).

Stage 1 trains the CAM baseline (``recipes/cam_baseline_synthetic.yaml``) and MCTformer-V2
(``recipes/mctformer_v2_synthetic.yaml``) through the CLI, as ``wsss demo`` does. Stage 2 writes
pseudo-masks of the training images with :class:`~wsss.callbacks.PseudoMaskWriter`, once per refiner, and
scores them against the ground truth (mIoU with background: the writer's ``pseudo_mask_miou``). The CAM
baseline is refined by PAR and by the dense CRF (PSA and IRN presets); MCTformer-V2 by its own patch-affinity
random walk (MCTformer and PSA presets) and by PAR. The time spent inside each refiner is measured and
reported as images/s (it excludes the CAM forward passes and, for the random walk, the attention forward of
``patch_affinity``). Writes a Markdown table to ``docs/results/refiners.md``.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/results_refiners.py
"""

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from wsss.callbacks import PseudoMaskWriter
from wsss.data.synthetic import make_synthetic_voc
from wsss.main import make_cli
from wsss.pseudo.affinity import AffinityRandomWalk
from wsss.pseudo.crf import DenseCRF
from wsss.pseudo.par import PixelAdaptiveRefiner
from wsss.pseudo.refiner import Refiner

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CAM_REFINERS: dict[str, Callable[[], Refiner | None]] = {
    "unrefined": lambda: None,
    "PAR (10 it, dilations 1..24)": PixelAdaptiveRefiner,
    "DenseCRF psa preset": lambda: DenseCRF("psa"),
    "DenseCRF irn preset": lambda: DenseCRF("irn"),
}
TRANSFORMER_REFINERS: dict[str, Callable[[], Refiner | None]] = {
    "unrefined": lambda: None,
    "random walk, mctformer preset (P·CAM once)": lambda: AffinityRandomWalk("mctformer"),
    "random walk, psa preset (β 8, T^64)": lambda: AffinityRandomWalk("psa"),
    "PAR (10 it, dilations 1..24)": PixelAdaptiveRefiner,
}


class TimedRefiner(Refiner):
    """Delegates to a refiner and adds up the seconds spent in it and the images it refined."""

    def __init__(self, refiner: Refiner) -> None:
        self.refiner = refiner
        self.needs_affinity = refiner.needs_affinity
        self.seconds = 0.0
        self.images = 0

    def __call__(self, image: Tensor, scores: Tensor, affinity: Tensor | None = None) -> Tensor:
        """The wrapped refiner's output, timed."""
        start = time.perf_counter()
        refined = self.refiner(image, scores, affinity)
        self.seconds += time.perf_counter() - start
        self.images += scores.shape[0]
        return refined


def train(recipe: str, data_root: Path, size: int, epochs: int, seed: int, out: Path,
          extra: list[str]) -> tuple[L.LightningModule, L.LightningDataModule, float]:
    """Fit a recipe on the synthetic data without validation; return the model, its data and the minutes."""
    cli = make_cli(["--config", str(RECIPES / recipe), f"--seed_everything={seed}",
                    f"--data.init_args.root={data_root}", f"--data.init_args.crop_size={size}",
                    f"--trainer.max_epochs={epochs}", f"--trainer.default_root_dir={out}",
                    "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
                    "--trainer.enable_progress_bar=false", "--trainer.logger=false", *extra], run=False)
    start = time.time()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.model, cli.datamodule, (time.time() - start) / 60


def pseudo_masks(model: L.LightningModule, data: L.LightningDataModule, refiners: dict, out: Path) -> dict:
    """Write the training images' pseudo-masks once per refiner; mIoU, seed mIoU and images/s of each."""
    results = {}
    for name, build in refiners.items():
        refiner = build()
        timed = None if refiner is None else TimedRefiner(refiner)
        writer = PseudoMaskWriter(str(out / f"masks_{len(results)}"), refiner=timed)
        L.Trainer(callbacks=[writer], logger=False, enable_progress_bar=False,
                  default_root_dir=out).predict(model, datamodule=data, return_predictions=False)
        rate = float("nan") if timed is None else timed.images / max(timed.seconds, 1e-9)
        results[name] = writer.results | {"images_per_s": rate}
        print(f"{name}: {results[name]}", flush=True)
    return results


def table(per_seed: dict[int, dict[str, dict]]) -> str:
    """One Markdown row per refiner: pseudo-mask mIoU per training seed, mean, mean change, images/s."""
    seeds = list(per_seed)
    names = list(per_seed[seeds[0]])

    def mean(name: str, key: str) -> float:
        return sum(per_seed[s][name][key] for s in seeds) / len(seeds)

    base = mean("unrefined", "pseudo_mask_miou")
    header = " | ".join(f"seed {s}" for s in seeds)
    rows = [f"| refiner | {header} | mean mIoU (%) | Δ mean vs unrefined | refiner images/s |",
            "|---|" + "---|" * (len(seeds) + 3)]
    for name in names:
        cells = " | ".join(f"{100 * per_seed[s][name]['pseudo_mask_miou']:.1f}" for s in seeds)
        rate = "–" if name == "unrefined" else f"{mean(name, 'images_per_s'):.1f}"
        miou = mean(name, "pseudo_mask_miou")
        rows.append(f"| {name} | {cells} | {100 * miou:.1f} | {100 * (miou - base):+.1f} | {rate} |")
    cells = " | ".join(f"{100 * per_seed[s]['unrefined']['seed_miou']:.1f} "
                       f"(t {per_seed[s]['unrefined']['seed_bg_threshold']:.2f})" for s in seeds)
    rows.append(f"| (reference) unrefined CAM seed at the best bg threshold t | {cells} | "
                f"{100 * mean('unrefined', 'seed_miou'):.1f} | | |")
    return "\n".join(rows)


def main() -> None:
    """Train both methods, write and score the pseudo-masks, write the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/results_refiners"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/refiners.md"))
    parser.add_argument("--n-train", type=int, default=240)
    parser.add_argument("--n-val", type=int, default=8)
    parser.add_argument("--cam-size", type=int, default=96)
    parser.add_argument("--cam-epochs", type=int, default=12)
    parser.add_argument("--mct-size", type=int, default=64)
    parser.add_argument("--mct-epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    sections = []
    for label, recipe, size, epochs, refiners, extra in (
        ("CAM baseline (ResNet-18)", "cam_baseline_synthetic.yaml", args.cam_size, args.cam_epochs,
         CAM_REFINERS, ["--model.init_args.bg_threshold=0.15"]),  # IRN's value, as when the table was made
        ("MCTformer-V2 (hybrid ViT, 4 blocks)", "mctformer_v2_synthetic.yaml", args.mct_size, args.mct_epochs,
         TRANSFORMER_REFINERS, [f"--model.init_args.img_size={args.mct_size}"]),
    ):
        data_root = make_synthetic_voc(args.work / f"data_{size}", n_train=args.n_train, n_val=args.n_val,
                                       size=size, seed=0)
        per_seed, minutes = {}, []
        for seed in args.seeds:
            work = args.work / Path(recipe).stem / f"seed_{seed}"
            model, data, train_minutes = train(recipe, data_root, size, epochs, seed, work, extra)
            per_seed[seed] = pseudo_masks(model, data, refiners, work)
            minutes.append(f"{train_minutes:.1f}")
        sections.append(f"## {label}\n\n`recipes/{recipe}`, {size} px, {epochs} epochs "
                        f"(training {' / '.join(minutes)} min per seed).\n\n{table(per_seed)}\n")
        print(sections[-1], flush=True)
    command = ("OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/results_refiners.py "
               f"--n-train {args.n_train} --n-val {args.n_val} --cam-size {args.cam_size} "
               f"--cam-epochs {args.cam_epochs} --mct-size {args.mct_size} --mct-epochs {args.mct_epochs} "
               f"--seeds {' '.join(map(str, args.seeds))}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "<!-- generated by scripts/results_refiners.py; the discussion below is written by hand -->\n"
        "# Pseudo-mask refinement on the synthetic data\n\n"
        "Pseudo-masks of the training images (`train_aug`), mIoU over background + 5 classes against their "
        "ground truth; background from each recipe's constant `bg_threshold`, absent classes excluded by the "
        "image labels.\n\n" + "\n".join(sections) +
        f"\nCommand: `{command}`  \nMachine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread, torch {torch.__version__}; data seed 0, "
        f"training seeds {args.seeds}; total {(time.time() - start) / 60:.1f} min wall time.\n"
    )


if __name__ == "__main__":
    main()
