import json

import numpy as np
import pytest

from vidseg.cli import main
from vidseg.data import CityscapesSequences, read_image, read_label_ids, synthcity
from vidseg.data.synthcity import CLASSES, CORRUPTIONS, generate, render_sequence, sequence_seed
from vidseg.errors import VidsegError


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_whatever_the_worker_count(tmp_path):
    generate(tmp_path / "a", sequences=2, frames=3, size=(24, 48), seed=7, val_sequences=1)
    generate(tmp_path / "b", sequences=2, frames=3, size=(24, 48), seed=7, val_sequences=1, workers=2)
    generate(tmp_path / "c", sequences=2, frames=3, size=(24, 48), seed=8, val_sequences=1)
    a, b, c = (tree_bytes(tmp_path / name) for name in "abc")
    assert len(a) == 3 * 3 * 2 + 1, "an image and a label per frame, and synthcity.json"
    assert a == b
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith("_leftImg8bit.png")]
    assert all(a[k] != c[k] for k in images), "another seed renders other scenes"


def test_loader_reads_synthcity_whole_sequences_and_windows(synthcity_root):
    meta = json.loads((synthcity_root / "synthcity.json").read_text())
    assert meta["splits"] == {"train": 3, "val": 1} and meta["corruptions"] == list(CORRUPTIONS)
    whole = CityscapesSequences(synthcity_root, "train", num_frames=6, gt_position="last", label_set="report")
    assert len(whole) == 3
    train_ids = {label.train_id for label in CLASSES}
    for index in range(len(whole)):
        sample = whole[index]
        city, seq, _ = sample["name"].rsplit("_", 2)
        assert sample["labelled"].all() and sample["gt_index"] == 5
        assert sample["corruption"].tolist() == meta["sequences"]["train"][f"{city}_{seq}"]["corruption"]
        assert set(sample["labels"].unique().tolist()) <= train_ids, "nine classes, no void"
    windows = CityscapesSequences(synthcity_root, "val", num_frames=5, gt_position="random")
    assert len(windows) == 6, "every frame of the val sequence anchors a window"


def test_scene_has_the_nine_classes_and_labels_follow_the_classes_table():
    images, labels, codes = render_sequence(sequence_seed(0, "train", 1), 8, (64, 128), "downtown")
    assert images.shape == (8, 64, 128, 3) and labels.shape == (8, 64, 128) and codes.shape == (8,)
    present = set(np.unique(labels).tolist())
    assert present <= {label.id for label in CLASSES}
    assert {7, 8, 11, 17, 23, 26} <= present, "road, sidewalk, building, pole, sky and car in every street"
    assert codes[0] == 0


def test_corrupted_frames_keep_the_clean_scene_as_label(monkeypatch):
    seed = sequence_seed(3, "train", 0)
    images, labels, codes = render_sequence(seed, 16, (32, 64))
    assert (codes != 0).any()
    monkeypatch.setattr(synthcity, "BURST_START", 0.0)
    monkeypatch.setattr(synthcity, "OCCLUSION_START", 0.0)
    clean_images, clean_labels, clean_codes = render_sequence(seed, 16, (32, 64))
    assert (clean_codes == 0).all()
    np.testing.assert_array_equal(labels, clean_labels)
    corrupted = codes != 0
    assert np.abs(images[corrupted].astype(int) - clean_images[corrupted]).mean() > 20
    # Frames before the first corruption are the same pictures (up to sensor noise, drawn after the codes).
    first = int(np.argmax(corrupted))
    assert np.abs(images[:first].astype(int) - clean_images[:first]).mean() < 6


@pytest.mark.parametrize("kind", ["noise", "dark", "overexposed", "blur", "dropout", "occlusion"])
def test_each_corruption_destroys_most_of_the_single_frame_signal(kind):
    images, _, _ = render_sequence(sequence_seed(5, "train", 2), 1, (64, 128))
    clean = images[0].astype(np.float32)
    corrupted = np.clip(synthcity.corrupt_image(np.random.default_rng(0), clean, kind, 0), 0, 255)
    if kind == "dark":
        assert corrupted.max() <= 3
    elif kind == "overexposed":
        assert corrupted.min() >= 252
    elif kind in ("dropout", "occlusion"):
        assert (np.abs(corrupted - clean).max(axis=2) > 10).mean() > 0.3
    else:
        # What is left of the scene is a small part of the signal: low correlation with the clean frame's detail.
        detail = clean - clean.mean()
        left = corrupted - corrupted.mean()
        if kind == "blur":
            detail = clean[:, 1:] - clean[:, :-1]
            left = corrupted[:, 1:] - corrupted[:, :-1]
        correlation = (detail * left).sum() / np.sqrt((detail**2).sum() * (left**2).sum())
        assert correlation < 0.5


def test_burst_rates_match_the_documented_targets():
    codes = np.concatenate([synthcity._burst_codes(np.random.default_rng(i), 24) for i in range(3000)])
    per_sequence = codes.reshape(3000, 24)
    assert (per_sequence[:, 0] == 0).all()
    shares = np.bincount(codes, minlength=len(CORRUPTIONS)) / codes.size
    assert 0.27 < shares[1:6].sum() < 0.33
    assert 0.045 < shares[6] < 0.075
    assert np.allclose(shares[1:6], shares[1:6].mean(), atol=0.012), "burst kinds are equally likely"
    # Bursts last at most 3 frames and are followed by a clean frame (or the end of the sequence).
    for row in per_sequence[:300]:
        run = 0
        for previous, code in zip(row[:-1], row[1:]):
            run = run + 1 if code and code == previous else (1 if code else 0)
            assert run <= 3
            assert not (code and previous and code != previous)


def test_consecutive_frames_are_continuous():
    _, labels, _ = render_sequence(sequence_seed(1, "val", 0), 6, (64, 128))
    agreement_next = np.mean([(labels[t] == labels[t + 1]).mean() for t in range(5)])
    _, other, _ = render_sequence(sequence_seed(1, "val", 1), 1, (64, 128))
    assert agreement_next > 0.75
    assert agreement_next > (labels[0] == other[0]).mean() + 0.1


def test_output_is_never_half_written_or_overwritten_by_accident(tmp_path):
    out = tmp_path / "synth"
    generate(out, sequences=1, frames=2, size=(16, 32), seed=0, val_sequences=0)
    before = tree_bytes(out)
    with pytest.raises(VidsegError, match="already exists"):
        generate(out, sequences=1, frames=2, size=(16, 32), seed=1)
    assert tree_bytes(out) == before
    generate(out, sequences=1, frames=3, size=(16, 32), seed=1, val_sequences=0, overwrite=True)
    assert len(tree_bytes(out)) == 3 * 2 + 1
    assert [p.name for p in tmp_path.iterdir()] == ["synth"], "no temporary folder left behind"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(VidsegError, match="not a SynthCity dataset"):
        generate(other, sequences=1, frames=2, size=(16, 32), overwrite=True)


def test_synth_command_writes_a_dataset_and_rejects_bad_sizes(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["synth", "--out", str(out), "--sequences", "1", "--val-sequences", "1", "--frames", "2",
                 "--size", "16x32", "--seed", "3", "--colour"])
    assert code == 0 and "frames/s" in capsys.readouterr().out
    label = out / "gtFine/train/oldtown/oldtown_000000_000001_gtFine_labelIds.png"
    colour = out / "gtFine/train/oldtown/oldtown_000000_000001_gtFine_color.png"
    image = out / "leftImg8bit_sequence/val/oldtown/oldtown_000000_000000_leftImg8bit.png"
    assert read_image(image).shape == (16, 32, 3)
    ids = read_label_ids(label)
    palette = {label.id: label.color for label in CLASSES}
    expected_colour = np.array([palette[i] for i in ids.ravel()], dtype=np.uint8).reshape(16, 32, 3)
    np.testing.assert_array_equal(read_image(colour), expected_colour)
    assert main(["synth", "--out", str(tmp_path / "bad"), "--size", "16by32"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
