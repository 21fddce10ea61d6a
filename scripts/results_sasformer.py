"""SASFormer on the synthetic VOC-layout data: alpha > 0 vs alpha = 0 (paper Tables 1-2) and the
affinity levels (Table 3: all four vs level 1 alone), with point and with scribble labels; writes
docs/results/sasformer.md.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/results_sasformer.py

Every run is the synthetic recipe (``recipes/sasformer_<supervision>_synthetic.yaml``) with the overrides
below; the table reports the final single-scale val mIoU and the multi-scale + flip test mIoU (the same
val split).
"""

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from results_markdown import write_results

from wsss.data import VOCDataModule
from wsss.data.synthetic import make_synthetic_voc
from wsss.eval import SegmentationIoU
from wsss.main import make_cli

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "docs/results/sasformer.md"
PAPER_ALPHA = {"point": 0.2, "scribble": 1.2}
VARIANTS = (  # (label, alpha or None for the paper's, affinity levels)
    ("CE only (alpha = 0)", 0.0, [1, 2, 3, 4]),
    ("SASFormer, level 1 only", None, [1]),
    ("SASFormer, levels 1-4 (paper)", None, [1, 2, 3, 4]),
)


def run_one(supervision: str, alpha: float, levels: list[int], seed: int, args: argparse.Namespace,
            data_root: Path, out_dir: Path) -> tuple[float, float]:
    """Fit one synthetic recipe with overrides; return (val mIoU single-scale, test mIoU ms + flip)."""
    recipe = ROOT / "recipes" / f"sasformer_{supervision}_synthetic.yaml"
    cli = make_cli([
        "--config", str(recipe), f"--seed_everything={seed}",
        f"--data.init_args.root={data_root}", f"--data.init_args.crop_size={args.crop}",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--data.init_args.eval_batch_size={args.batch_size}",
        f"--model.init_args.alpha={alpha}", f"--model.init_args.affinity_levels={levels}",
        f"--trainer.max_epochs={args.epochs}", f"--trainer.default_root_dir={out_dir}",
        "--trainer.callbacks=[]", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        f"--trainer.check_val_every_n_epoch={args.epochs}",
        *([f"--model.init_args.encoder_weights={args.encoder_weights}"] if args.encoder_weights else []),
        *([f"--model.init_args.lr={args.lr}"] if args.lr else []),
    ], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    val = float(cli.trainer.callback_metrics["val/miou"])
    test = float(cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]["test/miou"])
    return val, test


def background_only_miou(data_root: Path) -> float:
    """The val mIoU of predicting background everywhere: the floor a run must clear to have learned."""
    dataset = VOCDataModule(str(data_root)).dataset("val")
    metric = SegmentationIoU(num_classes=dataset.num_classes + 1)
    for index in range(len(dataset)):
        mask = dataset[index]["mask"][None]
        metric.update(torch.zeros_like(mask), mask)
    return float(metric.compute())


def fmt(values: list[float]) -> str:
    """Mean (and the per-seed values when there are several) in percent."""
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ({', '.join(f'{100 * v:.1f}' for v in values)})"


def main() -> None:
    """Run every (supervision, variant, seed), print progress, write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-val", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--encoder-weights", type=Path, help="a local MiT-B0 encoder state dict, e.g. from "
                        "scripts/pretrain_synthetic.py (default: from scratch)")
    parser.add_argument("--lr", type=float, help="override the recipes' learning rate")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    results: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_root = make_synthetic_voc(Path(tmp) / "voc", n_train=args.n_train, n_val=args.n_val,
                                       size=args.size, seed=args.data_seed)
        floor = background_only_miou(data_root)
        for supervision in ("point", "scribble"):
            for label, alpha, levels in VARIANTS:
                alpha = PAPER_ALPHA[supervision] if alpha is None else alpha
                vals, tests = results.setdefault((supervision, label), ([], []))
                for seed in args.seeds:
                    val, test = run_one(supervision, alpha, levels, seed, args, data_root, Path(tmp) / "runs")
                    vals.append(val)
                    tests.append(test)
                    print(f"[{time.time() - start:6.0f}s] {supervision} | {label} | alpha {alpha} | "
                          f"seed {seed}: val {val:.4f} test {test:.4f}", flush=True)
    minutes = (time.time() - start) / 60
    write_markdown(args, results, minutes, floor)


def write_markdown(args: argparse.Namespace, results: dict, minutes: float, floor: float) -> None:
    """The table, the two checks of the issue, the command, the machine and the seeds."""
    init = (f"MiT-B0 initialised from `{args.encoder_weights.name}` (see below)" if args.encoder_weights
            else "MiT-B0 from scratch")
    options = (f" --encoder-weights {args.encoder_weights}" if args.encoder_weights else "") + (
        f" --lr {args.lr}" if args.lr else "")
    output = "" if args.output == DEFAULT_OUTPUT else f" --output {args.output}"
    lines = [
        "# SASFormer on the synthetic data (reduced CPU size)",
        "",
        "Paper 001 (SASFormer): Tables 1-2 (the affinity loss improves on the CE-only baseline) and Table 3 "
        f"(all four attention levels vs level 1 alone). {init}, the synthetic recipes "
        "`recipes/sasformer_{point,scribble}_synthetic.yaml` with the overrides of the script. "
        "mIoU in % over background + 5 classes; val = single scale, test = scales 0.5-2.0 + flip "
        "(the same split).",
        "",
        "| labels | variant | alpha | val mIoU | test mIoU (ms + flip) |",
        "|---|---|---|---|---|",
    ]
    for (supervision, label), (vals, tests) in results.items():
        alpha = 0.0 if label.startswith("CE only") else PAPER_ALPHA[supervision]
        lines.append(f"| {supervision} | {label} | {alpha} | {fmt(vals)} | {fmt(tests)} |")
    lines += ["", f"Predicting background everywhere scores {100 * floor:.2f} val mIoU; a run near it has "
              "not learned the foreground classes.", "", "Checks (on the mean single-scale val mIoU):", ""]
    for supervision in ("point", "scribble"):
        mean = {label: statistics.fmean(results[(supervision, label)][0]) for label, _, _ in VARIANTS}
        base, one, four = (mean[label] for label, _, _ in VARIANTS)
        lines.append(f"- {supervision}: alpha > 0 beats alpha = 0: **{'yes' if four > base else 'no'}** "
                     f"({100 * four:.2f} vs {100 * base:.2f}); all four levels >= level 1 alone: "
                     f"**{'yes' if four >= one else 'no'}** ({100 * four:.2f} vs {100 * one:.2f})")
    lines += [
        "",
        "## How this was run",
        "",
        "```",
        "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/results_sasformer.py "
        f"--n-train {args.n_train} --n-val {args.n_val} --size {args.size} --crop {args.crop} "
        f"--batch-size {args.batch_size} --epochs {args.epochs} --seeds {' '.join(map(str, args.seeds))} "
        f"--data-seed {args.data_seed}{options}{output}",
        "```",
        "",
        f"- Data: `make_synthetic_voc(n_train={args.n_train}, n_val={args.n_val}, size={args.size}, "
        f"seed={args.data_seed})`, 5 classes; {args.crop} px crops, batch {args.batch_size}, "
        f"{args.epochs} epochs, training seeds {args.seeds}.",
        f"- Machine: {platform.machine()} CPU ({platform.processor() or platform.platform()}), 1 thread, "
        f"shared with other jobs; torch {torch.__version__}; {minutes:.1f} min wall for all runs.",
        f"- This is a reduced size (minutes of CPU per run, {init}): gaps smaller than the "
        "spread between seeds are run-to-run noise, so read the directions with care.",
        "",
    ]
    write_results(args.output, "\n".join(lines))


if __name__ == "__main__":
    main()
