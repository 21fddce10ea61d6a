"""MS COCO 2014 in the class-index-PNG layout of WSSS repositories (81 classes with the background).

Layout under ``root``::

    train2014/<name>.jpg, val2014/<name>.jpg
    SegmentationClass/{train2014,val2014}/<name>.png    class ids 0..80, 255 = ignore
    train_id.txt, val_id.txt                             names without extension, one per line
    cls_labels.npy                                       optional: dict name -> multi-hot (80,)

Splits are "train" and "val". Image-level or dense supervision only (no public point/scribble labels).
"""

from pathlib import Path
from typing import Any

from wsss.data.voc import VOCDataModule

COCO_CLASSES = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


class COCODataModule(VOCDataModule):
    """COCO 2014 through the VOC reader: only the folder layout and the class list differ."""

    supervisions = ("image", "dense")
    default_classes = COCO_CLASSES
    obtain_hint = (
        "Expected a COCO 2014 folder with train2014/, val2014/, SegmentationClass/{train2014,val2014}/ "
        "(class-index PNGs, as made by the WSSS repositories from the instance annotations) and "
        "train_id.txt / val_id.txt."
    )

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        predict_split: str = "train",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            predict_split=predict_split,
            **kwargs,
        )

    def split_file(self, split: str) -> Path:
        """``<split>_id.txt`` at the root."""
        return self.root / f"{split}_id.txt"

    def image_dir(self, split: str) -> Path:
        """``<split>2014/``."""
        return self.root / f"{split}2014"

    def gt_mask_dir(self, split: str) -> Path | None:
        """``SegmentationClass/<split>2014/``, None when absent."""
        folder = self.root / "SegmentationClass" / f"{split}2014"
        return folder if folder.is_dir() else None
