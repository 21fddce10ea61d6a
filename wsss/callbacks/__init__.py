"""Lightning callbacks that use a method's public API only."""

from wsss.callbacks.box_writer import LocalisationBoxWriter
from wsss.callbacks.cam_snapshot import CAMSnapshot
from wsss.callbacks.prediction_writer import PseudoMaskWriter

__all__ = ["CAMSnapshot", "LocalisationBoxWriter", "PseudoMaskWriter"]
