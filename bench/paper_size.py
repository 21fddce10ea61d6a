"""Paper-size benchmark: each paper recipe's network at its paper batch and crop (to ``docs/benchmarks.md``).

Per row (the ``PAPER`` table): the recipe's model as its YAML builds it (optimiser, CAM scales and flips,
every method setting), and the median training-step time (forward, backward and optimiser step inside a
Lightning ``fit``), the CAM / pseudo-mask throughput of ``predict_step`` at the recipe's scales and flips,
and the peak memory of both phases, each phase in a fresh process (``bench/run.py``'s measurement). Weights
are random (the cost does not depend on them). On the CPU the default precision is fp32; ``--precision`` takes
any Lightning value (``bf16-mixed`` on a CPU with AVX-512 BF16); on CUDA the default is each recipe's
precision.

Run: ``python bench/run.py --paper-size [--device cuda] [--rows a,b]`` (``make bench ARGS=--paper-size``);
about 10-15 minutes on 2 CPU cores with one thread.
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

#: name -> (recipe, overrides of its model arguments, batch, crop, timed train steps, timed CAM images).
#: Each row builds its recipe's model (``optimizer``, ``pos_interp``, CAM scales and flips, ...) with random
#: weights; the overrides set the class and channel counts of the recipe's dataset (or, for the row at the
#: issue's measured size, a smaller backbone).
PAPER: dict[str, tuple[str, dict, int, int, int, int]] = {
    "mctformer_v2 (DeiT-S)": ("mctformer_v2_voc", {}, 8, 224, 3, 4),
    "bitrans (DeiT-S)": ("bitrans_voc", {}, 8, 224, 3, 4),
    "swtformer_v2 (Swin-T)": ("swtformer_v2_voc", {}, 4, 320, 3, 2),
    "crt (ResNet-152 + DeiT-S)": ("crt_voc", {}, 4, 336, 2, 1),
    "sasformer (MiT-B4)": ("sasformer_point", {}, 2, 512, 2, 1),
    "sasformer (MiT-B0, the issue's size)": ("sasformer_point", {"backbone": "mit_b0"}, 2, 256, 4, 1),
    "sparse_vit (12 blocks × 16 heads)": (
        "sparse_vit_dfc2020", {"num_classes": 8, "in_channels": 15}, 8, 224, 2, 8,
    ),
}


def recipe_model(name: str) -> tuple[str, dict, str]:
    """A row's model class path, its init arguments (the recipe's, with no weights files and no global-batch
    lr scaling, which needs a DataModule) and the recipe's training precision."""
    from wsss.recipes import load_recipe

    recipe, overrides, *_ = PAPER[name]
    config = load_recipe(RECIPES / f"{recipe}.yaml")
    kwargs = {"num_classes": 20, "in_channels": 3, **config["model"].get("init_args", {}), **overrides}
    kwargs["lr_reference_batch"] = None
    precision = str(config.get("trainer", {}).get("precision", "32-true"))
    return config["model"]["class_path"], kwargs, precision


def worker(name: str, phase: str, device: torch.device, precision: str) -> dict:
    """Measure one phase of one row in this (fresh) process."""
    import importlib

    import lightning as L
    from run import PeakMemory, RandomBatches, StepTimer, trainer
    from torch.utils.data import DataLoader

    _, _, batch, size, train_steps, cam_images = PAPER[name]
    class_path, kwargs, _ = recipe_model(name)
    module_name, _, class_name = class_path.rpartition(".")
    L.seed_everything(0, verbose=False)
    model = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    warmup = 1
    if phase == "train":
        loader_batch, steps = batch, warmup + train_steps
    else:
        loader_batch, steps = 1, warmup + cam_images  # CAMs per image, as the pseudo-mask stage runs them
    channels, classes = kwargs["in_channels"], kwargs["num_classes"]
    loader = DataLoader(RandomBatches(loader_batch, loader_batch * steps, channels, size, classes),
                        batch_size=loader_batch)
    timer = StepTimer()
    with PeakMemory(device) as memory:
        run = trainer(device, steps, timer, precision)
        if phase == "train":
            run.fit(model, train_dataloaders=loader)
        else:
            run.predict(model, loader, return_predictions=False)
    times = (timer.train if phase == "train" else timer.predict)[warmup:]
    return {"seconds": sorted(times)[len(times) // 2], "mib": memory.mib,
            "params": sum(p.numel() for p in model.parameters()) / 1e6}


def row(name: str, args: argparse.Namespace) -> list[str]:
    """One table row, each phase measured in its own process."""
    _, _, batch, size, _, _ = PAPER[name]
    _, kwargs, recipe_precision = recipe_model(name)
    precision = args.precision or (recipe_precision if args.device == "cuda" else "32-true")
    results = {}
    for phase in ("train", "predict"):
        command = [sys.executable, str(Path(__file__).resolve()), "--device", args.device,
                   "--precision", precision, "--worker", name, phase]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT / "bench")
        if done.returncode != 0:
            raise RuntimeError(f"paper-size benchmark of {name} ({phase}) failed:\n{done.stderr[-3000:]}")
        results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
    train, predict = results["train"], results["predict"]
    scales = kwargs.get("cam_scales", kwargs.get("test_scales", [1.0]))
    flip = kwargs.get("cam_flip", kwargs.get("test_flip", False))
    return [
        name, f"{batch}×{size}²", precision, f"{train['params']:.1f}", f"{train['seconds']:.2f}",
        f"{len(scales)}{' + flip' if flip else ''}", f"{predict['seconds']:.2f}",
        f"{train['mib']:.0f}", f"{predict['mib']:.0f}",
    ]


def main(argv: list[str]) -> None:
    """Run the rows, print the report and append it to ``--output``."""
    from run import machine, table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default=None, help="Lightning precision (default: see the docstring)")
    parser.add_argument("--rows", default=",".join(PAPER), help="comma-separated names from PAPER")
    parser.add_argument("--output", type=Path, default=ROOT / "docs/benchmarks.md")
    parser.add_argument("--note", default="", help="a remark printed with the results")
    parser.add_argument("--worker", nargs=2, metavar=("ROW", "PHASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.worker:
        import warnings

        warnings.filterwarnings("ignore")
        print(json.dumps(worker(*args.worker, device, args.precision or "32-true")))
        return
    names = args.rows.split(",")
    unknown = set(names) - set(PAPER)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; known: {list(PAPER)}")
    started = time.perf_counter()
    rows = [row(name, args) for name in names]
    text = "\n\n".join([
        f"## Paper size, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {device.type}",
        f"Machine: {machine(device)}.{' ' + args.note if args.note else ''}",
        f"Command: `python bench/run.py --paper-size {shlex.join(argv)}`. Random weights; median of the "
        "timed training steps after one warm-up step; CAM time = seconds per image (batch 1) at the recipe's "
        "scales and flips (`predict_step`: CAMs, fusion and background scores), after one warm-up image; "
        f"memory = the rise of the peak {'CUDA allocation' if device.type == 'cuda' else 'resident memory'} "
        "in the phase.",
        table(["recipe network", "batch × crop", "precision", "params (M)", "train step (s)", "CAM scales",
               "CAM per image (s)", "peak memory, train (MiB)", "peak memory, CAM (MiB)"], rows),
        f"Total time {time.perf_counter() - started:.0f} s.",
    ]) + "\n"
    print(text)
    with args.output.open("a") as f:
        f.write("\n" + text)


if __name__ == "__main__":
    main(sys.argv[1:])
