"""vidseg: video semantic segmentation with recurrent UNets."""

__version__ = "0.1.0"
