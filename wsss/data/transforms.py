"""albumentations pipelines that move an image, its mask, its sparse labels and its boxes together.

Images of any band count (2, 3, 13, 15, ...) enter as float32 (H, W, C) in their raw pixel scale; the
pipeline normalises them per channel first, so padding (value 0) is the channel mean. Label maps
(``mask`` and ``sparse``) use nearest interpolation and are padded with 255 (ignore / unlabeled).
"""

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import albumentations as A
import albumentations.augmentations.geometric.functional as fgeometric
import cv2
import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing

from wsss.data.io import IGNORE_INDEX


class SampleTransform:
    """Apply an albumentations pipeline to numpy arrays and return the sample's tensors.

    ``image`` (H, W, C) float32 becomes (C, H, W) float32; ``mask`` and ``sparse`` (H, W) become int64;
    ``boxes`` (N, 4) xyxy pixels become float32 (N, 4). ``image_only`` drops label maps (for pipelines whose
    image-only steps would misalign them); ``tensor_transform`` runs on the final image tensor.
    """

    def __init__(
        self,
        transforms: Sequence[A.BasicTransform],
        with_boxes: bool = False,
        image_only: bool = False,
        tensor_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        bbox_params = (
            A.BboxParams(format="pascal_voc", label_fields=["box_ids"], clip=True) if with_boxes else None
        )
        self.with_boxes = with_boxes
        self.image_only = image_only
        self.tensor_transform = tensor_transform
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
        if not self.image_only:
            inputs |= {key: value for key, value in (("mask", mask), ("sparse", sparse)) if value is not None}
        if self.with_boxes:
            boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
            inputs |= {"bboxes": boxes, "box_ids": list(range(len(boxes)))}
        out = self.compose(**inputs)
        sample = {"image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))}
        if self.tensor_transform is not None:
            sample["image"] = self.tensor_transform(sample["image"])
        for key in ("mask", "sparse"):
            if key in inputs:
                sample[key] = torch.from_numpy(np.asarray(out[key], dtype=np.int64))
        if self.with_boxes:
            sample["boxes"] = torch.as_tensor(np.asarray(out["bboxes"], np.float32).reshape(-1, 4))
        return sample


class RandomScaleAspect(A.DualTransform):
    """Resize by a random scale s and aspect a: width × s·√a, height × s / √a; bicubic image, nearest labels
    (SASFormer's ``RandomResize``)."""

    def __init__(
        self,
        scale_range: tuple[float, float],
        aspect_range: tuple[float, float],
        interpolation: int = cv2.INTER_CUBIC,
        mask_interpolation: int = cv2.INTER_NEAREST,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        for name, (low, high) in (("scale_range", scale_range), ("aspect_range", aspect_range)):
            if not 0 < low <= high:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {(low, high)}")
        self.scale_range, self.aspect_range = tuple(scale_range), tuple(aspect_range)
        self.interpolation, self.mask_interpolation = interpolation, mask_interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """The output size (height, width) for this sample."""
        scale = self.py_random.uniform(*self.scale_range)
        aspect = self.py_random.uniform(*self.aspect_range)
        height, width = params["shape"][:2]
        return {"size": (max(1, round(height * scale / math.sqrt(aspect))),
                         max(1, round(width * scale * math.sqrt(aspect))))}

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        """Resize the image."""
        return fgeometric.resize(img, size, self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        """Resize a label map (nearest)."""
        return fgeometric.resize(mask, size, self.mask_interpolation)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        """Boxes are stored normalised, so a resize leaves them as they are."""
        return bboxes


class BrightnessShift(A.ImageOnlyTransform):
    """Add one random integer in [−limit, limit] to every channel of an 8-bit-scale image, clipped to [0, 255]
    (SASFormer's trainer-side brightness augmentation)."""

    def __init__(self, limit: int, p: float = 1.0) -> None:
        super().__init__(p=p)
        if limit < 0:
            raise ValueError(f"brightness_shift must be >= 0, got {limit}")
        self.limit = limit

    def get_params(self) -> dict[str, Any]:
        """The shift of this sample."""
        return {"shift": self.py_random.randint(-self.limit, self.limit)}

    def apply(self, img: np.ndarray, shift: int, **params: Any) -> np.ndarray:
        """Shift and clip."""
        return np.clip(img + np.float32(shift), 0, 255)


def build_transform(
    mean: Sequence[float],
    std: Sequence[float],
    *,
    resize: int | None = None,
    resize_long: tuple[int, int] | None = None,
    scale_range: tuple[float, float] = (1.0, 1.0),
    aspect_range: tuple[float, float] = (1.0, 1.0),
    crop_size: int | None = None,
    rotate: float = 0.0,
    translate_px: int = 0,
    hflip: bool = False,
    brightness_shift: int = 0,
    with_boxes: bool = False,
) -> SampleTransform:
    """Normalise, then optionally resize to a square, random-scale, pad + random-crop, rotate/shift and flip.

    ``mean``/``std`` are per channel in the raw pixel scale. ``resize_long`` = (low, high) rescales the long
    side to a random integer in [low, high] (IRN's ``random_resize_long``, bicubic), ``scale_range`` scales by
    a random factor ((1, 1) disables it) and ``aspect_range`` stretches width against height (SASFormer's
    resize); ``crop_size`` None keeps the whole image. ``rotate`` (degrees) and ``translate_px`` draw one
    random rotation and shift after the crop (the sparse ViT's ``Affine``). Padding and the corners the
    rotation uncovers fill 0 (the mean) in the image and 255 in labels. ``brightness_shift`` adds a random
    integer in [−shift, shift] to the raw 8-bit image first (SASFormer).
    """
    if len(mean) != len(std):
        raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
    if rotate < 0 or translate_px < 0:
        raise ValueError(f"rotate and translate_px must be >= 0, got {rotate} and {translate_px}")
    steps: list[A.BasicTransform] = [BrightnessShift(brightness_shift)] if brightness_shift else []
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=1.0))
    if resize is not None:
        steps.append(
            A.Resize(resize, resize, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)
        )
    if resize_long is not None:
        shortest, longest = resize_long
        if not 0 < shortest <= longest:
            raise ValueError(f"resize_long must satisfy 0 < low <= high, got {resize_long}")
        steps.append(
            A.LongestMaxSize(max_size=list(range(shortest, longest + 1)), interpolation=cv2.INTER_CUBIC,
                             mask_interpolation=cv2.INTER_NEAREST)
        )
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    if tuple(aspect_range) != (1.0, 1.0):
        steps.append(RandomScaleAspect(scale_range, aspect_range))
    elif (low, high) != (1.0, 1.0):
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
    if rotate or translate_px:
        steps.append(
            A.Affine(rotate=(-rotate, rotate), translate_px=(-translate_px, translate_px), scale=1.0,
                     interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                     border_mode=cv2.BORDER_CONSTANT, fill=0.0, fill_mask=IGNORE_INDEX, p=1.0)
        )
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    return SampleTransform(steps, with_boxes=with_boxes)


TrainAugment = Literal["scale_crop", "deit"]


class RandAugment(A.ImageOnlyTransform):
    """timm's RandAugment on the raw 8-bit RGB image (PIL operations), as an albumentations step."""

    def __init__(self, config: str, crop_size: int, mean: Sequence[float], p: float = 1.0) -> None:
        super().__init__(p=p)
        hparams = {
            "translate_const": int(crop_size * 0.45),
            "img_mean": tuple(min(255, round(m)) for m in mean),
            "interpolation": Image.BICUBIC,
        }
        self.augment = rand_augment_transform(config, hparams)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        """Round to uint8, augment, return float32 in the same 0-255 scale."""
        pil = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8))
        return np.asarray(self.augment(pil), dtype=np.float32)


def build_deit_transform(
    mean: Sequence[float],
    std: Sequence[float],
    crop_size: int,
    rand_augment: str = "rand-m9-mstd0.5-inc1",
    erase_prob: float = 0.25,
) -> SampleTransform:
    """DeiT's training pipeline (timm ``create_transform``), which MCTformer trains with: RandomResizedCrop
    (scale 0.08-1, bicubic), horizontal flip, RandAugment, normalisation, RandomErasing (pixel mode).

    timm ignores the ColorJitter argument when RandAugment is on, so there is none. RGB 8-bit images only;
    label maps are dropped (RandAugment moves the image alone), so it serves image-level supervision.
    """
    if len(mean) != 3:
        raise ValueError(f"the 'deit' augmentation needs 8-bit RGB images, got {len(mean)} channels")
    steps = [
        A.RandomResizedCrop((crop_size, crop_size), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                            interpolation=cv2.INTER_CUBIC),
        A.HorizontalFlip(p=0.5),
        RandAugment(rand_augment, crop_size, mean),
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=1.0),
    ]
    erase = RandomErasing(probability=erase_prob, mode="pixel", max_count=1, num_splits=0, device="cpu")
    return SampleTransform(steps, image_only=True, tensor_transform=erase)
