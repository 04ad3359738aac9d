import numpy as np
import pytest

from vidseg.data.labels import (
    IGNORE_INDEX,
    LABELS,
    PALETTE,
    colorize,
    get_label_set,
    train_id_to_label_id,
)


def test_table_has_the_35_official_entries_and_19_train_classes():
    assert len(LABELS) == 35
    assert [l.id for l in LABELS[:-1]] == list(range(34))
    train = sorted((l.train_id, l.name) for l in LABELS if l.train_id != IGNORE_INDEX)
    assert [t for t, _ in train] == list(range(19))
    assert [n for _, n in train][:3] == ["road", "sidewalk", "building"]
    assert [n for _, n in train][-3:] == ["train", "motorcycle", "bicycle"]
    assert PALETTE.shape == (19, 3) and tuple(PALETTE[0]) == (128, 64, 128) and tuple(PALETTE[13]) == (0, 0, 142)


def test_cityscapes_set_maps_train_ids_and_ignores_the_rest():
    cityscapes = get_label_set("cityscapes")
    assert cityscapes.num_classes == 19 and len(cityscapes.class_names) == 19
    ids = np.arange(256, dtype=np.uint8)
    mapped = cityscapes.map_label_ids(ids)
    expected = np.full(256, 255)
    for label in LABELS:
        if label.id >= 0 and label.train_id != 255:
            expected[label.id] = label.train_id
    np.testing.assert_array_equal(mapped, expected)
    assert mapped[7] == 0 and mapped[26] == 13 and mapped[0] == 255 and mapped[9] == 255 and mapped[34] == 255


def test_report_set_trains_every_non_class_label_as_void():
    report = get_label_set("report")
    assert report.num_classes == 20 and report.class_names[19] == "void"
    mapped = report.map_label_ids(np.arange(256, dtype=np.uint8))
    void_ids = [l.id for l in LABELS if l.id >= 0 and l.train_id == 255]
    assert set(void_ids) == {0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30}
    assert (mapped[void_ids] == 19).all()
    assert mapped[7] == 0 and mapped[33] == 18
    assert (mapped[34:] == 255).all(), "ids outside the table stay ignored, also in the report set"
    assert report.palette.shape == (20, 3)


def test_map_label_ids_accepts_wide_integers_and_treats_out_of_range_as_unknown():
    cityscapes = get_label_set("cityscapes")
    ids = np.array([[7, 300], [-1, 26]], dtype=np.int32)
    np.testing.assert_array_equal(cityscapes.map_label_ids(ids), [[0, 255], [255, 13]])


def test_train_id_to_label_id_round_trips_and_sends_void_and_ignore_to_unlabeled():
    cityscapes = get_label_set("cityscapes")
    train_ids = np.array([[0, 1, 18], [19, 255, 13]])
    label_ids = train_id_to_label_id(train_ids)
    np.testing.assert_array_equal(label_ids, [[7, 8, 33], [0, 0, 26]])
    np.testing.assert_array_equal(cityscapes.map_label_ids(label_ids)[0], [0, 1, 18])


def test_colorize_uses_the_palette_and_black_for_ignore():
    image = colorize(np.array([[0, 255], [19, 13]]), "report")
    assert image.shape == (2, 2, 3)
    assert tuple(image[0, 0]) == (128, 64, 128) and tuple(image[0, 1]) == (0, 0, 0)
    assert tuple(image[1, 1]) == (0, 0, 142)


def test_unknown_label_set_lists_the_valid_ones():
    with pytest.raises(ValueError, match="cityscapes, report"):
        get_label_set("ade20k")
