"""Flow-based temporal consistency and VSPW video consistency on small synthetic clips."""

import math

import cv2
import numpy as np
import pytest
import torch

from vidseg.consistency import (
    TemporalConsistency,
    VideoConsistency,
    label_map_iou,
    occlusion_mask,
    video_consistency_runs,
    warp_labels,
)

HEIGHT, WIDTH, NUM_FRAMES, SHIFT = 32, 64, 5, 2


def textured_canvas(width: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture that optical flow can follow."""
    rng = np.random.default_rng(seed)
    noise = (rng.random((HEIGHT, width)) * 255).astype(np.float32)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 1.5), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def stripes(width: int) -> np.ndarray:
    """Vertical bands of 4 classes, 7 px wide."""
    return np.tile((np.arange(width) // 7) % 4, (HEIGHT, 1))


def panning_clip():
    """Frames and matching label maps of a camera panning SHIFT px per frame over a wide scene."""
    wide = WIDTH + NUM_FRAMES * SHIFT
    canvas, labels = textured_canvas(wide), stripes(wide)
    frames = np.stack([canvas[:, t * SHIFT : t * SHIFT + WIDTH] for t in range(NUM_FRAMES)])
    preds = np.stack([labels[:, t * SHIFT : t * SHIFT + WIDTH] for t in range(NUM_FRAMES)])
    return frames, preds


def tc_of(frames, preds, num_classes=4) -> float:
    meter = TemporalConsistency(num_classes)
    meter.update(frames, preds)
    assert meter.pairs == len(frames) - 1
    return meter.compute()


def test_static_scene_predicted_identically_has_tc_one():
    frame = textured_canvas(WIDTH)
    pred = stripes(WIDTH)
    assert tc_of(np.stack([frame] * NUM_FRAMES), np.stack([pred] * NUM_FRAMES)) == 1.0


def test_flickering_predictions_lower_tc():
    rng = np.random.default_rng(1)
    frames = np.stack([textured_canvas(WIDTH)] * NUM_FRAMES)
    steady = stripes(WIDTH)
    flicker = np.stack(
        [steady if t % 2 == 0 else rng.integers(0, 4, steady.shape) for t in range(NUM_FRAMES)]
    )
    one_bad_frame = np.stack([steady] * NUM_FRAMES)
    one_bad_frame[2] = rng.integers(0, 4, steady.shape)
    # Random maps share ~1/7 IoU with the bands; one bad frame spoils 2 of the 4 pairs.
    assert tc_of(frames, flicker) < 0.3
    assert tc_of(frames, flicker) < tc_of(frames, one_bad_frame) < 0.65


def test_translating_scene_with_translating_prediction_stays_near_one():
    frames, preds = panning_clip()
    assert tc_of(frames, preds) > 0.95
    # The same scene with a prediction that ignores the motion is clearly less consistent.
    frozen = np.stack([preds[0]] * NUM_FRAMES)
    assert tc_of(frames, frozen) < 0.8


def test_warp_labels_follows_integer_flow_and_marks_pixels_leaving_the_image():
    labels = np.arange(12).reshape(3, 4)
    flow = np.zeros((3, 4, 2), np.float32)
    flow[..., 0] = 1  # every pixel moves one column right
    warped, inside = warp_labels(labels, flow)
    assert np.array_equal(warped[:, :3], labels[:, 1:])
    assert np.array_equal(inside, np.tile([True, True, True, False], (3, 1)))


def test_occlusion_check_accepts_inverse_flows_and_rejects_inconsistent_ones():
    forward = np.zeros((8, 8, 2), np.float32)
    forward[..., 0] = 2
    assert not occlusion_mask(forward, -forward).any()
    assert occlusion_mask(forward, np.zeros_like(forward)).all()  # |2|^2 = 4 > 0.01 * 4 + 0.5


def test_label_map_iou_by_hand():
    first = np.array([0, 0, 1, 1, 2])
    second = np.array([0, 1, 1, 1, 2])
    # class 0: 1/2, class 1: 2/3, class 2: 1, class 3 absent from both
    assert label_map_iou(first, second, 4) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)


def test_video_consistency_by_hand():
    ignore = 255
    # 3 frames of 1 x 5 pixels; runs of 2 frames: (0, 1) and (1, 2).
    labels = torch.tensor([[[1, 1, 2, 3, ignore]], [[1, 1, 2, 4, ignore]], [[1, 2, 2, 4, ignore]]])
    preds = torch.tensor([[[1, 0, 2, 3, 0]], [[1, 0, 2, 4, 0]], [[1, 0, 2, 4, 0]]])
    # run (0, 1): gt constant at pixels 0, 1, 2 (3 changes, 4 is ignored); predicted as that class at 0 and 2.
    # run (1, 2): gt constant at pixels 0, 2, 3; predicted as that class at all three.
    assert video_consistency_runs(labels, preds, 2) == pytest.approx([2 / 3, 1.0])
    # The VSPW script only asks predictions to be constant: pixel 1 (constantly wrong) then counts too.
    assert video_consistency_runs(labels, preds, 2, require_correct=False) == pytest.approx([1.0, 1.0])
    # One run of all 3 frames: gt constant at 0 and 2, both predicted right.
    assert video_consistency_runs(labels, preds, 3) == [1.0]
    assert video_consistency_runs(labels, preds, 4) == []


def test_mean_video_consistency_over_clips_and_undefined_when_clips_are_too_short():
    labels = torch.zeros(4, 2, 2, dtype=torch.int64)
    preds = labels.clone()
    preds[3, 0, 0] = 1  # the last frame is wrong at one of 4 pixels
    meter = VideoConsistency(run_lengths=(2, 3, 8))
    meter.update(labels, preds)
    meter.update(labels, labels)
    meter.all_reduce()
    result = meter.compute()
    # runs of 2: first clip 1, 1, 3/4; second clip 1, 1, 1 -> mean over 6 runs
    assert result[2] == pytest.approx((5 + 3 / 4) / 6)
    assert result[3] == pytest.approx((3 + 3 / 4) / 4)
    assert math.isnan(result[8])
    assert meter.runs() == {2: 6, 3: 4, 8: 0}
