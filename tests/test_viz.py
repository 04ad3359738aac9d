"""Overlays blend the palette exactly as specified; layouts place every image where they say."""

import numpy as np
import pytest

from vidseg.data.labels import get_label_set
from vidseg.viz import add_caption, colorize, frame_strip, legend, overlay, side_by_side

CITYSCAPES = get_label_set("cityscapes")
REPORT = get_label_set("report")


def random_case(seed: int, num_classes: int, height: int = 9, width: int = 13):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, (height, width)).astype(np.uint8)
    labels[0, :4] = 255
    return frame, labels


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_blends_palette_colours_and_keeps_ignored_pixels(alpha):
    frame, labels = random_case(0, 19)
    out = overlay(frame, labels, "cityscapes", alpha)
    colours = np.zeros((256, 3))
    colours[:19] = CITYSCAPES.palette
    expected = (1 - alpha) * frame + alpha * colours[labels]
    expected[labels == 255] = frame[labels == 255]
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert np.abs(out.astype(float) - expected).max() <= 1.0
    if alpha in (0.0, 1.0):
        np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_overlay_leaves_the_report_void_class_transparent():
    frame, labels = random_case(1, 20)
    out = overlay(frame, labels, REPORT, alpha=1.0)
    void = labels == 19
    assert void.any()
    np.testing.assert_array_equal(out[void], frame[void])
    np.testing.assert_array_equal(out[labels == 3], np.broadcast_to(REPORT.palette[3], out[labels == 3].shape))


def test_colorize_and_overlay_reject_mismatched_inputs():
    frame, labels = random_case(2, 19)
    assert colorize(labels, CITYSCAPES)[labels == 255].max() == 0
    with pytest.raises(ValueError, match="alpha"):
        overlay(frame, labels, alpha=1.5)
    with pytest.raises(ValueError, match="must be"):
        overlay(frame, labels[:-1])


def test_side_by_side_places_images_left_to_right_with_a_gap():
    left = np.full((4, 3, 3), 10, np.uint8)
    right = np.full((4, 5), 200, np.uint8)
    out = side_by_side([left, right], gap=2, fill=255)
    assert out.shape == (4, 10, 3)
    assert (out[:, :3] == 10).all() and (out[:, 3:5] == 255).all() and (out[:, 5:] == 200).all()
    assert side_by_side([left, left]).shape == (4, 6, 3)
    with pytest.raises(ValueError, match="one height"):
        side_by_side([left, np.zeros((5, 3, 3), np.uint8)])


def test_frame_strip_stacks_rows_and_pads_short_ones():
    a = np.full((2, 3, 3), 1, np.uint8)
    b = np.full((3, 2, 3), 2, np.uint8)
    out = frame_strip([[a, a], [b]], gap=1, fill=9)
    assert out.shape == (2 + 1 + 3, 7, 3)
    assert (out[:2, :3] == 1).all() and (out[:2, 4:] == 1).all() and (out[:2, 3] == 9).all()
    assert (out[2] == 9).all()
    assert (out[3:, :2] == 2).all() and (out[3:, 2:] == 9).all()


def test_caption_sits_above_the_untouched_image():
    image = np.full((10, 80, 3), 50, np.uint8)
    out = add_caption(image, "prediction", bar_height=16)
    assert out.shape == (26, 80, 3)
    np.testing.assert_array_equal(out[16:], image)
    assert out[:16].min() < 128 and out[:16].max() == 255  # dark text on the white bar


def test_legend_shows_every_class_colour_in_order():
    image = legend(REPORT, swatch=10, width=120)
    assert image.shape == (20 * 14 + 4, 120, 3)
    for index, colour in enumerate(REPORT.palette):
        top = 4 + index * 14
        np.testing.assert_array_equal(image[top + 5, 9], colour)
