"""One LightningModule per paper (stage 1), the CAM baseline and Grad-CAM, and the stage-3 SegmentationTask.

Modules are imported by their full path (``wsss.methods.sasformer.SASFormer``) so that importing one method
does not load the others.
"""
