"""vidseg: video semantic segmentation with recurrent UNets."""

__version__ = "0.1.0"

__all__ = ["Segmenter"]


def __getattr__(name: str):
    # Imported on first use, so that `import vidseg` (and `vidseg --help`) does not load torch.
    if name == "Segmenter":
        from vidseg.segment import Segmenter

        return Segmenter
    raise AttributeError(f"module 'vidseg' has no attribute {name!r}")
