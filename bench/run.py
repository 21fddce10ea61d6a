"""Benchmark every method at one input size and append the results to ``docs/benchmarks.md``.

Per method (the ``METHODS`` table: class path + tiny init arguments): the median training step time
(forward, backward and optimiser step inside a Lightning ``fit``), the CAM-generation throughput of its
``predict_step`` (single scale, no flip) and the peak memory of each phase, run in a fresh process (CPU: the
rise of the peak resident set size, reset through ``/proc/self/clear_refs``; CUDA: ``max_memory_allocated``).
Then the cost of capturing attention maps against the same timm ViT with fused attention, and the refiner
benchmark ``bench/bench_refiners.py``. A method whose module is missing is reported as skipped.

Run: ``python bench/run.py [--size 64] [--batch 8] [--steps 5] [--device cpu] [--methods a,b]``
(``make bench``); about 3 minutes on 2 CPU cores. ``--paper-size`` runs ``bench/paper_size.py`` instead
(the paper recipes' networks at their paper batch and crop).
"""

import argparse
import importlib
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

import lightning as L
import paper_size
import timm
import torch
from bench_refiners import median_seconds
from torch.utils.data import DataLoader, Dataset

from wsss.models.attention import AttentionCapture, vit_attention_modules

ROOT = Path(__file__).resolve().parents[1]
SINGLE_SCALE = {"cam_scales": [1.0], "cam_flip": False}
TINY_VIT = {"patch_size": 8, "depth": 4, "embed_dim": 96, "num_heads": 3}

#: name -> (class path, init arguments at the benchmark size ``{size}``); in_channels / num_classes are added
METHODS: dict[str, tuple[str, dict]] = {
    "cam_baseline": ("wsss.methods.cam_baseline.CAMBaseline", {"backbone": "resnet18", **SINGLE_SCALE}),
    "gradcam": ("wsss.methods.gradcam.GradCAMClassifier", {"model": "resnet18", **SINGLE_SCALE}),
    "mctformer_v2": (
        "wsss.methods.mctformer.MCTformer",
        {
            "backbone": "vit_tiny_patch16_224",
            "img_size": "{size}",
            "drop_path_rate": 0.0,
            "backbone_kwargs": TINY_VIT,
            **SINGLE_SCALE,
        },
    ),
    "bitrans": (
        "wsss.methods.bitrans.BiTrans",
        {
            "backbone": "vit_tiny_patch16_224",
            "img_size": "{size}",
            "drop_path_rate": 0.0,
            "backbone_kwargs": TINY_VIT,
            **SINGLE_SCALE,
        },
    ),
    "crt": (
        "wsss.methods.crt.CRT",
        {
            "cnn_backbone": "resnet18",
            "vit": "deit_tiny_patch16_224",
            "vit_depth": 4,
            "vit_img_size": "{size}",
            **SINGLE_SCALE,
        },
    ),
    "swtformer_v2": (
        "wsss.methods.swtformer.SWTformer",
        {
            "version": "v2",
            "hff_dims": [32, 32, 64, 64],
            "backbone_overrides": {
                "embed_dim": 32,
                "depths": [1, 1, 1, 1],
                "num_heads": [1, 2, 4, 8],
                "patch_size": 2,
                "window_size": 4,
                "img_size": "{size}",
            },
            **SINGLE_SCALE,
        },
    ),
    "sparse_vit": (
        "wsss.methods.sparse_vit.SparseViT",
        {"img_size": "{size}", "patch_size": 8, "embed_dim": 128, "depth": 4, "num_heads": 8, **SINGLE_SCALE},
    ),
    "sasformer": (
        "wsss.methods.sasformer.SASFormer",
        {"backbone": "mit_b0", "test_scales": [1.0], "test_flip": False},
    ),
    "segmentation (stage 3)": (
        "wsss.methods.segmentation.SegmentationTask",
        {"arch": "unet", "encoder": "resnet18"},
    ),
}


def at_size(value, size: int):
    """``value`` with every ``"{size}"`` placeholder replaced by ``size`` (recursively)."""
    if value == "{size}":
        return size
    if isinstance(value, dict):
        return {k: at_size(v, size) for k, v in value.items()}
    return value


class RandomBatches(Dataset):
    """``length`` samples cycling over ``batch`` fixed random ones with every key a method may read."""

    def __init__(self, batch: int, length: int, channels: int, size: int, num_classes: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch, channels, size, size, generator=generator)
        self.masks = torch.randint(0, num_classes + 1, (batch, size, size), generator=generator)
        self.labels = torch.zeros(batch, num_classes)
        for i in range(batch):
            present = self.masks[i].unique()
            self.labels[i, present[present > 0] - 1] = 1.0
        self.sparse = torch.full_like(self.masks, 255)
        self.sparse[:, ::8, ::8] = self.masks[:, ::8, ::8]  # one labelled pixel in 64, like point labels
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        i = index % self.batch
        return {
            "image": self.images[i],
            "cls_labels": self.labels[i],
            "mask": self.masks[i],
            "sparse": self.sparse[i],
            "name": f"bench_{i}",
        }


class StepTimer(L.Callback):
    """Wall time of every training and predict batch (CUDA synchronised)."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.predict: list[float] = []
        self.start = 0.0

    def _begin(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.start = time.perf_counter()

    def _end(self, pl_module: L.LightningModule, into: list[float]) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        into.append(time.perf_counter() - self.start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Start the clock before the forward pass."""
        self._begin(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Stop it after the optimiser step."""
        self._end(pl_module, self.train)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        """Start the clock before ``predict_step``."""
        self._begin(pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        """Stop it once the CAMs are computed."""
        self._end(pl_module, self.predict)


class PeakMemory:
    """Peak memory of a block in MiB: CUDA allocations, or the rise of the peak RSS on the CPU (Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib = float("nan")

    @staticmethod
    def _status_kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise ValueError(f"/proc/self/status has no {field}")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif Path("/proc/self/clear_refs").exists():
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS, to the current RSS
            self.base = self._status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif Path("/proc/self/clear_refs").exists():
            self.mib = (self._status_kib("VmHWM") * 1024 - self.base) / 2**20


def trainer(device: torch.device, steps: int, timer: StepTimer, precision: str = "32-true") -> L.Trainer:
    """A quiet single-device Trainer that stops after ``steps`` optimiser steps."""
    return L.Trainer(
        accelerator=device.type,
        devices=1,
        precision=precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
    )


def measure(name: str, phase: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Run one phase ("train" or "predict") of one method in this (fresh) process and measure it."""
    class_path, kwargs = METHODS[name]
    module_name, _, class_name = class_path.rpartition(".")
    model = getattr(importlib.import_module(module_name), class_name)(
        **at_size(kwargs, args.size), num_classes=args.classes, in_channels=3
    )
    steps = args.warmup + args.steps
    loader = DataLoader(
        RandomBatches(args.batch, args.batch * steps, 3, args.size, args.classes), batch_size=args.batch
    )
    timer = StepTimer()
    L.seed_everything(0, verbose=False)
    with PeakMemory(device) as memory:
        if phase == "train":
            trainer(device, steps, timer).fit(model, train_dataloaders=loader)
        else:
            trainer(device, steps, timer).predict(model, loader, return_predictions=False)
    seconds = median((timer.train if phase == "train" else timer.predict)[args.warmup :])
    return {"seconds": seconds, "mib": memory.mib, "params": sum(p.numel() for p in model.parameters()) / 1e6}


def bench_method(name: str, args: argparse.Namespace, argv: list[str]) -> list[str]:
    """One table row: parameters, median train step, predict images/s and the peak memory of both phases.

    Each phase runs in its own process, so that the peak memory of one is not hidden by the other's.
    """
    module_name = METHODS[name][0].rpartition(".")[0]
    if importlib.util.find_spec(module_name) is None:
        return [name, f"skipped: no module {module_name}", "", "", "", ""]
    results = {}
    for phase in ("train", "predict"):
        command = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", name, phase]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"benchmark of {name} ({phase}) failed:\n{done.stderr[-3000:]}")
        results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
    train, predict = results["train"], results["predict"]
    return [
        name,
        f"{train['params']:.2f}",
        f"{1000 * train['seconds']:.0f}",
        f"{args.batch / predict['seconds']:.1f}",
        f"{train['mib']:.0f}",
        f"{predict['mib']:.0f}",
    ]


def median_ms(run, repeats: int, device: torch.device) -> float:
    """Median wall time of ``run()`` in ms over ``repeats`` calls after one warm-up call."""
    return 1000 * median_seconds(run, device, repeats)


def bench_attention_capture(args: argparse.Namespace, device: torch.device) -> list[list[str]]:
    """Rows (pass, fused ms, captured ms, overhead) for a timm ViT with fused attention vs hooked maps."""
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=args.size, num_classes=args.classes, **TINY_VIT
    ).to(device)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)

    def forward() -> None:
        with torch.no_grad():
            vit(images)

    def forward_backward() -> None:
        vit(images).sum().backward()

    fused = {
        label: median_ms(run, args.steps, device)
        for label, run in (("forward", forward), ("forward + backward", forward_backward))
    }
    with AttentionCapture(vit_attention_modules(vit)):
        captured = {
            label: median_ms(run, args.steps, device)
            for label, run in (("forward", forward), ("forward + backward", forward_backward))
        }
    return [
        [label, f"{fused[label]:.1f}", f"{captured[label]:.1f}", f"{captured[label] / fused[label]:.2f}×"]
        for label in fused
    ]


def machine(device: torch.device) -> str:
    """A one-line description of the machine: OS, CPU model and cores, accelerator, library versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {cores} cores available{gpu}; "
        f"torch {torch.__version__}"
        f" ({torch.get_num_threads()} threads), lightning {L.__version__}, timm {timm.__version__}"
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join(f"| {' | '.join(line)} |" for line in lines)


def refiner_benchmark(args: argparse.Namespace) -> str:
    """The output of ``bench/bench_refiners.py`` at the benchmark size."""
    command = [
        sys.executable,
        str(ROOT / "bench/bench_refiners.py"),
        "--size",
        str(args.size * 2),
        "--classes",
        str(args.classes),
        "--device",
        args.device,
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"bench/bench_refiners.py failed:\n{done.stderr[-2000:]}")
    shown = " ".join(["python", "bench/bench_refiners.py", *command[2:]])
    return f"`{shown}`\n\n```\n{done.stdout.strip()}\n```"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmarks, print the report and append it to ``--output``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=5, help="foreground classes")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated names from METHODS")
    parser.add_argument("--output", type=Path, default=ROOT / "docs/benchmarks.md")
    parser.add_argument(
        "--note", default="", help="a remark printed with the results (e.g. a shared machine)"
    )
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PHASE"), help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--paper-size" in argv:
        argv.remove("--paper-size")
        return paper_size.main(argv)
    args = parser.parse_args(argv)
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {list(METHODS)}")
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")  # Lightning's small-dataset and worker-count advice
    if args.worker:
        print(json.dumps(measure(*args.worker, args, device)))
        return
    started = time.perf_counter()
    rows = [bench_method(name, args, argv) for name in args.methods.split(",")]
    report = [
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {device.type}",
        f"Machine: {machine(device)}.{' ' + args.note if args.note else ''}",
        f"Command: `python bench/run.py {shlex.join(argv)}`. Batch {args.batch}, "
        f"3×{args.size}×{args.size} inputs, {args.classes} classes, median of {args.steps} timed steps after "
        f"{args.warmup} warm-up steps; CAMs single-scale without flip; memory = the rise of the peak "
        f"{'CUDA allocation' if device.type == 'cuda' else 'resident set size'} during the phase, each phase "
        "in a fresh process.",
        table(
            [
                "method",
                "params (M)",
                "train step (ms)",
                "CAM generation (images/s)",
                "peak memory, train (MiB)",
                "peak memory, predict (MiB)",
            ],
            rows,
        ),
        "Attention capture: a timm ViT (vit_tiny, patch 8, depth 4, embed 96, 3 heads) with fused attention "
        "(`F.scaled_dot_product_attention`) against the same model with `AttentionCapture` hooks (unfused).",
        table(["pass", "fused (ms)", "captured (ms)", "overhead"], bench_attention_capture(args, device)),
        f"Refiners: {refiner_benchmark(args)}",
    ]
    report.append(f"Total time {time.perf_counter() - started:.0f} s.")
    text = "\n\n".join(report) + "\n"
    print(text)
    if not args.output.exists():
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            "# Benchmarks\n\nEach section is appended by `python bench/run.py` (`make bench`); "
            "compare rows only within a section (one machine, one run).\n"
        )
    with args.output.open("a") as f:
        f.write("\n" + text)


if __name__ == "__main__":
    main()
