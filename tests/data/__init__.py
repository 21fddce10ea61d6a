"""Writers of tiny fake datasets in the real on-disk layouts (VOC, COCO, CUB, DFC2020), for any test."""
