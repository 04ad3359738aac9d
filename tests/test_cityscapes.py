import json
import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.data import CityscapesSequences, ClipTransform, get_label_set, read_image, read_label_ids
from vidseg.data.cityscapes import frame_name
from vidseg.data.testing import make_cityscapes_tree
from vidseg.errors import VidsegError

CITYSCAPES = get_label_set("cityscapes")


def split_name(name: str) -> tuple[str, int, int]:
    city, seq, frame = name.rsplit("_", 2)
    return city, int(seq), int(frame)


def expected_window(name: str, gt_index: int, num_frames: int, stride: int = 1) -> list[str]:
    city, seq, frame = split_name(name)
    return [frame_name(city, seq, frame + (i - gt_index) * stride) for i in range(num_frames)]


def test_last_position_returns_exactly_the_frames_before_the_annotated_one(cityscapes_tree):
    dataset = CityscapesSequences(cityscapes_tree.root, "train", num_frames=5, gt_position="last")
    assert len(dataset) == 6
    assert dataset.names == cityscapes_tree.annotated["train"]
    assert "bochum_000000_000313" in dataset.names
    for index in range(len(dataset)):
        sample = dataset[index]
        name = sample["name"]
        assert sample["gt_index"] == 4
        assert [cityscapes_tree.identify(f) for f in sample["frames"]] == expected_window(name, 4, 5)
        assert sample["labelled"].tolist() == [False] * 4 + [True]
        assert (sample["labels"][:4] == 255).all()
        expected = CITYSCAPES.map_label_ids(cityscapes_tree.label_ids[("train", name)])
        np.testing.assert_array_equal(sample["labels"][4].numpy(), expected)
        assert sample["frames"].dtype == torch.float32 and sample["labels"].dtype == torch.int64
        assert sample["frames"].shape == (5, 3, 32, 64) and (sample["corruption"] == 0).all()


def test_first_frame_of_bochum_snippet_313_is_294(cityscapes_tree):
    dataset = CityscapesSequences(cityscapes_tree.root, "val", num_frames=30, gt_position=19)
    sample = dataset[dataset.names.index("bochum_000000_000313")]
    identities = [cityscapes_tree.identify(f) for f in sample["frames"]]
    assert identities[0] == "bochum_000000_000294" and identities[-1] == "bochum_000000_000323"


def test_random_position_uses_every_position_that_fits_and_always_the_right_frames(cityscapes_tree):
    dataset = CityscapesSequences(cityscapes_tree.root, "train", num_frames=12, gt_position="random")
    generator = torch.Generator().manual_seed(0)
    # 12 frames with the annotated one first would need 11 frames after it; a snippet has 10.
    assert {dataset.window(0, generator)[1] for _ in range(300)} == set(range(1, 12))
    for index in range(len(dataset)):
        sample = dataset.sample(index, generator)
        gt_index = sample["gt_index"]
        assert [cityscapes_tree.identify(f) for f in sample["frames"]] == expected_window(sample["name"], gt_index, 12)
        assert sample["labelled"].tolist() == [i == gt_index for i in range(12)]
        assert (sample["labels"][gt_index] != 255).any()


def test_fixed_position_and_stride(cityscapes_tree):
    dataset = CityscapesSequences(cityscapes_tree.root, "train", num_frames=4, gt_position=2, frame_stride=3)
    sample = dataset[0]
    assert sample["gt_index"] == 2
    assert [cityscapes_tree.identify(f) for f in sample["frames"]] == expected_window(sample["name"], 2, 4, 3)
    negative = CityscapesSequences(cityscapes_tree.root, "train", num_frames=4, gt_position=-2, frame_stride=3)
    assert negative[0]["gt_index"] == 2


def test_random_stride_range_draws_each_stride(cityscapes_tree):
    dataset = CityscapesSequences(cityscapes_tree.root, "train", num_frames=3, gt_position="last", frame_stride=(1, 3))
    generator = torch.Generator().manual_seed(3)
    strides = set()
    for _ in range(30):
        sample = dataset.sample(1, generator)
        frames = [split_name(cityscapes_tree.identify(f))[2] for f in sample["frames"]]
        stride = frames[1] - frames[0]
        assert frames == [frames[0], frames[0] + stride, frames[0] + 2 * stride]
        assert frames[-1] == split_name(sample["name"])[2]
        strides.add(stride)
    assert strides == {1, 2, 3}


def test_seeded_indices_are_reproducible(cityscapes_tree):
    transform = ClipTransform(size=(16, 32), scale_range=(0.75, 1.5), crop=True, hflip=True)
    dataset = CityscapesSequences(cityscapes_tree.root, "train", num_frames=5, transform=transform)
    first, again = dataset[(2, 1234)], dataset[(2, 1234)]
    assert torch.equal(first["frames"], again["frames"]) and torch.equal(first["labels"], again["labels"])
    others = [dataset[(2, seed)] for seed in range(6)]
    assert any(not torch.equal(o["frames"], first["frames"]) for o in others)


def test_per_frame_mode_and_plain_leftimg8bit(tmp_path):
    tree = make_cityscapes_tree(tmp_path, cities=("ulm",), sequence_images=False, plain_images=True)
    dataset = CityscapesSequences(tree.root, "train", num_frames=1)
    sample = dataset[0]
    assert sample["gt_index"] == 0 and sample["labelled"].tolist() == [True]
    assert tree.identify(sample["frames"][0]) == sample["name"] == "ulm_000000_000313"
    with pytest.raises(VidsegError, match="leftImg8bit_sequence"):
        CityscapesSequences(tree.root, "train", num_frames=2)


def test_transform_shares_one_crop_and_flip_across_frames_and_labels(cityscapes_tree):
    transform = ClipTransform(size=(16, 32), scale_range=(2.0, 2.0), crop=True, hflip=True)
    dataset = CityscapesSequences(cityscapes_tree.root, "train", num_frames=4, transform=transform)
    generator = torch.Generator().manual_seed(5)
    flipped_seen = set()
    for _ in range(8):
        sample = dataset.sample(3, generator)
        columns = [cityscapes_tree.column_of(f) for f in sample["frames"]]
        for other in columns[1:]:
            np.testing.assert_array_equal(other, columns[0])
        flipped_seen.add(bool(columns[0][0, 0] > columns[0][0, -1]))
        # The labels carry the same geometry: the label at each pixel is the source label of its column.
        source = CITYSCAPES.map_label_ids(cityscapes_tree.label_ids[("train", sample["name"])])
        labels = sample["labels"][sample["gt_index"]].numpy()
        candidates = [
            source[top : top + 16, columns[0][0]] for top in range(source.shape[0] - 16 + 1)
        ]
        assert any(np.array_equal(labels, c) for c in candidates)
    assert flipped_seen == {True, False}


def test_window_that_cannot_fit_says_what_would(cityscapes_tree):
    with pytest.raises(ValueError, match=r"gt_position 1\.\.11"):
        CityscapesSequences(cityscapes_tree.root, "train", num_frames=12, gt_position=0)
    with pytest.raises(ValueError, match="at most 30 frames fit"):
        CityscapesSequences(cityscapes_tree.root, "train", num_frames=31)
    with pytest.raises(ValueError, match="at frame_stride 3 at most 10 frames fit"):
        CityscapesSequences(cityscapes_tree.root, "train", num_frames=11, frame_stride=(1, 3))
    with pytest.raises(ValueError, match="outside a 5-frame window"):
        CityscapesSequences(cityscapes_tree.root, "train", num_frames=5, gt_position=5)


def test_missing_snippet_frame_is_named_or_skipped(tmp_path, caplog):
    tree = make_cityscapes_tree(tmp_path, decoys=False)
    missing = tree.root / "leftImg8bit_sequence/train/bochum/bochum_000000_000311_leftImg8bit.png"
    missing.unlink()
    # A frame that no window can touch does not matter: the last 3 frames before 313 are 311..313.
    CityscapesSequences(tree.root, "train", num_frames=2, gt_position="last")
    with pytest.raises(VidsegError) as error:
        CityscapesSequences(tree.root, "train", num_frames=3, gt_position="last")
    assert str(missing) in str(error.value) and "bochum_000000_000313" in str(error.value)
    with caplog.at_level(logging.WARNING):
        dataset = CityscapesSequences(tree.root, "train", num_frames=3, gt_position="last", skip_missing=True)
    assert len(dataset) == 2 and dataset.skipped == 1 and dataset.skipped_names == ["bochum_000000_000313"]
    assert "skipped 1 of 3" in caplog.text


def test_absent_and_empty_splits_list_what_exists(cityscapes_tree, tmp_path):
    with pytest.raises(VidsegError, match="splits present: train, val"):
        CityscapesSequences(cityscapes_tree.root, "test", num_frames=1)
    with pytest.raises(VidsegError, match="has no gtFine"):
        CityscapesSequences(tmp_path, "train", num_frames=1)
    with pytest.raises(VidsegError, match="does not exist"):
        CityscapesSequences(tmp_path / "nowhere", "train", num_frames=1)
    tree = make_cityscapes_tree(tmp_path / "t", cities=("ulm",))
    for path in (tree.root / "gtFine/train/ulm").glob("*_labelIds.png"):
        path.unlink()
    with pytest.raises(VidsegError, match=r"split 'train' is empty.*cities: ulm"):
        CityscapesSequences(tree.root, "train", num_frames=1)


def test_truncated_png_and_size_mismatch_name_the_file(tmp_path):
    tree = make_cityscapes_tree(tmp_path, cities=("ulm",))
    image = tree.root / "leftImg8bit_sequence/train/ulm/ulm_000000_000312_leftImg8bit.png"
    image.write_bytes(image.read_bytes()[:60])
    dataset = CityscapesSequences(tree.root, "train", num_frames=2, gt_position="last")
    with pytest.raises(VidsegError, match=f"cannot decode {image}"):
        dataset[0]
    label = tree.root / "gtFine/train/ulm/ulm_000000_000313_gtFine_labelIds.png"
    Image.fromarray(np.zeros((16, 64), dtype=np.uint8)).save(label)
    dataset = CityscapesSequences(tree.root, "train", num_frames=1)
    with pytest.raises(VidsegError, match=r"label .*ulm_000000_000313_gtFine_labelIds.png is 64x16 .* is 64x32"):
        dataset[0]


def test_unknown_label_ids_are_ignored_and_reported_once(tmp_path, caplog):
    tree = make_cityscapes_tree(tmp_path, cities=("ulm", "bonn"))
    for city in ("ulm", "bonn"):
        path = tree.root / f"gtFine/train/{city}/{city}_000000_000313_gtFine_labelIds.png"
        ids = read_label_ids(path)
        ids[0, :5] = 200
        Image.fromarray(ids).save(path)
    dataset = CityscapesSequences(tree.root, "train", num_frames=1, label_set="report")
    with caplog.at_level(logging.WARNING):
        samples = [dataset[0], dataset[1]]
    assert caplog.text.count("not in the Cityscapes table") == 1 and "200" in caplog.text
    for sample in samples:
        assert (sample["labels"][0, 0, :5] == 255).all()
        assert (sample["labels"][0, 1:] != 255).all(), "every other id is a class in the report set"


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_grayscale_rgba_palette_and_16_bit_images_become_rgb(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    if mode == "L":
        Image.fromarray(rgb[:, :, 0]).save(path)
        expected = np.repeat(rgb[:, :, :1], 3, axis=2)
    elif mode == "RGBA":
        Image.fromarray(np.dstack([rgb, np.full((8, 12), 9, np.uint8)])).save(path)
        expected = rgb
    elif mode == "P":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(path)
        expected = np.asarray(Image.open(path).convert("RGB"))
    else:
        Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 256 + 255).save(path)
        expected = np.repeat(rgb[:, :, :1], 3, axis=2)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (8, 12, 3)
    np.testing.assert_array_equal(image, expected)


def test_colour_label_file_is_rejected(tmp_path):
    path = tmp_path / "x_gtFine_color.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)
    with pytest.raises(VidsegError, match="not \\*_gtFine_color.png"):
        read_label_ids(path)


def test_dense_sequences_label_every_frame_and_carry_corruption(dense_tree):
    whole = CityscapesSequences(dense_tree.root, "train", num_frames=6, gt_position="last")
    assert len(whole) == 6, "one sample per sequence"
    sample = whole[0]
    assert sample["labelled"].all() and sample["corruption"].tolist() == [0, 1, 2, 0, 1, 2]
    names = [dense_tree.identify(f) for f in sample["frames"]]
    assert names == [frame_name("aachen", 0, f) for f in range(6)]
    for t, name in enumerate(names):
        np.testing.assert_array_equal(
            sample["labels"][t].numpy(), CITYSCAPES.map_label_ids(dense_tree.label_ids[("train", name)])
        )
    windows = CityscapesSequences(dense_tree.root, "train", num_frames=3, gt_position="random")
    assert len(windows) == 36, "every labelled frame is an anchor"
    covered = set()
    generator = torch.Generator().manual_seed(0)
    for index in range(len(windows)):
        sample = windows.sample(index, generator)
        frames = [split_name(dense_tree.identify(f))[2] for f in sample["frames"]]
        assert frames == list(range(frames[0], frames[0] + 3))
        assert frames[sample["gt_index"]] == split_name(sample["name"])[2]
        covered.update(frames)
    assert covered == set(range(6))
    fixed = CityscapesSequences(dense_tree.root, "train", num_frames=3, gt_position=0, frame_stride=2)
    assert sorted({split_name(n)[2] for n in fixed.names}) == [0, 1], "anchors whose window cannot fit are dropped"
    with pytest.raises(ValueError, match="longest has 6 frames"):
        CityscapesSequences(dense_tree.root, "train", num_frames=7)


def test_dataset_survives_pickling_for_spawned_workers(cityscapes_tree):
    dataset = CityscapesSequences(cityscapes_tree.root, "val", 2, gt_position="last", transform=ClipTransform((16, 32)))
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[3]["frames"], dataset[3]["frames"]) and copy.names == dataset.names


def test_default_collate_batches_samples(cityscapes_tree):
    dataset = CityscapesSequences(cityscapes_tree.root, "val", num_frames=3, gt_position="last")
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["frames"].shape == (4, 3, 3, 32, 64) and batch["labels"].shape == (4, 3, 32, 64)
    assert batch["labelled"].dtype == torch.bool and batch["corruption"].shape == (4, 3)
    assert batch["gt_index"].tolist() == [2] * 4 and len(batch["name"]) == 4



def test_dense_metadata_must_cover_every_frame(tmp_path):
    tree = make_cityscapes_tree(tmp_path, cities=("ulm",), splits=("train",), dense_frames=4)
    meta_path = tree.root / "synthcity.json"
    meta = json.loads(meta_path.read_text())
    meta["sequences"]["train"]["ulm_000000"]["corruption"] = [0, 0]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(VidsegError, match=r"lists 2 corruption codes for train/ulm_000000.*frame 3"):
        CityscapesSequences(tree.root, "train", num_frames=2)
