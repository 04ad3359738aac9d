"""Data: the Cityscapes label table, video-clip datasets, clip transforms, the frame cache, SynthCity.

A dataset sample is a dict that PyTorch's default collate batches:

- ``frames``: float32 ``[T, 3, H, W]``, normalised with ``transforms.MEAN`` / ``transforms.STD``;
- ``labels``: int64 ``[T, H, W]``, class indices of the label set, 255 = ignore (all 255 on unlabelled frames);
- ``labelled``: bool ``[T]``, frames that carry a label file;
- ``corruption``: int64 ``[T]``, index into ``synthcity.CORRUPTIONS`` (0 = clean; all 0 outside SynthCity);
- ``gt_index``: int, position of the annotated frame in the window;
- ``name``: ``city_seq_frame`` of the annotated frame, e.g. ``bochum_000000_000313``.
"""

from vidseg.data.cityscapes import CityscapesSequences, read_image, read_label_ids
from vidseg.data.labels import IGNORE_INDEX, LABELS, PALETTE, LabelSet, get_label_set, train_id_to_label_id
from vidseg.data.transforms import MEAN, STD, ClipTransform, denormalize, normalize

__all__ = [
    "IGNORE_INDEX",
    "LABELS",
    "MEAN",
    "PALETTE",
    "STD",
    "CityscapesSequences",
    "ClipTransform",
    "LabelSet",
    "denormalize",
    "get_label_set",
    "normalize",
    "read_image",
    "read_label_ids",
    "train_id_to_label_id",
]
