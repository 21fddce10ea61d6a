"""cam_to_box and WSOLAccuracy on crafted blobs with hand-counted hits."""

import pytest
import torch

from wsss.eval import WSOLAccuracy, cam_to_box


def test_box_of_the_largest_region_depends_on_the_threshold() -> None:
    cam = torch.zeros(20, 20)
    cam[5:11, 8:16] = 1.0  # strong blob, 48 px
    cam[14:16, 1:3] = 1.0  # small strong blob, 4 px
    cam[0:3, :] = 0.3  # faint band, 60 px, not touching the strong blob
    assert cam_to_box(cam, 0.5).tolist() == [8, 5, 16, 11]  # x2, y2 exclusive
    assert cam_to_box(cam, 0.2).tolist() == [0, 0, 20, 3]
    assert cam_to_box(cam, 1.5).tolist() == [0, 0, 0, 0]


def test_diagonal_neighbours_form_one_region() -> None:
    cam = torch.zeros(6, 6)
    cam[0, 0] = cam[1, 1] = cam[2, 2] = 1.0
    cam[4:6, 4:6] = 1.0  # 4 px vs the 3 px diagonal: the square wins
    assert cam_to_box(cam, 0.5).tolist() == [4, 4, 6, 6]
    cam[3, 3] = 1.0  # now the diagonal reaches the square: one region of 8 px
    assert cam_to_box(cam.numpy(), 0.5).tolist() == [0, 0, 6, 6]


def crafted_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Four 16x16 images over 6 classes; see the hit table in the test below."""
    cams = torch.zeros(4, 6, 16, 16)
    logits = torch.zeros(4, 6)
    target = torch.tensor([2, 1, 0, 5])
    boxes = [
        torch.tensor([[2.0, 3.0, 8.0, 9.0]]),
        torch.tensor([[4.0, 4.0, 12.0, 12.0]]),
        torch.tensor([[10.0, 10.0, 16.0, 16.0]]),
        torch.tensor([[0.0, 0.0, 3.0, 3.0], [8.0, 8.0, 14.0, 14.0]]),
    ]
    # image 0: top-1 right; GT-class CAM = core on the box (4.0) inside a halo (1.2 -> 0.3 after min-max)
    # whose box (0, 1, 10, 11) has IoU 36/100 with the truth: localised at 0.5, not at 0.2
    logits[0] = torch.tensor([0.0, 1.0, 9.0, 2.0, 3.0, 4.0])
    cams[0, 2, 1:11, 0:10] = 1.2
    cams[0, 2, 3:9, 2:8] = 4.0
    # image 1: ranked 4 > 3 > 1 > ...: top-1 wrong, top-5 right; CAM exactly on the box
    logits[1] = torch.tensor([0.0, 7.0, 1.0, 8.0, 9.0, 2.0])
    cams[1, 1, 4:12, 4:12] = 1.0
    # image 2: class 0 ranked last (not in the top 5); its CAM misses the box, but the CAM of the
    # predicted class 3 covers it and must not count
    logits[2] = torch.tensor([0.0, 1.0, 2.0, 9.0, 3.0, 4.0])
    cams[2, 0, 0:4, 0:4] = 1.0
    cams[2, 3, 10:16, 10:16] = 1.0
    # image 3: top-1 right, two GT boxes, the CAM matches the second
    logits[3] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 9.0])
    cams[3, 5, 8:14, 8:14] = 1.0
    return logits, cams, target, boxes


# localised at 0.2: [no, yes, no, yes]; at 0.5: [yes, yes, no, yes]
# top-1 right: [yes, no, no, yes]; top-5 right: [yes, yes, no, yes]
EXPECTED_CURVE = {"loc_gt_known": [2 / 4, 3 / 4], "loc_top1": [1 / 4, 2 / 4], "loc_top5": [2 / 4, 3 / 4]}
EXPECTED = {
    "cls_top1": 2 / 4,
    "cls_top5": 3 / 4,
    "loc_top1": 2 / 4,
    "loc_top5": 3 / 4,
    "loc_gt_known": 3 / 4,
    "cam_threshold": 0.5,
}


def test_counts_on_crafted_images_and_best_threshold_by_gt_known() -> None:
    logits, cams, target, boxes = crafted_batch()
    metric = WSOLAccuracy(cam_thresholds=(0.2, 0.5))
    metric.update(logits, cams, target, boxes)
    assert {k: v.item() for k, v in metric.compute().items()} == pytest.approx(EXPECTED)
    curve = metric.localization_curve()
    assert curve["cam_threshold"].tolist() == [0.2, 0.5]
    for name, values in EXPECTED_CURVE.items():
        assert curve[name].tolist() == pytest.approx(values)


def test_gt_class_cams_and_split_updates_give_the_same_result() -> None:
    logits, cams, target, boxes = crafted_batch()
    metric = WSOLAccuracy(cam_thresholds=(0.2, 0.5))
    gt_cams = cams[torch.arange(4), target]
    metric.update(logits[:2], gt_cams[:2], target[:2], boxes[:2])
    metric.update(logits[2:], gt_cams[2:], target[2:], boxes[2:])
    assert {k: v.item() for k, v in metric.compute().items()} == pytest.approx(EXPECTED)
    metric.reset()
    assert metric.total == 0 and metric.loc_gt_known.sum() == 0


def test_bad_boxes_are_a_clear_error() -> None:
    logits, cams, target, boxes = crafted_batch()
    with pytest.raises(ValueError, match="boxes must be a list of 4"):
        WSOLAccuracy().update(logits, cams, target, boxes[:3])
    with pytest.raises(ValueError, match="cams must be"):
        WSOLAccuracy().update(logits, cams[:, :5], target, boxes)
