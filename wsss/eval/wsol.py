"""Weakly-supervised object localisation (WSOL) accuracy, as TS-CAM and CRT report it on CUB-200 / ILSVRC.

Protocol (``TS-CAM@25aece4:lib/cams_deit.py``, used unchanged by CRT's ``wsol/``): the CAM of a class is
min–max normalised at image size, thresholded, and the bounding rectangle of its largest region is the
predicted box. An image is *localised* when that box has IoU ≥ 0.5 with any of its ground-truth boxes.

- **GT-known loc**: the box from the ground-truth class's CAM is localised.
- **Top-1 loc**: GT-known, and the top-1 predicted class is the ground-truth class.
- **Top-5 loc**: GT-known, and the ground-truth class is among the top-5 predictions.

Only the ground-truth class's CAM matters: top-1/top-5 loc credit an image only through the prediction that
equals the ground truth, whose box is the GT-known box. Differences from TS-CAM, all minor: thresholds apply
to the float map (TS-CAM quantises to uint8 first), the largest region is counted in pixels (TS-CAM takes
the largest contour's polygon area), box IoU uses continuous coordinates (TS-CAM adds 1 to widths), and
top-k loc needs IoU ≥ 0.5 (TS-CAM uses > 0.5 there and ≥ 0.5 for GT-known).
"""

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_iou

from wsss.pseudo.background import normalize_cams

DEFAULT_CAM_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
TOP_K = 5


def cam_to_box(cam: Tensor | np.ndarray, threshold: float) -> Tensor:
    """Box (x1, y1, x2, y2) around the largest 8-connected region of ``cam >= threshold`` in a (H, W) map.

    Coordinates are pixel edges (x2, y2 exclusive), so a region covering columns 3..5 gives x1 = 3, x2 = 6. An
    empty region gives the empty box (0, 0, 0, 0), whose IoU with any box is 0.
    """
    cam = cam.detach().float().cpu().numpy() if isinstance(cam, Tensor) else np.asarray(cam)
    if cam.ndim != 2:
        raise ValueError(f"cam_to_box: expected a (H, W) map, got shape {cam.shape}")
    binary = (cam >= threshold).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count < 2:  # label 0 is the region below the threshold
        return torch.zeros(4)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[largest, :4])
    return torch.tensor([x, y, x + w, y + h], dtype=torch.float32)


class WSOLAccuracy(Metric):
    """Top-1 / top-5 / GT-known localisation accuracy and top-1 / top-5 classification accuracy.

    Every CAM threshold in ``cam_thresholds`` is evaluated; ``compute()`` reports the threshold with the
    best GT-known accuracy (so, like any swept threshold, it is tuned on the ground-truth boxes). TS-CAM and
    CRT report CUB-200 at the fixed threshold 0.1 (``cam_thresholds=(0.1,)``); the default sweep 0.05–0.95
    includes it and :meth:`localization_curve` shows every value.

    ``update(logits, cams, target, boxes)``: logits (B, num_classes); CAMs at image resolution, either for
    all classes (B, num_classes, H, W) or for the ground-truth class only (B, H, W); target class indices
    (B,); and a list of B ground-truth box tensors (N_i, 4) in (x1, y1, x2, y2) pixel-edge coordinates of
    the CAM grid. With fewer than 5 classes, top-5 means all classes.

    ``compute()`` returns a dict of scalars, so in a LightningModule log it at epoch end:
    ``self.log_dict(self.wsol.compute()); self.wsol.reset()`` in ``on_validation_epoch_end``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, cam_thresholds: Sequence[float] = DEFAULT_CAM_THRESHOLDS, iou_threshold: float = 0.5, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if len(cam_thresholds) == 0:
            raise ValueError("WSOLAccuracy: cam_thresholds must not be empty")
        self.cam_thresholds = tuple(float(t) for t in cam_thresholds)
        self.iou_threshold = iou_threshold
        n = len(self.cam_thresholds)
        for name in ("loc_top1", "loc_top5", "loc_gt_known"):
            self.add_state(name, default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("cls_top1", "cls_top5", "total"):
            self.add_state(name, default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def _check(self, logits: Tensor, cams: Tensor, target: Tensor, boxes: Sequence[Tensor]) -> None:
        batch = logits.shape[0]
        if logits.ndim != 2 or target.shape != (batch,):
            raise ValueError(
                f"WSOLAccuracy: logits must be (B, num_classes) and target (B,), got "
                f"{tuple(logits.shape)} and {tuple(target.shape)}"
            )
        if (
            cams.shape[0] != batch
            or cams.ndim not in (3, 4)
            or (cams.ndim == 4 and cams.shape[1] != logits.shape[1])
        ):
            raise ValueError(
                f"WSOLAccuracy: cams must be (B, num_classes, H, W) or (B, H, W) with B={batch} and "
                f"num_classes={logits.shape[1]}, got {tuple(cams.shape)}"
            )
        if len(boxes) != batch or any(b.ndim != 2 or b.shape[0] == 0 or b.shape[1] != 4 for b in boxes):
            raise ValueError(
                f"WSOLAccuracy: boxes must be a list of {batch} tensors of shape (N_i >= 1, 4), got "
                f"{[tuple(b.shape) for b in boxes]}"
            )

    def update(self, logits: Tensor, cams: Tensor, target: Tensor, boxes: Sequence[Tensor]) -> None:
        """Accumulate classification and localisation hits of one batch at every CAM threshold."""
        self._check(logits, cams, target, boxes)
        if cams.ndim == 4:
            cams = cams[torch.arange(len(target), device=cams.device), target]
        cams = normalize_cams(cams.detach().float(), "minmax").cpu()
        top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
        top1 = (top[:, 0] == target).cpu()
        top5 = (top == target[:, None]).any(dim=1).cpu()
        localised = torch.tensor(
            [
                [self._localised(cam, gt_boxes, t) for t in self.cam_thresholds]
                for cam, gt_boxes in zip(cams, boxes, strict=True)
            ],
            dtype=torch.bool,
        ).view(len(target), len(self.cam_thresholds))
        device = self.total.device
        self.loc_gt_known = self.loc_gt_known + localised.sum(0).to(device)
        self.loc_top1 = self.loc_top1 + (localised & top1[:, None]).sum(0).to(device)
        self.loc_top5 = self.loc_top5 + (localised & top5[:, None]).sum(0).to(device)
        self.cls_top1 = self.cls_top1 + top1.sum().to(device)
        self.cls_top5 = self.cls_top5 + top5.sum().to(device)
        self.total = self.total + len(target)

    def _localised(self, cam: Tensor, gt_boxes: Tensor, threshold: float) -> bool:
        box = cam_to_box(cam, threshold)
        return bool(box_iou(box[None], gt_boxes.detach().float().cpu()).max() >= self.iou_threshold)

    def compute(self) -> dict[str, Tensor]:
        """Accuracies in [0, 1] at the CAM threshold with the best GT-known accuracy, and that threshold."""
        best = int(self.loc_gt_known.argmax())
        total = self.total.double()
        return {
            "cls_top1": self.cls_top1 / total,
            "cls_top5": self.cls_top5 / total,
            "loc_top1": self.loc_top1[best] / total,
            "loc_top5": self.loc_top5[best] / total,
            "loc_gt_known": self.loc_gt_known[best] / total,
            "cam_threshold": torch.tensor(self.cam_thresholds[best], dtype=torch.float64),
        }

    def localization_curve(self) -> dict[str, Tensor]:
        """Thresholds (T,) and top-1 / top-5 / GT-known localisation accuracy at each (T,)."""
        with self.sync_context():
            total = self.total.double()
            return {
                "cam_threshold": torch.tensor(self.cam_thresholds, dtype=torch.float64),
                "loc_top1": self.loc_top1 / total,
                "loc_top5": self.loc_top5 / total,
                "loc_gt_known": self.loc_gt_known / total,
            }
