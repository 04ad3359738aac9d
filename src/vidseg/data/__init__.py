"""Data: video indexes of every dataset layout, label sets, clip datasets and transforms, the frame cache.

``open_dataset(root, split, num_frames, ...)`` reads any supported layout (Cityscapes/SynthCity, CamVid, VSPW,
plain folders); ``build_index`` gives the ``VideoIndex`` of a split (sequences of frames with their labels).

A dataset sample is a dict that PyTorch's default collate batches:

- ``frames``: float32 ``[T, 3, H, W]``, normalised with ``transforms.MEAN`` / ``transforms.STD``;
- ``labels``: int64 ``[T, H, W]``, class indices of the label set, 255 = ignore (all 255 on unlabelled frames);
- ``labelled``: bool ``[T]``, frames that carry a label file;
- ``corruption``: int64 ``[T]``, index into ``synthcity.CORRUPTIONS`` (0 = clean; all 0 outside SynthCity);
- ``gt_index``: int, position of the annotated frame in the window;
- ``name``: the annotated frame's own stem, e.g. ``bochum_000000_000313``, ``0001TP_008550``.
"""

from vidseg.data.cityscapes import CityscapesSequences
from vidseg.data.clips import ClipDataset, open_dataset
from vidseg.data.files import read_image, read_label_ids
from vidseg.data.index import Frame, Sequence, VideoIndex, build_index
from vidseg.data.labels import IGNORE_INDEX, LABELS, PALETTE, LabelSet, get_label_set, train_id_to_label_id
from vidseg.data.transforms import MEAN, STD, ClipTransform, denormalize, normalize

__all__ = [
    "IGNORE_INDEX",
    "LABELS",
    "MEAN",
    "PALETTE",
    "STD",
    "Sequence",
    "VideoIndex",
    "build_index",
    "CityscapesSequences",
    "ClipDataset",
    "ClipTransform",
    "Frame",
    "LabelSet",
    "denormalize",
    "get_label_set",
    "normalize",
    "open_dataset",
    "read_image",
    "read_label_ids",
    "train_id_to_label_id",
]
