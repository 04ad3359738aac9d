"""What training reads: the datasets of a config, seeded samples, each epoch's batches, class weights.

Exact resume rests on two of these: each sample's random draws depend only on (seed, epoch, index), not on a
worker's RNG stream (``SeededSamples``), and the epoch's sample order is a pure function of (seed, epoch)
(``epoch_batches``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from vidseg import distributed
from vidseg.config import Config
from vidseg.data.clips import ClipDataset, open_dataset
from vidseg.data.corrupt import CorruptedClips, Corruption
from vidseg.data.labels import IGNORE_INDEX
from vidseg.data.mix import CutMixClips
from vidseg.data.still import StillClips
from vidseg.data.transforms import ClipTransform
from vidseg.errors import VidsegError
from vidseg.metrics import all_reduce_sum


class SeededSamples(torch.utils.data.Dataset):
    """A dataset whose every sample draws its randomness from a seed made of (seed, epoch, index).

    The random window position, frame stride, crop and flip of a sample are then the same whichever worker
    loads it and whether or not training was interrupted. Uses the ``dataset[(index, seed)]`` protocol of
    ``CityscapesSequences``.
    """

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample_seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
        return self.dataset[(index, int(sample_seed) % 2**63)]


def epoch_batches(
    num_samples: int, epoch: int, seed: int, batch_size: int, rank: int, world_size: int
) -> list[list[int]]:
    """This process's micro-batches (lists of sample indices) for ``epoch``: a pure function of its arguments.

    The order is a DistributedSampler's (shuffled with seed + epoch, padded by repetition so that every process
    gets the same number of samples).
    """
    sampler: torch.utils.data.DistributedSampler[int] = torch.utils.data.DistributedSampler(
        range(num_samples),  # type: ignore[arg-type]  # the sampler only takes len() of its "dataset"
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    return [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]


def build_datasets(config: Config, with_val: bool = True):
    """The training dataset (random windows and augmentation) and the validation dataset (deterministic), of
    any layout (``data.layout``); both read their labels in ``data.label_set`` (None: the layout's default)."""
    data = config.data
    size = (data.size[0], data.size[1])
    scale = (data.scale[0], data.scale[1])
    window = (data.crop[0], data.crop[1]) if data.crop else size
    cropped = scale != (1.0, 1.0) or window != size
    train_transform = ClipTransform(
        size, scale_range=scale if cropped else None, crop=cropped, hflip=data.hflip,
        crop_size=window if cropped else None,
    )
    stride = tuple(data.frame_stride) if isinstance(data.frame_stride, list) else data.frame_stride
    train_set: ClipDataset | StillClips | CutMixClips | CorruptedClips
    val_set: ClipDataset | CorruptedClips
    try:
        train_set = open_dataset(
            data.root,
            data.train_split,
            num_frames=data.num_frames,
            gt_position=data.gt_position,
            frame_stride=stride,
            transform=train_transform,
            layout=data.layout,
            label_set=data.label_set,
            skip_missing=data.skip_missing,
            cache=data.cache,
        )
    except ValueError as error:  # a window that cannot fit the snippets
        raise VidsegError(f"data (num_frames, gt_position, frame_stride) of the training split: {error}") from None
    if data.still.prob > 0:  # still clips first: CutMix and corruption apply to them as to any clip
        train_set = StillClips(train_set, data.still.prob, data.still.zoom, data.still.pan)
    if data.mixup.kind == "cutmix" and data.mixup.prob > 0:  # mixed clean, then corrupted per frame
        train_set = CutMixClips(train_set, data.mixup.prob, data.mixup.alpha)
    corruption = None
    if data.corrupt.rate > 0:  # the "-C" variant: corrupted frames, drawn anew per sample in training
        corruption = Corruption(data.corrupt.rate, tuple(data.corrupt.kinds), data.corrupt.seed)
        train_set = CorruptedClips(train_set, corruption, deterministic=False)
    if not with_val:
        return train_set, None
    try:
        val_set = open_dataset(
            data.root,
            data.val_split,
            num_frames=config.eval.num_frames,
            gt_position=config.eval.gt_position,
            transform=ClipTransform(size, resize_labels=config.eval.score_at == "working"),
            layout=data.layout,
            label_set=data.label_set,
            skip_missing=data.skip_missing,
            cache=data.cache,
        )
    except ValueError as error:
        raise VidsegError(f"eval (num_frames, gt_position) of the validation split: {error}") from None
    if corruption is not None:
        val_set = CorruptedClips(val_set, corruption, deterministic=True)
    if config.eval.max_samples is not None and config.eval.max_samples < len(val_set):
        evenly_spaced = np.linspace(0, len(val_set) - 1, config.eval.max_samples).round().astype(int)
        return train_set, torch.utils.data.Subset(val_set, evenly_spaced.tolist())
    return train_set, val_set


def class_frequency_weights(
    dataset,
    num_classes: int,
    frames: str,
    max_samples: int,
    num_workers: int,
    ctx: distributed.Context,
    class_names: Sequence[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Class weights 1 / sqrt(frequency) over the labels the loss sees, normalised to mean 1 over seen classes.

    Counted on up to ``max_samples`` evenly spaced samples (0 = all), split among the processes. Classes never
    seen get the largest weight, so that a class missing from the counted subset is not switched off; ``warn``
    is called with a message naming them (``class_names``).
    """
    total = len(dataset)
    chosen = np.linspace(0, total - 1, max_samples).round().astype(int) if 0 < max_samples < total else range(total)
    mine = [int(chosen[i]) for i in distributed.shard(len(chosen), ctx.rank, ctx.world_size)]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, mine), batch_size=None, num_workers=num_workers
    )
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for sample in loader:
        labels = sample["labels"]
        if frames == "annotated":
            labels = labels[sample["gt_index"]]
        labels = labels[labels != IGNORE_INDEX].long()
        counts += torch.bincount(labels, minlength=num_classes)[:num_classes].double()
    counts = all_reduce_sum(counts.to(ctx.device)).cpu()
    if counts.sum() == 0:
        raise VidsegError(
            f"loss.class_weights: the {len(chosen)} counted training samples hold no labelled pixel; "
            "check data.root and data.label_set"
        )
    seen = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[seen] = (counts[seen] / counts.sum()).rsqrt()
    weights[seen] /= weights[seen].mean()
    weights[~seen] = weights[seen].max()
    if warn is not None and not bool(seen.all()):
        names = class_names or [str(i) for i in range(num_classes)]
        absent = ", ".join(names[i] for i in range(num_classes) if not seen[i])
        warn(
            f"warning: classes absent from the labels of the {len(chosen)} counted training samples: {absent}; "
            f"they get the largest weight ({float(weights[seen].max()):.2f}) in case they occur elsewhere. If "
            "they never occur the model cannot learn them: check data.label_set, or count every sample with "
            "loss.class_weight_samples=0"
        )
    return weights.float()
