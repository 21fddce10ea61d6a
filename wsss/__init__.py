"""wsss: weakly- and sparsely-supervised semantic segmentation in PyTorch Lightning."""

__version__ = "0.1.0"
