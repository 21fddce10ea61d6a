"""wsss against the official code on this machine: worker processes alternate, one thread each.

``--method`` picks the official code, whose checkout is ``--official PATH`` (nothing of it is part of wsss),
and the ``bench/paper_size.py`` row it is timed against (that recipe's model inside Lightning, random
weights, the row's batch, crop and step counts; 20 classes):

- ``mctformer``: xulianuwa/MCTformer at 9606597, ``deit_small_MCTformerV2_patch16_224`` from its
  ``models.py``. ``train`` is ``train_one_epoch``'s step: both multilabel soft-margin losses, ``loss.item()``,
  backward, timm's AdamW with DeiT's weight-decay groups. ``predict`` is ``generate_attention_maps_ms`` for
  one image at scale 1 + flip: the CAMs of the last 3 blocks refined by the patch attention summed over all
  blocks, resized to the image, label-gated, flipped back and summed.
- ``crt``: huodongjian0603/crt at 5aa670a, ``net/resnet50_cam.py`` (ResNet-152) and ``net/deit_cam.py``
  (TS-CAM DeiT-S, 3 loops, cut–merge). ``train`` is ``step/train_cam.py``'s step in epoch 0: both MLSM
  losses, the L1 of the CAMs up-sampled to the crop (computed and read, not added in epoch 0), backward and
  both ``PolyOptimizer`` steps. ``predict`` is ``step/make_cam.py`` for one image: the DeiT branch on the
  image + flip pair at each of the 7 scales (bicubic-rescaled beforehand, as its data loader does), the
  stride-4 and full-resolution sums, the label-gated max-normalisation. The official code moves tensors
  with ``.cuda()``, which this worker makes a no-op on a CPU.
- ``sasformer`` (``train`` only): su-hui-zz/SASFormer at 145682d, ``lib/models/nets/segformer.py`` on
  MiT-B4 with strides [4, 2, 2, 1] (its hard-coded 16²/32²/64² logits need the 512 crop), ``FSCELoss`` on
  the 1/4 logits and ``SegformerAffinityEnergyLoss`` on all four levels (``configs/voc2012/
  Segformerb4_512_3.json``), three ``.item()`` reads, backward, SGD; the sparse targets label one pixel in 64.
  Its data-side brightness shift is not timed (wsss does it in the DataLoader). Two imports are shimmed: TEL's
  CUDA tree filter (imported by the loss module, not called by SASFormer's loss) and mmcv's ``ConvModule``
  (the decoder's conv + SyncBN + ReLU, a ``BatchNorm2d`` in one process).

The official code's ``torch.cuda.amp.autocast`` (MCTformer, SASFormer) does nothing on a CPU; ``--precision
bf16-mixed`` runs the official side under ``torch.autocast("cpu", torch.bfloat16)``, the CPU form of its AMP,
next to wsss's ``bf16-mixed``; ``--official-precision 32-true`` keeps it as it runs on a CPU.

Run: ``python bench/vs_official.py --method crt --official ~/crt --phase train --pairs 3``.
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
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from paper_size import PAPER

CLASSES, WARMUP = 20, 1


def mctformer_worker(phase: str, amp: Callable, batch: int, size: int, steps: int) -> list[float]:
    """Seconds of each official MCTformer-V2 training step or per-image CAM (warm-up first)."""
    import models  # the official models.py
    from timm.optim import create_optimizer_v2

    model = models.deit_small_MCTformerV2_patch16_224(num_classes=CLASSES, drop_rate=0.0, drop_path_rate=0.1)
    times = []
    if phase == "train":
        optimizer = create_optimizer_v2(model, "adamw", lr=6.25e-5, weight_decay=0.05)
        model.train()
        for _ in range(steps):
            images, labels = torch.randn(batch, 3, size, size), (torch.rand(batch, CLASSES) > 0.8).float()
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
        return times
    model.eval()
    grid = size // 16
    with torch.no_grad(), amp():
        for _ in range(steps):
            image, labels = torch.randn(1, 3, size, size), (torch.rand(CLASSES) > 0.8).float()
            start = time.perf_counter()
            total = 0
            for flipped, view in enumerate([image, image.flip(-1)]):
                _, cams, patch_attn = model(view, return_att=True, n_layers=3, attention_type="fused")
                cams = patch_attn.sum(0).unsqueeze(1) @ cams.reshape(1, CLASSES, -1, 1)
                cams = cams.reshape(1, CLASSES, grid, grid)
                cams = F.interpolate(cams, size=(size, size), mode="bilinear")
                cams = cams[0].float().numpy() * labels.view(CLASSES, 1, 1).numpy()
                total = total + (cams[..., ::-1] if flipped else cams)
            times.append(time.perf_counter() - start)
    return times


def crt_worker(phase: str, amp: Callable, batch: int, size: int, steps: int) -> list[float]:
    """Seconds of each official CRT training step (epoch 0) or per-image DeiT-branch CAM (warm-up first)."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the official merging() calls .cuda()
    from misc import torchutils
    from net import deit_cam, resnet50, resnet50_cam

    official_resnet152 = resnet50.resnet152
    resnet50.resnet152 = lambda pretrained=True, **kwargs: official_resnet152(False, **kwargs)  # no download
    deit = deit_cam.Net(pretrained=False, num_classes=CLASSES)
    times = []
    if phase == "train":
        cnn = resnet50_cam.Net()
        optimizers = [
            torchutils.PolyOptimizer([
                {"params": groups[0], "lr": 0.1, "weight_decay": 1e-4},
                {"params": groups[1], "lr": 1.0, "weight_decay": 1e-4},
            ], lr=0.1, weight_decay=1e-4, max_step=10_000)
            for groups in (cnn.trainable_parameters(), deit.trainable_parameters())
        ]
        cnn.train()
        deit.train()
        for _ in range(steps):
            images, labels = torch.randn(batch, 3, size, size), (torch.rand(batch, CLASSES) > 0.8).float()
            start = time.perf_counter()
            with amp():
                cam1, cam2 = cnn(images), deit(images)
                loss1 = F.multilabel_soft_margin_loss(torchutils.gap2d(cam1), labels)
                loss2 = F.multilabel_soft_margin_loss(torchutils.gap2d(cam2), labels)
                cam1 = F.interpolate(cam1, size=(size, size), mode="bilinear", align_corners=True)
                cam2 = F.interpolate(cam2, size=(size, size), mode="bilinear", align_corners=True)
                loss3 = torch.mean(torch.abs(cam1 - cam2))
                loss = loss1 + loss2  # epoch 0
            for value in (loss1, loss2, loss3):
                value.item()
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            times.append(time.perf_counter() - start)
        return times
    deit.eval()
    scales = (1.0, 0.5, 1.5, 2.0, 0.75, 1.25, 1.75)
    strided_size = (-(-size // 4),) * 2
    strided_up_size = (-(-size // 16) * 16,) * 2
    with torch.no_grad(), amp():
        for _ in range(steps):
            image, labels = torch.randn(1, 3, size, size), (torch.rand(CLASSES) > 0.8).float()
            pairs = []
            for scale in scales:
                scaled = image if scale == 1.0 else F.interpolate(
                    image, size=(round(size * scale),) * 2, mode="bicubic", align_corners=False)
                pairs.append(torch.cat([scaled, scaled.flip(-1)]))
            start = time.perf_counter()
            outputs = [deit(pair, return_cam=True) for pair in pairs]
            strided = torch.stack([F.interpolate(o[None], strided_size, mode="bilinear")[0] for o in outputs])
            strided = strided.sum(0)
            highres = [F.interpolate(o[:, None], strided_up_size, mode="bilinear") for o in outputs]
            highres = torch.stack(highres).sum(0)[:, 0, :size, :size]
            valid = torch.nonzero(labels)[:, 0]
            strided, highres = strided[valid], highres[valid]
            strided /= F.adaptive_max_pool2d(strided, (1, 1)) + 1e-5
            highres /= F.adaptive_max_pool2d(highres, (1, 1)) + 1e-5
            highres.float().numpy()
            times.append(time.perf_counter() - start)
    return times


class _Configer:
    """openseg's configer ``get``/``exists`` over a dict (what the SASFormer loss classes read)."""

    def __init__(self, values: dict) -> None:
        self.values = values

    def get(self, *keys):
        node = self.values
        for key in keys:
            node = node[key]
        return node

    def exists(self, *keys) -> bool:
        try:
            self.get(*keys)
        except KeyError:
            return False
        return True


def sasformer_worker(phase: str, amp: Callable, batch: int, size: int, steps: int) -> list[float]:
    """Seconds of each official SASFormer training step (MiT-B4, CE + affinity loss, SGD)."""
    import types

    from torch import nn

    if phase != "train":
        raise ValueError("sasformer: only --phase train is timed against the official code")
    # The loss module imports TEL's CUDA tree filter, which SASFormer's loss does not call, and the decoder
    # imports mmcv's ConvModule (conv, SyncBN, ReLU; a BatchNorm2d in a single process).
    for name in ("kernels", "kernels.lib_tree_filter", "kernels.lib_tree_filter.modules",
                 "kernels.lib_tree_filter.modules.tree_filter", "mmcv", "mmcv.cnn"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["kernels.lib_tree_filter.modules.tree_filter"].MinimumSpanningTree = object
    sys.modules["kernels.lib_tree_filter.modules.tree_filter"].TreeFilter2D = object
    sys.modules["mmcv.cnn"].ConvModule = lambda in_channels, out_channels, kernel_size, norm_cfg: (
        nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, bias=False),
                      nn.BatchNorm2d(out_channels), nn.ReLU()))
    from lib.loss.loss_helper import FSCELoss, SegformerAffinityEnergyLoss
    from lib.models.nets.segformer import Segformer

    configer = _Configer({  # configs/voc2012/Segformerb4_512_3.json
        "data": {"num_classes": CLASSES + 1},
        "loss": {"params": {"ce_reduction": "mean", "ce_ignore_index": -1}},
        "affinity_loss": {"params": {"weight": 1.2, "loss_index": 3}},
    })
    model = Segformer("mit_b4", num_classes=CLASSES + 1, stride=[4, 2, 2, 1]).train()
    pixel_loss, affinity_loss = FSCELoss(configer), SegformerAffinityEnergyLoss(configer)
    optimizer = torch.optim.SGD(model.parameters(), lr=5e-3, momentum=0.9, weight_decay=1e-4)
    times = []
    for _ in range(steps):
        images = torch.randn(batch, 3, size, size)
        targets = torch.randint(0, CLASSES + 1, (batch, size, size))
        targets[torch.rand(batch, size, size) > 1 / 64] = -1  # one labelled pixel in 64, at random
        originals = torch.rand(batch, 3, size, size)
        start = time.perf_counter()
        optimizer.zero_grad()
        with amp():
            outputs = model(images)
            unlabeled = targets == -1
            seg_loss = pixel_loss([outputs[0]], targets)
            aff_loss = affinity_loss(outputs, originals, unlabeled, targets)
            loss = seg_loss + aff_loss
        for value in (loss, seg_loss, aff_loss):
            value.item()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


#: method -> (its official repository at the commit read, a file that marks a checkout, worker, PAPER row).
OFFICIAL = {
    "mctformer": ("xulianuwa/MCTformer@9606597", "models.py", mctformer_worker, "mctformer_v2 (DeiT-S)"),
    "crt": ("huodongjian0603/crt@5aa670a", "net/deit_cam.py", crt_worker, "crt (ResNet-152 + DeiT-S)"),
    "sasformer": ("su-hui-zz/SASFormer@145682d", "lib/models/nets/segformer.py", sasformer_worker,
                  "sasformer (MiT-B4)"),
}


def official_worker(method: str, checkout: Path, phase: str, precision: str) -> dict:
    """Median seconds of the official training step or per-image CAM, in this (fresh) process."""
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(checkout))
    torch.manual_seed(0)
    _, _, worker, row = OFFICIAL[method]
    _, _, batch, size, train_steps, cam_images = PAPER[row]
    bf16 = precision == "bf16-mixed"
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    steps = WARMUP + (train_steps if phase == "train" else cam_images)
    times = sorted(worker(phase, amp, batch, size, steps)[WARMUP:])
    return {"seconds": times[len(times) // 2]}


def measure(side: str, args: argparse.Namespace) -> float:
    """One worker process of one side; its median seconds."""
    here = Path(__file__).resolve().parent
    if side == "official":
        precision = args.official_precision or args.precision
        command = [sys.executable, str(here / "vs_official.py"), "--method", args.method, "--official",
                   str(args.official), "--phase", args.phase, "--precision", precision, "--worker"]
    else:
        command = [sys.executable, str(here / "paper_size.py"), "--device", "cpu",
                   "--precision", args.precision, "--worker", OFFICIAL[args.method][3], args.phase]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=here, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main(argv: list[str]) -> None:
    """Alternate the two sides ``--pairs`` times; print each time and the median ratio wsss / official."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(OFFICIAL), default="mctformer")
    parser.add_argument("--official", type=Path, required=True,
                        help="checkout of the method's official repository at the commit in OFFICIAL")
    parser.add_argument("--phase", choices=["train", "predict"], default="train")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--official-precision", choices=["32-true", "bf16-mixed"], default=None,
                        help="the official side's precision (default: --precision)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repo, marker, _, row = OFFICIAL[args.method]
    if not (args.official / marker).is_file():
        parser.error(f"{args.official} is not a checkout of {repo} (no {marker})")
    if args.worker:
        print(json.dumps(official_worker(args.method, args.official, args.phase, args.precision)))
        return
    times: dict[str, list[float]] = {"official": [], "wsss": []}
    for pair in range(args.pairs):
        for side in times:
            times[side].append(measure(side, args))
            print(f"pair {pair + 1} {side:8s} {times[side][-1]:.3f} s", flush=True)
    official, ours = statistics.median(times["official"]), statistics.median(times["wsss"])
    precisions = f"wsss {args.precision}, official {args.official_precision or args.precision}"
    print(f"{row} {args.phase} ({precisions}): official {official:.3f} s, wsss {ours:.3f} s, "
          f"wsss / official {ours / official:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
