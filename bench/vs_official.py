"""wsss against the official MCTformer-V2 code on this machine: worker processes alternate, one thread each.

The official side builds ``deit_small_MCTformerV2_patch16_224`` from a checkout of xulianuwa/MCTformer
at 9606597 (``--official PATH``; nothing of it is part of wsss) and times what its ``engine.py`` runs on
the paper-size row's inputs (random weights, batch 8 × 224², 20 classes):

- ``train``: both multilabel soft-margin losses, ``loss.item()``, backward, and timm's AdamW with DeiT's
  weight-decay groups (``train_one_epoch``);
- ``predict``: one image at scale 1 + flip, the CAMs of the last 3 blocks refined by the patch attention
  summed over all blocks, resized to the image, label-gated, flipped back and summed
  (``generate_attention_maps_ms``).

The wsss side is ``bench/paper_size.py``'s ``mctformer_v2 (DeiT-S)`` row (the ``mctformer_v2_voc`` recipe's
model inside Lightning). The official code's ``torch.cuda.amp.autocast`` does nothing on a CPU;
``--precision bf16-mixed`` runs it under ``torch.autocast("cpu", torch.bfloat16)``, the CPU form of its AMP,
next to wsss's ``bf16-mixed``; ``--official-precision 32-true`` keeps it as it runs on a CPU.

Run: ``python bench/vs_official.py --official ~/MCTformer --phase train --pairs 3 [--precision bf16-mixed]``.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROW = "mctformer_v2 (DeiT-S)"
CLASSES, BATCH, SIZE, WARMUP, TRAIN_STEPS, CAM_IMAGES = 20, 8, 224, 1, 3, 4


def official_worker(checkout: Path, phase: str, precision: str) -> dict:
    """Median seconds of the official training step or per-image CAM, in this (fresh) process."""
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(checkout))
    import models  # the official models.py
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    model = models.deit_small_MCTformerV2_patch16_224(num_classes=CLASSES, drop_rate=0.0, drop_path_rate=0.1)
    bf16 = precision == "bf16-mixed"
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    times = []
    if phase == "train":
        optimizer = create_optimizer_v2(model, "adamw", lr=6.25e-5, weight_decay=0.05)
        model.train()
        for _ in range(WARMUP + TRAIN_STEPS):
            images, labels = torch.randn(BATCH, 3, SIZE, SIZE), (torch.rand(BATCH, CLASSES) > 0.8).float()
            start = time.perf_counter()
            with amp():
                cls_logits, patch_logits = model(images)
                loss = F.multilabel_soft_margin_loss(cls_logits, labels)
                loss = loss + F.multilabel_soft_margin_loss(patch_logits, labels)
            loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    else:
        model.eval()
        grid = SIZE // 16
        with torch.no_grad(), amp():
            for _ in range(WARMUP + CAM_IMAGES):
                image, labels = torch.randn(1, 3, SIZE, SIZE), (torch.rand(CLASSES) > 0.8).float()
                start = time.perf_counter()
                total = 0
                for flipped, view in enumerate([image, image.flip(-1)]):
                    _, cams, patch_attn = model(view, return_att=True, n_layers=3, attention_type="fused")
                    cams = patch_attn.sum(0).unsqueeze(1) @ cams.reshape(1, CLASSES, -1, 1)
                    cams = cams.reshape(1, CLASSES, grid, grid)
                    cams = F.interpolate(cams, size=(SIZE, SIZE), mode="bilinear")
                    cams = cams[0].float().numpy() * labels.view(CLASSES, 1, 1).numpy()
                    total = total + (cams[..., ::-1] if flipped else cams)
                times.append(time.perf_counter() - start)
    times = sorted(times[WARMUP:])
    return {"seconds": times[len(times) // 2]}


def measure(side: str, args: argparse.Namespace) -> float:
    """One worker process of one side; its median seconds."""
    here = Path(__file__).resolve().parent
    if side == "official":
        precision = args.official_precision or args.precision
        command = [sys.executable, str(here / "vs_official.py"), "--official", str(args.official),
                   "--phase", args.phase, "--precision", precision, "--worker"]
    else:
        command = [sys.executable, str(here / "paper_size.py"), "--device", "cpu",
                   "--precision", args.precision, "--worker", ROW, args.phase]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=here, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main(argv: list[str]) -> None:
    """Alternate the two sides ``--pairs`` times; print each time and the median ratio wsss / official."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="checkout of xulianuwa/MCTformer@9606597")
    parser.add_argument("--phase", choices=["train", "predict"], default="train")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--official-precision", choices=["32-true", "bf16-mixed"], default=None,
                        help="the official side's precision (default: --precision)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.official / "models.py").is_file():
        parser.error(f"{args.official} is not an MCTformer checkout (no models.py)")
    if args.worker:
        print(json.dumps(official_worker(args.official, args.phase, args.precision)))
        return
    times: dict[str, list[float]] = {"official": [], "wsss": []}
    for pair in range(args.pairs):
        for side in times:
            times[side].append(measure(side, args))
            print(f"pair {pair + 1} {side:8s} {times[side][-1]:.3f} s", flush=True)
    official, ours = statistics.median(times["official"]), statistics.median(times["wsss"])
    precisions = f"wsss {args.precision}, official {args.official_precision or args.precision}"
    print(f"{ROW} {args.phase} ({precisions}): official {official:.3f} s, wsss {ours:.3f} s, "
          f"wsss / official {ours / official:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
