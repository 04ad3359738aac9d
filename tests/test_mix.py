"""CutMix for clips (``data.mixup``): one box on every frame, labels pasted with it, deterministic per seed; and how
build_datasets stacks the clip wrappers (still clips, CutMix, corruption)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseg.config import config_from_dict
from vidseg.data.corrupt import CorruptedClips
from vidseg.data.mix import CutMixClips, cutmix_box, paste_clip
from vidseg.data.still import StillClips
from vidseg.errors import VidsegError
from vidseg.train import SeededSamples, build_datasets

T, H, W = 4, 12, 20


class NumberedClips(torch.utils.data.Dataset):
    """Sample i: every frame value 100 * i + t + small seeded noise, labels i, frames with t % 2 == i % 2
    labelled (the others all ignore), corruption codes [i % 3, 0, ...]."""

    label_set = "numbered"

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index):
        i, seed = index if isinstance(index, tuple) else (index, 0)
        noise = torch.rand(T, 3, H, W, generator=torch.Generator().manual_seed(int(seed))) * 0.01
        frames = 100.0 * i + torch.arange(T, dtype=torch.float32).reshape(T, 1, 1, 1) + noise
        labelled = torch.tensor([t % 2 == i % 2 for t in range(T)])
        labels = torch.full((T, H, W), 255, dtype=torch.int64)
        labels[labelled] = i
        corruption = torch.zeros(T, dtype=torch.int64)
        corruption[0] = i % 3
        return {"frames": frames, "labels": labels, "labelled": labelled, "corruption": corruption,
                "gt_index": i % 2, "name": f"clip{i}"}


def source_of(sample: dict) -> torch.Tensor:
    """Which clip each pixel of each frame came from: ``[T, 3, H, W]``."""
    return torch.div(sample["frames"], 100, rounding_mode="floor").long()


def test_cutmix_pastes_one_box_on_every_frame_and_its_labels_with_it():
    dataset = CutMixClips(NumberedClips(), probability=1.0)
    mixed_count = 0
    for seed in range(20):
        sample = dataset[(2, seed)]
        source = source_of(sample)
        pasted = source[0, 0] != 2
        if not pasted.any():
            continue
        mixed_count += 1
        partner = int(source[0, 0][pasted][0])
        assert partner != 2
        assert (source == torch.where(pasted, partner, 2)).all(), "the same box on every frame and channel"
        rows, cols = pasted.any(dim=1).nonzero().flatten(), pasted.any(dim=0).nonzero().flatten()
        assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all(), "a box"
        # Frame t's pixels come from frame t of each clip: motion stays coherent.
        offset = sample["frames"] - 100.0 * source
        assert (offset.floor() == torch.arange(T).reshape(T, 1, 1, 1)).all()
        partner_labelled = torch.tensor([t % 2 == partner % 2 for t in range(T)])
        for t in range(T):
            own = 2 if t % 2 == 0 else 255
            other = partner if partner_labelled[t] else 255
            assert (sample["labels"][t] == torch.where(pasted, other, own)).all(), t
        assert torch.equal(sample["labelled"], torch.tensor([t % 2 == 0 for t in range(T)]) | partner_labelled)
        assert int(sample["corruption"][0]) == 2  # clip 2's own code (2 % 3) wins over the partner's
        assert sample["gt_index"] == 0 and sample["name"] == "clip2"
    assert mixed_count >= 15


def test_corruption_code_comes_from_the_partner_where_the_clip_has_none():
    clip, partner = NumberedClips()[(3, 0)], NumberedClips()[(1, 0)]  # codes 0 and 1 on frame 0
    mixed = paste_clip(clip, partner, (0, 4, 0, 4))
    assert mixed["corruption"].tolist() == [1, 0, 0, 0]
    assert torch.equal(clip["frames"], NumberedClips()[(3, 0)]["frames"]), "the inputs are not modified"


def test_seeded_samples_repeat_exactly_and_unmixed_ones_are_the_wrapped_datasets():
    wrapped = NumberedClips()
    dataset = CutMixClips(wrapped, probability=0.5)
    mixed = 0
    for seed in range(40):
        first, again = dataset[(1, seed)], dataset[(1, seed)]
        assert torch.equal(first["frames"], again["frames"]) and torch.equal(first["labels"], again["labels"])
        plain = wrapped[(1, seed)]
        if torch.equal(first["frames"], plain["frames"]):
            assert torch.equal(first["labels"], plain["labels"])
        else:
            mixed += 1
    assert 10 <= mixed <= 30
    never = CutMixClips(wrapped, probability=0.0)
    assert all(torch.equal(never[(i, 9)]["frames"], wrapped[(i, 9)]["frames"]) for i in range(5))


def test_cutmix_boxes_follow_the_beta_share():
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(2000):
        top, bottom, left, right = cutmix_box(rng, 100, 100, alpha=1.0)
        assert 0 <= top <= bottom <= 100 and 0 <= left <= right <= 100
        shares.append((bottom - top) * (right - left) / 1e4)
    # Uniform kept share, clipped at the edges: the pasted share averages below 1/2.
    assert 0.2 < float(np.mean(shares)) < 0.5


def test_clips_of_different_sizes_are_a_clear_error():
    clip = NumberedClips()[(0, 0)]
    other = {**clip, "frames": clip["frames"][..., :-1], "labels": clip["labels"][..., :-1]}
    with pytest.raises(ValueError, match="share one working size"):
        paste_clip(clip, other, (0, 2, 0, 2))


def test_wrapper_checks_its_arguments_and_passes_attributes_through():
    assert CutMixClips(NumberedClips(), 0.5).label_set == "numbered"
    with pytest.raises(ValueError, match="probability"):
        CutMixClips(NumberedClips(), 1.5)
    with pytest.raises(ValueError, match="alpha"):
        CutMixClips(NumberedClips(), 0.5, alpha=0)


def tiny(root, **data):
    raw = {
        "model": {"name": "vanilla-crnn-small-shallow"},
        "data": {"root": str(root), "size": [16, 32], "num_frames": 3, "batch_size": 2, **data},
        "train": {"steps": 1},
    }
    return config_from_dict(raw)


def test_build_datasets_mixes_clean_clips_then_corrupts_them(dense_tree):
    plain, _ = build_datasets(tiny(dense_tree.root), with_val=False)
    assert not isinstance(plain, CutMixClips | CorruptedClips)
    both, _ = build_datasets(
        tiny(dense_tree.root, mixup={"kind": "cutmix", "prob": 1.0}, corrupt={"rate": 0.5}), with_val=False
    )
    assert isinstance(both, CorruptedClips) and isinstance(both.dataset, CutMixClips)
    samples = SeededSamples(both, seed=3)
    first = samples[0]
    assert torch.equal(first["frames"], samples[0]["frames"])
    assert first["frames"].shape == (3, 3, 16, 32) and first["labels"].shape == (3, 16, 32)


def test_mixup_config_is_checked():
    with pytest.raises(VidsegError, match="data.mixup.kind"):
        tiny("x", mixup={"kind": "mixup"})
    with pytest.raises(VidsegError, match="data.mixup.prob"):
        tiny("x", mixup={"kind": "cutmix", "prob": 2})
    with pytest.raises(VidsegError, match="data.mixup.alpha"):
        tiny("x", mixup={"kind": "cutmix", "alpha": 0})


def test_build_datasets_makes_still_clips_before_corrupting_them(dense_tree):
    both, _ = build_datasets(tiny(dense_tree.root, still={"prob": 1.0}, corrupt={"rate": 0.5}), with_val=False)
    assert isinstance(both, CorruptedClips) and isinstance(both.dataset, StillClips)
    sample = SeededSamples(both, seed=3)[0]
    assert sample["frames"].shape == (3, 3, 16, 32) and sample["labelled"].all() and sample["gt_index"] == 2


@pytest.mark.parametrize(
    ("still", "key"),
    [({"prob": 1.5}, "data.still.prob"), ({"prob": 0.5, "zoom": -0.1}, "data.still.zoom"),
     ({"prob": 0.5, "pan": float("nan")}, "data.still.pan")],
)
def test_still_clip_options_are_checked(still, key):
    with pytest.raises(VidsegError, match=key.replace(".", r"\.")):
        tiny("data/cityscapes", still=still)
