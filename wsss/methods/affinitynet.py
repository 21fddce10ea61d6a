"""AffinityNet (PSA: Ahn & Kwak, CVPR 2018; confident labels as in IRN: Ahn, Cho & Kwak, CVPR 2019).

Trains an embedding whose pairwise affinities W_ij = exp(−mean_c |f_i − f_j|) (PSA Eq. 1, code's channel
mean) are high between confident pixels of the same label and low between different labels, from the
confident label maps of :func:`wsss.pseudo.confident.merge_confident_labels` (255 = unsure) given to the
DataModule as ``mask_dir`` with ``supervision: dense``. The loss is PSA's Eq. 3–5
(:func:`wsss.models.affinitynet.affinity_loss`) over the neighbour pairs within ``radius`` on the feature
grid. At stage 2, :meth:`AffinityNetTask.patch_affinity` gives the dense (B, N, N) affinity that
:class:`wsss.pseudo.learned_affinity.LearnedAffinityRandomWalk` walks the CAMs of any method on
(PSA Sec. 3.3).

Deliberate differences from the official code: the backbone is any timm CNN (dilated to ``output_stride`` 8,
PSA's feature stride) with :class:`wsss.models.affinitynet.AffinityHead` over the ``out_indices`` levels
instead of ResNet-38's b4/b5/bn7; labels are downsampled to the feature grid by nearest neighbour (PSA crops
and resizes its CRF labels to 1/8 the same way); IRN's boundary/displacement branches are not built.
The task stores no normalisation: the refiner takes the DataModule's mean/std as arguments.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.methods.base import BaseTask
from wsss.models.affinitynet import (
    IGNORE_INDEX,
    AffinityHead,
    affinity_labels,
    affinity_loss,
    dense_affinity,
    neighbour_affinity,
)
from wsss.models.backbones import create_timm_model


class AffinityNetTask(BaseTask):
    """A timm CNN + PSA's affinity head trained with PSA's affinity loss on confident labels (255 unsure)."""

    def __init__(
        self,
        backbone: str = "resnet50",
        weights: str | None = None,
        radius: int = 5,
        out_indices: Sequence[int] = (2, 3, 4),
        output_stride: int = 8,
        num_classes: int = 20,
        in_channels: int = 3,
        **optim,
    ) -> None:
        super().__init__(**optim)
        self.num_classes = num_classes
        self.radius = radius
        self.encoder = create_timm_model(
            backbone,
            weights,
            in_chans=in_channels,
            features_only=True,
            output_stride=output_stride,
            out_indices=tuple(out_indices),
        )
        self.head = AffinityHead(self.encoder.feature_info.channels())

    def param_groups(self) -> list[dict]:
        """PSA's learning rates: the backbone at lr, the freshly initialised head at 10× lr."""
        return [
            {"params": list(self.encoder.parameters())},
            {"params": list(self.head.parameters()), "lr_scale": 10.0},
        ]

    def forward(self, images: Tensor) -> Tensor:
        """Affinity embedding (B, D, h, w) on the grid of the first feature level."""
        return self.head(self.encoder(images))

    def training_losses(self, batch: dict) -> dict[str, Tensor]:
        """PSA's affinity loss on the neighbour pairs of the confident labels at the feature resolution."""
        if "mask" not in batch:
            raise ValueError(
                "AffinityNetTask trains on confident label maps: set data.init_args.supervision=dense and "
                "data.init_args.mask_dir to the folder written by `wsss affinity-labels`"
            )
        embedding = self(batch["image"])
        labels = F.interpolate(batch["mask"][:, None].float(), size=embedding.shape[-2:], mode="nearest")[
            :, 0
        ].long()
        pairs = affinity_labels(labels, self.radius)
        affinity = neighbour_affinity(embedding, self.radius)
        positive = pairs.bg_pos + pairs.fg_pos
        return {
            "loss": affinity_loss(affinity, pairs),
            "positive_affinity": (affinity * positive).sum().detach() / positive.sum().clamp_min(1),
            "negative_affinity": (affinity * pairs.neg).sum().detach() / pairs.neg.sum().clamp_min(1),
            "confident_fraction": (labels != IGNORE_INDEX).float().mean(),
        }

    @torch.no_grad()
    def patch_affinity(self, images: Tensor) -> Tensor:
        """Dense affinity (B, N, N) between the h·w feature cells (row-major) closer than ``radius``."""
        return dense_affinity(self(images), self.radius)
