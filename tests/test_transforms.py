import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidseg.data.transforms import (
    MEAN,
    STD,
    ClipTransform,
    denormalize,
    normalize,
    resize_frames,
    resize_labels,
)


def make_clip(num_frames: int, height: int, width: int, seed: int = 0):
    """Frames that share G and B (a random picture) and differ in R (the frame index); labels shared."""
    rng = np.random.default_rng(seed)
    picture = torch.from_numpy(rng.integers(0, 256, (2, height, width), dtype=np.uint8))
    frames = torch.empty(num_frames, 3, height, width, dtype=torch.uint8)
    frames[:, 0] = (torch.arange(num_frames, dtype=torch.uint8) * 40 + 10)[:, None, None]
    frames[:, 1:] = picture
    labels = torch.from_numpy(rng.integers(0, 19, (height, width), dtype=np.uint8)).expand(num_frames, -1, -1)
    return frames, labels.clone()


def test_normalize_matches_the_formula_and_denormalize_inverts_it_exactly():
    values = torch.arange(256, dtype=torch.uint8)
    frames = torch.stack([values, values.flip(0), values]).view(3, 16, 16)
    normalised = normalize(frames)
    assert normalised.dtype == torch.float32 and normalised.is_contiguous()
    expected = (frames.double() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(normalised.double(), expected, rtol=0, atol=1e-5)
    assert torch.equal(denormalize(normalised), frames)
    assert torch.equal(normalize(frames.numpy()), normalised)
    with pytest.raises(TypeError):
        normalize(frames.float())


def test_resize_labels_is_centre_aligned_nearest():
    labels = torch.arange(64, dtype=torch.uint8).view(1, 8, 8)
    np.testing.assert_array_equal(resize_labels(labels, (4, 4))[0].numpy(), labels[0, 1::2, 1::2].numpy())
    up = resize_labels(labels, (16, 16))[0]
    assert torch.equal(up, labels[0].repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_resize_frames_keeps_constant_images_constant_and_is_a_no_op_at_the_same_size():
    frames = torch.full((2, 3, 10, 20), 77, dtype=torch.uint8)
    assert (resize_frames(frames, (7, 13)) == 77).all()
    assert (resize_frames(frames, (25, 41)) == 77).all()
    assert resize_frames(frames, (10, 20)) is frames


def test_evaluation_transform_only_resizes():
    frames, labels = make_clip(2, 12, 20)
    out_frames, out_labels = ClipTransform(size=(6, 10))(frames, labels)
    assert torch.equal(out_frames, resize_frames(frames, (6, 10)))
    assert torch.equal(out_labels, resize_labels(labels, (6, 10)))
    same_frames, same_labels = ClipTransform(size=(12, 20))(frames, labels)
    assert torch.equal(same_frames, frames) and torch.equal(same_labels, labels)


@settings(max_examples=40, deadline=None)
@given(
    num_frames=st.integers(1, 3),
    height=st.integers(4, 24),
    width=st.integers(4, 24),
    out_height=st.integers(3, 20),
    out_width=st.integers(3, 20),
    scale=st.tuples(st.floats(0.4, 1.0), st.floats(1.0, 2.0)),
    hflip=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_one_random_draw_is_shared_by_every_frame_and_label(
    num_frames, height, width, out_height, out_width, scale, hflip, seed
):
    frames, labels = make_clip(num_frames, height, width, seed)
    transform = ClipTransform(size=(out_height, out_width), scale_range=scale, crop=True, hflip=hflip)
    out_frames, out_labels = transform(frames, labels, torch.Generator().manual_seed(seed))
    assert out_frames.shape == (num_frames, 3, out_height, out_width) and out_frames.dtype == torch.uint8
    assert out_labels.shape == (num_frames, out_height, out_width)
    for t in range(1, num_frames):
        assert torch.equal(out_frames[t, 1:], out_frames[0, 1:]), "G and B must get the same geometry"
        assert torch.equal(out_labels[t], out_labels[0])
    values = set(out_labels.unique().tolist())
    assert values <= set(labels.unique().tolist()) | {255}
    # Padding is exactly where the picture is absent: 255 in labels, 0 in every image channel.
    padding = out_labels[0] == 255
    assert (out_frames[:, :, padding] == 0).all()
    again = transform(frames, labels, torch.Generator().manual_seed(seed))
    assert torch.equal(again[0], out_frames) and torch.equal(again[1], out_labels)


@settings(max_examples=30, deadline=None)
@given(
    crop_height=st.integers(1, 6),
    crop_width=st.integers(1, 6),
    factor=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_crop_cuts_an_exact_window_flipped_or_not(crop_height, crop_width, factor, seed):
    # Scaling the working size by `factor` gives exactly the source size: no resampling, only crop and flip.
    height, width = crop_height * factor, crop_width * factor
    frames = torch.arange(height * width, dtype=torch.int64).view(1, 1, height, width).expand(1, 3, -1, -1) % 256
    frames = frames.to(torch.uint8)
    labels = (torch.arange(height * width).view(1, height, width) % 19).to(torch.uint8)
    source = torch.arange(height * width).view(height, width)
    transform = ClipTransform(size=(crop_height, crop_width), scale_range=(factor, factor), crop=True, hflip=True)
    out_frames, out_labels = transform(frames, labels, torch.Generator().manual_seed(seed))
    matches = []
    for top in range(height - crop_height + 1):
        for left in range(width - crop_width + 1):
            window = source[top : top + crop_height, left : left + crop_width]
            for flipped in (False, True):
                expected = window.flip(-1) if flipped else window
                if torch.equal(out_labels[0].long(), expected % 19) and torch.equal(
                    out_frames[0, 0].long(), expected % 256
                ):
                    matches.append((top, left, flipped))
    assert matches, "the output is not a (flipped) window of the input"


def test_crop_size_cuts_a_smaller_window_of_the_clip_at_the_working_size():
    # Labels of a 2x source whose 2x2 blocks are constant: the nearest resize to `size` is exactly `cells`.
    size, window = (6, 8), (3, 5)
    cells = torch.arange(size[0] * size[1]).view(size)
    labels = cells.repeat_interleave(2, 0).repeat_interleave(2, 1)[None].clone()
    frames = torch.zeros(1, 3, 2 * size[0], 2 * size[1], dtype=torch.uint8)
    transform = ClipTransform(size=size, crop=True, crop_size=window)
    places = set()
    for seed in range(200):
        _, out_labels = transform(frames, labels.to(torch.uint8), torch.Generator().manual_seed(seed))
        assert out_labels.shape == (1, *window)
        top, left = divmod(int(out_labels[0, 0, 0]), size[1])
        assert torch.equal(out_labels[0].long(), cells[top : top + window[0], left : left + window[1]])
        places.add((top, left))
    # Every place of the window inside the working-size clip is drawn (4 x 4 of them), never one outside.
    assert places == {(top, left) for top in range(4) for left in range(4)}
    with pytest.raises(ValueError, match="crop_size needs crop"):
        ClipTransform(size=size, crop_size=window)


def test_scale_below_one_pads_with_ignore_and_black():
    frames = torch.full((2, 3, 8, 16), 200, dtype=torch.uint8)
    labels = torch.full((2, 8, 16), 3, dtype=torch.uint8)
    transform = ClipTransform(size=(8, 16), scale_range=(0.5, 0.5), crop=True)
    out_frames, out_labels = transform(frames, labels, torch.Generator().manual_seed(1))
    assert int((out_labels[0] == 3).sum()) == 4 * 8, "the scaled clip is 4x8 inside an 8x16 window"
    assert int((out_labels[0] == 255).sum()) == 8 * 16 - 4 * 8
    assert ((out_frames[0, 0] == 200) == (out_labels[0] == 3)).all()


def test_flip_happens_about_half_the_time_and_scales_stay_in_range():
    frames, labels = make_clip(1, 4, 8)
    transform = ClipTransform(size=(4, 8), hflip=True)
    generator = torch.Generator().manual_seed(0)
    flips = sum(bool(torch.equal(transform(frames, labels, generator)[1], labels.flip(-1))) for _ in range(200))
    assert 70 < flips < 130


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="crop=True"):
        ClipTransform(size=(4, 4), scale_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="needs a size"):
        ClipTransform(crop=True)
    with pytest.raises(ValueError, match="0 < low <= high"):
        ClipTransform(size=(4, 4), scale_range=(2.0, 1.0), crop=True)
