"""Corrupted frames: one implementation shared with SynthCity, a per-frame transform that is deterministic per
frame name and seed, the CorruptedClips wrapper, and the data.corrupt config."""

import numpy as np
import pytest
import torch

from vidseg.config import config_from_dict
from vidseg.data import corrupt, synthcity
from vidseg.data.corrupt import CORRUPTIONS, KINDS, CorruptedClips, Corruption, corrupt_image
from vidseg.data.transforms import denormalize, normalize
from vidseg.errors import VidsegError


def textured_frame(seed: int = 0, size=(24, 40)) -> torch.Tensor:
    """A uint8 [3, H, W] frame with mid-range values, so that every corruption changes it visibly."""
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 200, size=(3, *size), dtype=np.uint8)
    return torch.from_numpy(image)


def test_synthcity_renders_its_corruptions_with_the_shared_function(monkeypatch):
    calls = []

    def recording(rng, image, kind, step=0):
        calls.append(kind)
        return corrupt_image(rng, image, kind, step)

    monkeypatch.setattr(synthcity, "corrupt_image", recording)
    images, _, codes = synthcity.render_sequence(synthcity.sequence_seed(0, "train", 0), 24, (24, 48))
    assert calls == [CORRUPTIONS[code] for code in codes if code != 0]
    assert len(calls) > 0, "a 24-frame sequence at these rates has corrupted frames"
    assert synthcity.CORRUPTIONS is corrupt.CORRUPTIONS


def test_a_frame_gets_the_same_corruption_whatever_the_order_and_the_seed_changes_it():
    corruption = Corruption(rate=0.5, seed=7)
    names = [f"0016E5_{number:06d}" for number in range(7959, 8160, 2)]
    frame = textured_frame()
    forward = [corruption.apply(frame, key=name) for name in names]
    backward = [corruption.apply(frame, key=name) for name in reversed(names)][::-1]
    for (a, code_a), (b, code_b) in zip(forward, backward):
        assert code_a == code_b and torch.equal(a, b)
    codes = [code for _, code in forward]
    assert 0 in codes and len(set(codes)) > 3, "some frames clean, several kinds"
    for image, code in forward:
        changed = not torch.equal(image, frame)
        assert changed == (code != 0), "a frame is changed exactly when its code says so"
    other_seed = [Corruption(rate=0.5, seed=8).draw(name)[0] for name in names]
    assert other_seed != codes


def test_rate_and_kinds_are_what_was_asked_for():
    names = [f"frame_{i:05d}" for i in range(4000)]
    codes = np.array([Corruption(rate=0.3, seed=1).draw(name)[0] for name in names])
    assert 0.27 < (codes > 0).mean() < 0.33
    shares = np.bincount(codes[codes > 0], minlength=len(CORRUPTIONS))[1:] / (codes > 0).sum()
    assert np.allclose(shares, 1 / len(KINDS), atol=0.03), "kinds are equally likely"
    assert {Corruption(rate=0.0).draw(name)[0] for name in names[:200]} == {0}
    only = Corruption(rate=1.0, kinds=("dark", "blur"))
    assert {CORRUPTIONS[only.draw(name)[0]] for name in names[:200]} == {"dark", "blur"}
    dark, code = Corruption(rate=1.0, kinds=("dark",)).apply(textured_frame(), key="x")
    assert CORRUPTIONS[code] == "dark" and int(dark.max()) <= 3
    for bad in (dict(rate=1.5), dict(rate=0.3, kinds=("fog",)), dict(rate=0.3, kinds=())):
        with pytest.raises(ValueError):
            Corruption(**bad)


class Windows(torch.utils.data.Dataset):
    """Three 4-frame windows of textured frames; frame 1 of each window is already corrupted (code 2)."""

    def __len__(self):
        return 3

    def __getitem__(self, index):
        if isinstance(index, tuple):
            index = index[0]
        frames = torch.stack([textured_frame(10 * index + t) for t in range(4)])
        return {
            "frames": normalize(frames),
            "labels": torch.full((4, 24, 40), index, dtype=torch.int64),
            "labelled": torch.ones(4, dtype=torch.bool),
            "corruption": torch.tensor([0, 2, 0, 0]),
            "gt_index": 3,
            "name": f"seq_{index:06d}",
        }


def test_corrupted_clips_evaluation_is_deterministic_and_keeps_labels_and_given_codes():
    clean = Windows()
    dataset = CorruptedClips(clean, Corruption(rate=0.6, seed=3), deterministic=True)
    first = [dataset[i] for i in range(3)]
    again = [dataset[i] for i in reversed(range(3))][::-1]
    codes = torch.stack([sample["corruption"] for sample in first])
    assert (codes[:, 1] == 2).all(), "frames the data already marks as corrupted are left as they are"
    assert (codes[:, [0, 2, 3]] > 0).any() and (codes[:, [0, 2, 3]] == 0).any()
    for i, (sample, repeat) in enumerate(zip(first, again)):
        assert torch.equal(sample["frames"], repeat["frames"])
        assert torch.equal(sample["corruption"], repeat["corruption"])
        original = clean[i]
        assert torch.equal(sample["labels"], original["labels"])
        for t in range(4):
            same = torch.equal(denormalize(sample["frames"][t]), denormalize(original["frames"][t]))
            assert same == (t == 1 or int(sample["corruption"][t]) == 0)
    # The annotated frame is keyed by its own name, as stream evaluation keys it.
    expected_code = Corruption(rate=0.6, seed=3).draw("seq_000000")[0]
    assert int(first[0]["corruption"][3]) == expected_code


def test_corrupted_clips_training_draws_follow_the_sample_seed():
    dataset = CorruptedClips(Windows(), Corruption(rate=0.6, seed=3), deterministic=False)
    draws = [dataset[(0, seed)]["corruption"].tolist() for seed in range(12)]
    assert dataset[(0, 5)]["corruption"].tolist() == draws[5]
    assert len({tuple(d) for d in draws}) > 3


def test_data_corrupt_config_is_checked():
    base = {"train": {"steps": 1}}
    config = config_from_dict(base, overrides=["data.corrupt.rate=0.25", "data.corrupt.kinds=[dark,blur]"])
    assert config.data.corrupt.rate == 0.25 and config.data.corrupt.kinds == ["dark", "blur"]
    assert config_from_dict(base).data.corrupt.rate == 0.0, "off by default"
    with pytest.raises(VidsegError, match="data.corrupt.rate"):
        config_from_dict(base, overrides=["data.corrupt.rate=2"])
    with pytest.raises(VidsegError, match="data.corrupt.kinds"):
        config_from_dict(base, overrides=["data.corrupt.kinds=[fog]"])
    with pytest.raises(VidsegError, match="data.corrupt.kinds"):
        config_from_dict(base, overrides=["data.corrupt.kinds=[dark,dark]"])
