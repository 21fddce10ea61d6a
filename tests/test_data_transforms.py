"""The albumentations pipelines: per-channel normalisation for any band count, and image, mask, sparse
labels and boxes moved together."""

import albumentations as A
import numpy as np
import pytest

from wsss.data.transforms import SampleTransform, build_transform


def _labelled_image(height: int, width: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A mask of ids 0..9 and an image whose channel c is mask * (c + 1), so alignment can be checked."""
    mask = (np.arange(height * width).reshape(height, width) % 10).astype(np.uint8)
    image = mask[..., None].astype(np.float32) * np.arange(1, channels + 1, dtype=np.float32)
    return image, mask


@pytest.mark.parametrize("channels", [2, 3, 13, 15])
def test_normalisation_is_per_channel_for_any_band_count(channels: int) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 5000, (5, 6, channels)).astype(np.float32)
    mean, std = rng.uniform(0, 100, channels), rng.uniform(1, 50, channels)
    out = build_transform(tuple(mean), tuple(std))(image)["image"]
    expected = ((image - mean) / std).transpose(2, 0, 1)
    assert out.shape == (channels, 5, 6)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_hflip_moves_image_mask_and_sparse_together() -> None:
    image, mask = _labelled_image(4, 5, 15)
    sparse = np.full((4, 5), 255, np.uint8)
    sparse[1, 0] = 7  # one click at the left edge
    transform = build_transform((0.0,) * 15, (1.0,) * 15, hflip=True)
    outcomes = set()
    for seed in range(20):
        transform.reseed(seed)
        out = transform(image, mask=mask, sparse=sparse)
        flipped = out["mask"][0, 0].item() == mask[0, 4]  # hand check: column 0 holds old column 4
        outcomes.add(flipped)
        expected_mask = mask[:, ::-1] if flipped else mask
        np.testing.assert_array_equal(out["mask"].numpy(), expected_mask)
        np.testing.assert_array_equal(
            out["image"].numpy(), (expected_mask[None] * np.arange(1, 16)[:, None, None])
        )
        assert out["sparse"][1, 4 if flipped else 0].item() == 7
        assert (out["sparse"] != 255).sum().item() == 1
    assert outcomes == {True, False}


@pytest.mark.parametrize("channels", [3, 15])
def test_pad_and_crop_keep_labels_aligned_and_pad_with_ignore(channels: int) -> None:
    image, mask = _labelled_image(6, 10, channels)  # height 6 < crop 8: rows are padded
    sparse = np.where(mask % 3 == 0, mask, 255).astype(np.uint8)
    transform = build_transform((0.0,) * channels, (1.0,) * channels, crop_size=8, hflip=True)
    for seed in range(10):
        transform.reseed(seed)
        out = transform(image, mask=mask, sparse=sparse)
        img, lab, sp = out["image"].numpy(), out["mask"].numpy(), out["sparse"].numpy()
        assert img.shape == (channels, 8, 8) and lab.shape == sp.shape == (8, 8)
        padded = lab == 255
        assert padded.sum() == 2 * 8  # two padded rows of the 8 cropped columns
        assert (img[:, padded] == 0).all() and (sp[padded] == 255).all()
        np.testing.assert_array_equal(img[:, ~padded], lab[~padded] * np.arange(1, channels + 1)[:, None])
        labelled = sp != 255
        np.testing.assert_array_equal(sp[labelled], lab[labelled])


def test_random_scale_uses_nearest_interpolation_for_labels() -> None:
    image, mask = _labelled_image(5, 7, 13)
    out = build_transform((0.0,) * 13, (1.0,) * 13, scale_range=(2.0, 2.0))(image, mask=mask, sparse=mask)
    expected = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)  # nearest: pixel (y, x) <- (y // 2, x // 2)
    np.testing.assert_array_equal(out["mask"].numpy(), expected)
    np.testing.assert_array_equal(out["sparse"].numpy(), expected)
    assert out["image"].shape == (13, 10, 14)


def test_boxes_follow_resize_and_flip() -> None:
    transform = SampleTransform([A.Resize(20, 20), A.HorizontalFlip(p=1.0)], with_boxes=True)
    image = np.zeros((40, 50, 3), np.float32)
    out = transform(image, boxes=np.array([[10.0, 4.0, 20.0, 30.0]]))
    # resize: x * 20 / 50, y * 20 / 40 -> [4, 2, 8, 15]; flip in width 20 -> [12, 2, 16, 15]
    np.testing.assert_allclose(out["boxes"].numpy(), [[12.0, 2.0, 16.0, 15.0]], atol=1e-4)
    assert out["image"].shape == (3, 20, 20)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="mean has 3 channels but std has 2"):
        build_transform((0.0, 0.0, 0.0), (1.0, 1.0))
    with pytest.raises(ValueError, match="scale_range"):
        build_transform((0.0,), (1.0,), scale_range=(1.5, 0.5))


def test_resize_long_draws_the_long_side_in_range_with_labels_aligned() -> None:
    image, mask = _labelled_image(375, 500, 3)
    transform = build_transform((0.0,) * 3, (1.0,) * 3, resize_long=(210, 420))
    sides = set()
    for seed in range(8):
        transform.reseed(seed)
        out = transform(image, mask=mask)
        height, width = out["image"].shape[-2:]
        assert 210 <= width <= 420 and height == round(width * 375 / 500)  # IRN: long side, aspect kept
        assert out["mask"].shape == (height, width)
        assert set(out["mask"].unique().tolist()) <= set(range(10))  # nearest: no blended ids
        sides.add(width)
    assert len(sides) > 1
    with pytest.raises(ValueError, match="resize_long"):
        build_transform((0.0,), (1.0,), resize_long=(300, 200))


def test_deit_pipeline_crops_augments_and_drops_label_maps() -> None:
    import torch

    from wsss.data.transforms import build_deit_transform

    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (375, 500, 3)).astype(np.float32)
    mask = np.zeros((375, 500), np.uint8)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    plain = build_deit_transform(mean, std, 224, rand_augment="rand-m0-n0", erase_prob=0.0)
    augmented = build_deit_transform(mean, std, 224, erase_prob=1.0)
    outs = []
    for transform in (plain, augmented):
        transform.reseed(0)
        torch.manual_seed(0)
        out = transform(image, mask=mask)
        assert set(out) == {"image"} and out["image"].shape == (3, 224, 224)
        outs.append(out["image"])
    assert not torch.allclose(outs[0], outs[1])  # RandAugment and the erased box changed the crop
    with pytest.raises(ValueError, match="8-bit RGB"):
        build_deit_transform((0.0,) * 13, (1.0,) * 13, 224)


def test_deit_augment_in_the_datamodule(synthetic_voc) -> None:
    from wsss.data.voc import VOCDataModule

    data = VOCDataModule(str(synthetic_voc), crop_size=32, batch_size=4, train_augment="deit")
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and "mask" not in batch
    assert batch["cls_labels"].shape[0] == 4
    with pytest.raises(ValueError, match="supervision='image'"):
        VOCDataModule(str(synthetic_voc), supervision="point", train_augment="deit")


def test_scale_aspect_resize_stretches_width_against_height_with_labels_aligned() -> None:
    image, mask = _labelled_image(375, 500, 3)
    fixed = build_transform((0.0,) * 3, (1.0,) * 3, scale_range=(2.0, 2.0), aspect_range=(1.21, 1.21))
    out = fixed(image, mask=mask)
    # hand computation: width x 2 * sqrt(1.21) = 2.2, height x 2 / 1.1
    assert out["image"].shape[-2:] == (round(375 * 2 / 1.1), 500 * 2.2)
    assert out["mask"].shape == out["image"].shape[-2:]
    assert set(out["mask"].unique().tolist()) <= set(range(10))  # nearest: no blended ids
    jitter = build_transform((0.0,) * 3, (1.0,) * 3, scale_range=(0.5, 2.0), aspect_range=(0.9, 1.1))
    aspects = []
    for seed in range(12):
        jitter.reseed(seed)
        height, width = jitter(image, mask=mask)["image"].shape[-2:]
        aspects.append((width / height) / (500 / 375))
    assert min(aspects) >= 0.9 - 0.01 and max(aspects) <= 1.1 + 0.01 and max(aspects) - min(aspects) > 0.02
    with pytest.raises(ValueError, match="aspect_range"):
        build_transform((0.0,), (1.0,), scale_range=(0.5, 2.0), aspect_range=(1.1, 0.9))


def test_brightness_shift_adds_one_integer_to_the_raw_image_then_clips() -> None:
    image = np.full((6, 7, 3), 200.0, np.float32)
    image[0, 0], image[0, 1] = 3.0, 250.0
    transform = build_transform((0.0,) * 3, (1.0,) * 3, brightness_shift=10)
    shifts = set()
    for seed in range(30):
        transform.reseed(seed)
        out = transform(image)["image"].numpy()
        shift = out[0, 1, 1] - 200.0
        assert shift == round(shift) and -10 <= shift <= 10
        np.testing.assert_array_equal(out[:, 1:, :], 200.0 + shift)  # one shift for every pixel and channel
        np.testing.assert_array_equal(out[:, 0, 0], max(3.0 + shift, 0.0))  # clipped at 0
        np.testing.assert_array_equal(out[:, 0, 1], min(250.0 + shift, 255.0))  # and at 255
        shifts.add(shift)
    assert len(shifts) > 5
    with pytest.raises(ValueError, match="brightness_shift"):
        build_transform((0.0,), (1.0,), brightness_shift=-1)


@pytest.mark.parametrize("channels", [3, 15])
def test_rotate_and_shift_move_image_and_mask_together(channels: int) -> None:
    height = width = 224
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2:] = 1  # two halves: the rotated edge must be in the same place in both
    image = np.repeat(mask[..., None].astype(np.float32), channels, axis=-1) * 100.0
    transform = build_transform((0.0,) * channels, (1.0,) * channels, crop_size=224, rotate=20,
                                translate_px=5)
    moved = 0
    for seed in range(6):
        transform.reseed(seed)
        out = transform(image, mask=mask)
        labels, values = out["mask"].numpy(), out["image"].numpy()
        assert values.shape == (channels, height, width)
        inside = labels != 255
        # away from the rotated edge, the image says what the mask says
        agree = (np.abs(values[0] - 100.0 * labels) < 1e-3) | ~inside
        assert agree.mean() > 0.98
        if (~inside).any():  # uncovered corners: mask 255, image 0 (the mean) but for the blended rim
            assert (values[:, ~inside] == 0).mean() > 0.9
        moved += int((~inside).any())
    assert moved >= 5  # a 20-degree rotation uncovers corners (5-px shifts alone too)
    with pytest.raises(ValueError, match="rotate"):
        build_transform((0.0,), (1.0,), rotate=-5)


def test_sasformer_and_sparse_vit_augmentations_in_the_datamodule(synthetic_voc) -> None:
    from wsss.data.transforms import BrightnessShift, RandomScaleAspect
    from wsss.data.voc import VOCDataModule

    data = VOCDataModule(str(synthetic_voc), crop_size=32, batch_size=2, supervision="point",
                         scale_range=(0.5, 2.0), aspect_range=(0.9, 1.1), brightness_shift=10, rotate=20,
                         translate_px=5)
    steps = [type(step) for step in data.train_transform().compose.transforms]
    assert steps[0] is BrightnessShift and RandomScaleAspect in steps and A.Affine in steps
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["sparse"].shape == (2, 32, 32)
