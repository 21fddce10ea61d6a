"""albumentations pipelines that move an image, its mask, its sparse labels and its boxes together.

Images of any band count (2, 3, 13, 15, ...) enter as float32 (H, W, C) in their raw pixel scale; the
pipeline normalises them per channel first, so padding (value 0) is the channel mean. Label maps
(``mask`` and ``sparse``) use nearest interpolation and are padded with 255 (ignore / unlabeled).
"""

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from wsss.data.io import IGNORE_INDEX


class SampleTransform:
    """Apply an albumentations pipeline to numpy arrays and return the sample's tensors.

    ``image`` (H, W, C) float32 becomes (C, H, W) float32; ``mask`` and ``sparse`` (H, W) become int64;
    ``boxes`` (N, 4) xyxy pixels become float32 (N, 4).
    """

    def __init__(self, transforms: Sequence[A.BasicTransform], with_boxes: bool = False) -> None:
        bbox_params = (
            A.BboxParams(format="pascal_voc", label_fields=["box_ids"], clip=True) if with_boxes else None
        )
        self.with_boxes = with_boxes
        self.compose = A.Compose(
            list(transforms), additional_targets={"sparse": "mask"}, bbox_params=bbox_params
        )

    def reseed(self, seed: int) -> None:
        """Seed the pipeline's own random generators (albumentations ignores the global seeds)."""
        self.compose.set_random_seed(seed)

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        sparse: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """Transform the given arrays together; keys that are None are left out of the result."""
        inputs = {"image": np.ascontiguousarray(image, dtype=np.float32)}
        inputs |= {key: value for key, value in (("mask", mask), ("sparse", sparse)) if value is not None}
        if self.with_boxes:
            boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
            inputs |= {"bboxes": boxes, "box_ids": list(range(len(boxes)))}
        out = self.compose(**inputs)
        sample = {"image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))}
        for key in ("mask", "sparse"):
            if key in inputs:
                sample[key] = torch.from_numpy(np.asarray(out[key], dtype=np.int64))
        if self.with_boxes:
            sample["boxes"] = torch.as_tensor(np.asarray(out["bboxes"], np.float32).reshape(-1, 4))
        return sample


def build_transform(
    mean: Sequence[float],
    std: Sequence[float],
    *,
    resize: int | None = None,
    scale_range: tuple[float, float] = (1.0, 1.0),
    crop_size: int | None = None,
    hflip: bool = False,
    with_boxes: bool = False,
) -> SampleTransform:
    """Normalise, then optionally resize to a square, random-scale, pad + random-crop and random-flip.

    ``mean``/``std`` are per channel in the raw pixel scale. ``scale_range`` = (1, 1) disables scaling;
    ``crop_size`` None keeps the whole image. Padding fills 0 (the mean) in the image and 255 in labels.
    """
    if len(mean) != len(std):
        raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
    steps: list[A.BasicTransform] = [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=1.0)]
    if resize is not None:
        steps.append(
            A.Resize(resize, resize, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)
        )
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    if (low, high) != (1.0, 1.0):
        steps.append(
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            )
        )
    if crop_size is not None:
        steps += [
            A.PadIfNeeded(
                crop_size,
                crop_size,
                position="random",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0.0,
                fill_mask=IGNORE_INDEX,
            ),
            A.RandomCrop(crop_size, crop_size),
        ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    return SampleTransform(steps, with_boxes=with_boxes)
