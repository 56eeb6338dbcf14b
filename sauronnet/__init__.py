"""SauronNet: nnU-Net-style self-configuring 3D segmentation with Sauron filter pruning during training."""

__version__ = "0.1.0"
