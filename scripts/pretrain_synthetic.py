"""A CPU stand-in for ImageNet pre-training: multi-label classification of a synthetic VOC-layout set made
with its own data seed (no image in common with the seed-0 data the results scripts evaluate on). Writes the
backbone's state dict in the format the recipes' local-weights arguments read:

- ``smp:<encoder>`` (e.g. ``smp:mit_b0``): the smp encoder's state dict, for ``encoder_weights`` (SASFormer);
- ``timm:<model>`` (e.g. ``timm:swin_tiny_patch4_window7_224``, ``--timm-kwargs``, ``--stem-channels``): a
  timm checkpoint without its classifier, for ``weights`` (SWTformer, MCTformer / Bi-Trans).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python scripts/pretrain_synthetic.py smp:mit_b0 \\
        --output runs/pretrained/mit_b0_synthetic.pth

Classification head: global average pooling of the last feature map + a linear layer (smp), timm's own head
(timm). AdamW, cosine schedule, BCE; the val mAP of every epoch is printed and the weights are saved after
every epoch, so an interrupted run leaves the last finished epoch.
"""

import argparse
import json
import math
from functools import partial
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from wsss.data import VOCDataModule
from wsss.data.synthetic import make_synthetic_voc
from wsss.eval import MultilabelMAP
from wsss.models.swin_cam import ConvStemPatchEmbed

ROOT = Path(__file__).resolve().parents[1]


class SmpClassifier(nn.Module):
    """An smp encoder + global average pooling of its last map + a linear classifier."""

    def __init__(self, encoder: str, num_classes: int) -> None:
        super().__init__()
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=3, weights=None)
        self.fc = nn.Linear(self.encoder.out_channels[-1], num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (B, C)."""
        return self.fc(self.encoder(images)[-1].mean((2, 3)))

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """What ``create_segmenter(encoder_weights=...)`` loads."""
        return self.encoder.state_dict()


class TimmClassifier(nn.Module):
    """A timm classifier; its state dict without the classifier is a timm checkpoint."""

    def __init__(self, name: str, num_classes: int, stem_channels: list[int] | None, **kwargs) -> None:
        super().__init__()
        if stem_channels:
            kwargs["embed_layer"] = partial(ConvStemPatchEmbed, stem_channels=stem_channels)
        self.model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (B, C)."""
        return self.model(images)

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The timm state dict without the classifier (timm re-creates it for the new class count)."""
        head = self.model.pretrained_cfg["classifier"]
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith(head + ".")}


def build_classifier(spec: str, num_classes: int, args: argparse.Namespace) -> nn.Module:
    """``smp:<encoder>`` or ``timm:<model>`` as a multi-label classifier."""
    kind, _, name = spec.partition(":")
    if kind == "smp":
        return SmpClassifier(name, num_classes)
    if kind == "timm":
        return TimmClassifier(name, num_classes, args.stem_channels, **json.loads(args.timm_kwargs))
    raise ValueError(f"backbone must be 'smp:<encoder>' or 'timm:<model>', got {spec!r}")


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The lr factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def evaluate(model: nn.Module, loader) -> float:
    """Val mAP (%) over the classes."""
    model.eval()
    metric = MultilabelMAP(num_labels=loader.dataset.num_classes)
    for batch in loader:
        metric.update(model(batch["image"]).sigmoid(), batch["cls_labels"].long())
    model.train()
    return 100 * float(metric.compute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbone", help="smp:<encoder> or timm:<model>")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--timm-kwargs", default="{}", help="JSON of timm.create_model arguments")
    parser.add_argument("--stem-channels", type=int, nargs="*", help="ConvStemPatchEmbed widths (timm Swin)")
    parser.add_argument("--root", type=Path, help="where to make the data (default: "
                        "data/synthetic_voc_pretrain_<size>)")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--data-seed", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.data_seed == 0:
        parser.error("--data-seed 0 is the evaluation data of the results scripts; pre-train on another seed")

    torch.manual_seed(args.seed)
    root = make_synthetic_voc(args.root or ROOT / f"data/synthetic_voc_pretrain_{args.size}",
                              n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.data_seed)
    data = VOCDataModule(str(root), batch_size=args.batch_size, eval_batch_size=args.batch_size,
                         crop_size=args.size, train_split="train_aug")
    data.setup("fit")
    train, val = data.train_dataloader(), data.val_dataloader()
    model = build_classifier(args.backbone, train.dataset.num_classes, args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps, warmup = args.epochs * len(train), args.warmup_epochs * len(train)
    schedule = partial(warmup_cosine, warmup=warmup, total=steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(args.epochs):
        for batch in tqdm(train, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False):
            loss = F.binary_cross_entropy_with_logits(model(batch["image"]), batch["cls_labels"].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        torch.save(model.backbone_state_dict(), args.output)
        val_map = evaluate(model, val)
        print(f"epoch {epoch + 1}: last batch loss {loss.item():.3f}, val mAP {val_map:.1f}", flush=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
