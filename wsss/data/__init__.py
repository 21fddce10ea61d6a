"""Datasets, DataModules, on-disk formats and transforms of wsss.

Importing this package registers every DataModule, so LightningCLI resolves short class names
(``class_path: VOCDataModule``).
"""

from wsss.data.base import WSSSDataModule, WSSSDataset, image_labels
from wsss.data.coco import COCO_CLASSES, COCODataModule
from wsss.data.cub import CUBDataModule
from wsss.data.dfc2020 import DFC2020_CLASSES, DFC2020DataModule, remap_dfc
from wsss.data.io import DataFileError
from wsss.data.voc import VOC_CLASSES, VOCDataModule

__all__ = [
    "COCO_CLASSES",
    "DFC2020_CLASSES",
    "VOC_CLASSES",
    "COCODataModule",
    "CUBDataModule",
    "DFC2020DataModule",
    "DataFileError",
    "VOCDataModule",
    "WSSSDataModule",
    "WSSSDataset",
    "image_labels",
    "remap_dfc",
]
