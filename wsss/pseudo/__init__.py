"""Stage 2: CAM post-processing into pseudo-masks (background rules, refinement, mask writing)."""

from wsss.pseudo.background import (
    cams_to_mask,
    cams_with_bg_to_mask,
    keep_present_classes,
    normalize_cams,
    scores_with_background,
)

__all__ = [
    "cams_to_mask",
    "cams_with_bg_to_mask",
    "keep_present_classes",
    "normalize_cams",
    "scores_with_background",
]
