"""Images per second of every pseudo-mask refiner at a fixed size (default: 21 classes + background, 128×128).

Run standalone: ``python bench/bench_refiners.py [--size 128] [--classes 21] [--batch 4] [--device cpu]``.
The random walks use a dense AffinityNet-style affinity (radius 5) on the 1/8 token grid (PSA's resolution);
DenseCRF rows are reported as skipped when ``pydensecrf`` (``pip install 'wsss[crf]'``) is missing.
"""

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

from wsss.models.affinitynet import dense_affinity
from wsss.pseudo.affinity import AffinityRandomWalk
from wsss.pseudo.crf import DenseCRF
from wsss.pseudo.par import PixelAdaptiveRefiner
from wsss.pseudo.refiner import Refiner


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``run()`` in seconds over ``repeats`` calls after one warm-up call."""
    run()
    timings = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - start)
    return sorted(timings)[len(timings) // 2]


def images_per_second(
    run: Callable[[], torch.Tensor], batch: int, device: torch.device, repeats: int
) -> float:
    """Median images/s of ``run`` (one batch per call) over ``repeats`` timed calls after one warm-up call."""
    return batch / median_seconds(run, device, repeats)


def refiners() -> dict[str, Callable[[], Refiner]]:
    """Builders of the benchmarked refiners, by row name."""
    return {
        "PixelAdaptiveRefiner (10 it, dilations 1..24)": PixelAdaptiveRefiner,
        "AffinityRandomWalk psa (beta 8, T^64)": lambda: AffinityRandomWalk("psa"),
        "AffinityRandomWalk irn (beta 10, T^256)": lambda: AffinityRandomWalk("irn"),
        "DenseCRF psa (10 it)": lambda: DenseCRF("psa"),
        "DenseCRF irn (10 it)": lambda: DenseCRF("irn"),
    }


def main(argv: list[str] | None = None) -> None:
    """Print one images/s row per refiner."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=21, help="foreground classes K (scores have K+1)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    image = (torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 255).to(device)
    scores = torch.rand(args.batch, args.classes + 1, args.size, args.size, generator=generator).to(device)
    grid = max(args.size // 8, 1)
    embedding = torch.randn(args.batch, 16, grid, grid, generator=generator).to(device)
    affinity = dense_affinity(embedding, radius=5)
    print(
        f"{args.batch} images, 3×{args.size}×{args.size}, {args.classes}+1 classes, "
        f"affinity grid {grid}×{grid}, device {device}, torch threads {torch.get_num_threads()}"
    )
    for name, build in refiners().items():
        try:
            refiner = build()
        except ImportError as error:
            print(f"{name:48s} skipped: {error}")
            continue
        with torch.no_grad():
            rate = images_per_second(
                partial(refiner, image, scores, affinity), args.batch, device, args.repeats
            )
        print(f"{name:48s} {rate:10.2f} images/s")


if __name__ == "__main__":
    main()
