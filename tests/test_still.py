"""Still clips (``data.still``): a labelled frame made into a video by a forward-moving camera, labels moved with
it, deterministic per seed."""

from __future__ import annotations

import pytest
import torch

from vidseg.data.labels import IGNORE_INDEX
from vidseg.data.still import StillClips, camera_grids, still_clip

T, H, W = 4, 24, 40


def ramp() -> tuple[torch.Tensor, torch.Tensor]:
    """A frame whose value is its column index (every channel) and labels of 8-pixel column bands."""
    frame = torch.arange(W, dtype=torch.float32).repeat(3, H, 1)
    labels = (torch.arange(W) // 8).repeat(H, 1)
    return frame, labels


def test_a_pan_shifts_frames_and_labels_by_the_same_whole_pixels_each_frame():
    frame, labels = ramp()
    pan_px = 2  # two pixels a frame: 2 / W of the width, 4 / W in normalised coordinates
    frames, moved = still_clip(frame, labels, camera_grids(T, H, W, 0.0, (0.0, 0.0), (2 * pan_px / W, 0.0)))
    for t in range(T):
        shift = t * pan_px
        # Frame t shows the source columns shift .. W - 1 at columns 0 .. W - 1 - shift ...
        assert torch.allclose(frames[t, :, :, : W - shift], frame[:, :, shift:], atol=1e-4)
        assert torch.equal(moved[t, :, : W - shift], labels[:, shift:])
        # ... and past the source's edge the labels are ignored.
        assert (moved[t, :, W - shift :] == IGNORE_INDEX).all()


def test_a_zoom_magnifies_about_the_focus_frame_after_frame():
    frame, labels = ramp()
    zoom = 0.1
    frames, moved = still_clip(frame, labels, camera_grids(T, H, W, zoom, (0.0, 0.0), (0.0, 0.0)))
    assert torch.equal(frames[0], frame) and torch.equal(moved[0], labels)
    for t in range(1, T):
        # The ramp's slope is 1 / (1 + zoom) ** t: the scene grows, centred on the focus (the frame's centre).
        slope = (frames[t, 0, 5, 25] - frames[t, 0, 5, 15]) / 10
        assert slope == pytest.approx(1 / (1 + zoom) ** t, rel=1e-4)
        assert frames[t, 0, 5, W // 2 - 1 : W // 2 + 1].mean() == pytest.approx((W - 1) / 2, abs=1e-4)
        # Zooming in never looks outside the frame: every pixel keeps a label, the bands widen.
        assert (moved[t] != IGNORE_INDEX).all()
    band = [int((moved[t, 5] == 2).sum()) for t in range(T)]  # the central band, 8 pixels in the source
    assert band[0] == 8 and band == sorted(band) and band[-1] >= 10


class LabelledClips(torch.utils.data.Dataset):
    """Sample i: frame t of the window all 10 * i + t, labels i on every frame, annotated position i % T."""

    label_set = "numbered"

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index):
        i, _ = index if isinstance(index, tuple) else (index, 0)
        frames = (10.0 * i + torch.arange(T, dtype=torch.float32)).reshape(T, 1, 1, 1).expand(T, 3, H, W).clone()
        frames[:, :, :, : W // 2] += 5.0  # a vertical edge, so that a motion changes the frames
        labels = torch.full((T, H, W), i, dtype=torch.int64)
        labels[:, :, : W // 2] = i + 1
        labelled = torch.tensor([t == i % T for t in range(T)])
        labels[~labelled] = IGNORE_INDEX
        return {"frames": frames, "labels": labels, "labelled": labelled,
                "corruption": torch.tensor([i % 3, 0, 0, 0]), "gt_index": i % T, "name": f"clip{i}"}


def test_a_still_clip_is_made_of_the_annotated_frame_labelled_everywhere_and_last():
    dataset = StillClips(LabelledClips(), probability=1.0, zoom=0.05, pan=0.05)
    for i in range(len(dataset)):
        source = LabelledClips()[(i, 7)]
        sample = dataset[(i, 7 + i)]
        gt = i % T
        assert torch.equal(sample["frames"][0], source["frames"][gt])
        assert torch.equal(sample["labels"][0], source["labels"][gt])
        assert sample["labelled"].all() and sample["gt_index"] == T - 1 and (sample["corruption"] == 0).all()
        # Every frame shows only the annotated frame's content (values 10 i + gt, +5 left of the edge) ...
        values = sample["frames"][:, 0]
        assert values.min() >= 10 * i + gt - 1e-4 and values.max() <= 10 * i + gt + 5 + 1e-4
        # ... and its labels, moved: the edge moves between frames, and only the two classes (or ignore) appear.
        assert set(sample["labels"].unique().tolist()) <= {i, i + 1, IGNORE_INDEX}
        assert not torch.equal(sample["labels"][0], sample["labels"][-1])
        assert sample["frames"].shape == source["frames"].shape and sample["labels"].dtype == torch.int64


def test_still_clips_replace_a_seeded_share_of_samples_and_leave_the_rest_untouched():
    wrapped = LabelledClips()
    dataset = StillClips(wrapped, probability=0.5)
    replaced = 0
    for seed in range(40):
        sample, again = dataset[(seed % 6, seed)], dataset[(seed % 6, seed)]
        assert torch.equal(sample["frames"], again["frames"]) and torch.equal(sample["labels"], again["labels"])
        if bool(sample["labelled"].all()):
            replaced += 1
        else:
            original = wrapped[(seed % 6, seed)]
            assert all(torch.equal(sample[key], original[key]) for key in ("frames", "labels", "labelled"))
    assert 10 <= replaced <= 30
    never = StillClips(wrapped, probability=0.0)
    assert not any(bool(never[(i, i)]["labelled"].all()) for i in range(6))
    assert never.label_set == "numbered"
    with pytest.raises(ValueError, match="probability"):
        StillClips(wrapped, 1.5)
    with pytest.raises(ValueError, match="zoom and pan"):
        StillClips(wrapped, 0.5, zoom=-0.1)
