"""The dataset layer on generated trees of every layout: exact frames, order and labels, gaps, decoys, errors."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.cli import main
from vidseg.config import config_from_dict
from vidseg.data import ClipTransform, build_index, open_dataset
from vidseg.data.cache import prepare_cache
from vidseg.data.labels import CAMVID11_CLASSES, CAMVID32_CODES, get_label_set
from vidseg.data.testing import make_camvid_tree, make_cityscapes_tree, make_folders_tree, make_vspw_tree
from vidseg.errors import VidsegError

SIZE = (24, 32)


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    return make_camvid_tree(tmp_path_factory.mktemp("camvid") / "camvid")


@pytest.fixture(scope="module")
def camvid_original(tmp_path_factory):
    return make_camvid_tree(tmp_path_factory.mktemp("camvid32") / "camvid", original=True)


@pytest.fixture(scope="module")
def vspw(tmp_path_factory):
    return make_vspw_tree(tmp_path_factory.mktemp("vspw") / "VSPW_480p")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_folders_tree(tmp_path_factory.mktemp("folders") / "mine")


def structure(index):
    return [(s.name, [f.name for f in s.frames], s.stride, s.fps) for s in index.sequences]


def identities(tree, sample, prefix=""):
    return [tree.identify(frame) for frame in sample["frames"]]


# ------------------------------------------------------------------------------------------------- CamVid


def test_camvid_index_splits_runs_at_gaps_and_keeps_each_splits_spacing(camvid):
    train = build_index(camvid.root, "train")
    assert train.layout == "camvid" and train.label_set.name == "camvid11"
    assert structure(train) == [
        ("0001TP", ["0001TP_006690", "0001TP_006720", "0001TP_006750"], 30, 1.0),
        ("0006R0", ["0006R0_f00930", "0006R0_f00960", "0006R0_f00990", "0006R0_f01020"], 30, 1.0),
        ("0016E5-run1", ["0016E5_00390", "0016E5_00420", "0016E5_00450"], 30, 1.0),
        ("0016E5-run2", ["0016E5_04350", "0016E5_04380", "0016E5_04410", "0016E5_04440"], 30, 1.0),
    ]
    assert [f.number for f in train.sequences[1].frames] == [930, 960, 990, 1020]
    val = build_index(camvid.root, "val")
    assert structure(val) == [("0016E5", [f"0016E5_0{n}" for n in (7959, 7961, 7963, 7965, 7967)], 2, 15.0)]
    test = build_index(camvid.root, "test")
    assert [s.name for s in test.sequences] == ["0001TP", "Seq05VD"]
    assert [f.name for f in test.sequences[1].frames] == ["Seq05VD_f00000", "Seq05VD_f00030", "Seq05VD_f00060"]


def test_camvid_windows_are_the_preceding_frames_of_one_run_and_void_is_ignored(camvid):
    dataset = open_dataset(camvid.root, "train", num_frames=2, gt_position="last", transform=ClipTransform(SIZE))
    # Every frame but the first of each run (4 runs) ends a window: windows never bridge the 450 -> 4350 gap.
    assert len(dataset) == 14 - 4 and dataset.num_classes == 11
    assert "0016E5_04350" not in dataset.names and "0016E5_04380" in dataset.names
    lut = np.full(256, 255)
    lut[:11] = np.arange(11)  # 0..10 are the classes, 11 (void) and anything else is ignored
    for index, name in enumerate(dataset.names):
        sample = dataset[index]
        assert sample["name"] == name and sample["gt_index"] == 1 and sample["labelled"].all()
        frames = identities(camvid, sample)
        assert frames[1] == name
        run = next(s for s in build_index(camvid.root, "train").sequences if name in [f.name for f in s.frames])
        names = [f.name for f in run.frames]
        assert names.index(frames[0]) == names.index(name) - 1
        for t, frame in enumerate(frames):
            np.testing.assert_array_equal(sample["labels"][t].numpy(), lut[camvid.label_ids[("train", frame)]])
    assert any((camvid.label_ids[("train", n)] == 11).any() for n in camvid.annotated["train"]), "void is exercised"


def test_camvid_val_strides_count_entries_and_random_positions_cover_the_run(camvid):
    dataset = open_dataset(camvid.root, "val", num_frames=3, gt_position="random", frame_stride=2)
    assert dataset.names == ["0016E5_07959", "0016E5_07963", "0016E5_07967"]
    generator = torch.Generator().manual_seed(0)
    for index in range(len(dataset)):
        sample = dataset.sample(index, generator)
        assert identities(camvid, sample) == ["0016E5_07959", "0016E5_07963", "0016E5_07967"]


def test_camvid_original_release_decodes_colours_into_11_and_31_classes(camvid_original):
    tree = camvid_original
    names = [name for name, _ in CAMVID32_CODES]
    eleven = build_index(tree.root, "train")
    assert eleven.label_set.name == "camvid11" and eleven.label_set.class_names == tuple(n for n, _ in CAMVID11_CLASSES)
    full = build_index(tree.root, "train", label_set="camvid32")
    assert full.label_set.num_classes == 31 and "Void" not in full.label_set.class_names
    frame = eleven.sequences[0].frames[0]
    codes = tree.label_ids[("train", frame.name)]
    np.testing.assert_array_equal(eleven.read_raw_label(frame), codes)
    classes11 = eleven.read_label(frame)
    classes32 = full.read_label(frame)
    expected11 = {"LaneMkgsDriv": 3, "Child": 9, "Wall": 1, "Column_Pole": 2, "Void": 255, "Sky": 0}
    for name, index in expected11.items():
        assert (classes11[codes == names.index(name)] == index).all(), name
    assert (classes32[codes == names.index("Void")] == 255).all()
    assert (classes32[codes == names.index("Wall")] == 30).all() and (classes32[codes == 0] == 0).all()
    assert {len(v) for v in [classes11[codes == k] for k in np.unique(codes)]} != {0}
    # The standard split of the release, by video and frame number.
    assert [f.name for f in build_index(tree.root, "val").frames][0] == "0016E5_07959"
    assert {s.name for s in build_index(tree.root, "test").sequences} == {"0001TP", "Seq05VD"}
    assert sum(1 for _ in build_index(tree.root, "all").frames) == 24


def test_camvid_missing_and_stray_files_are_named(tmp_path):
    tree = make_camvid_tree(tmp_path / "a", splits=("train",), decoys=False)
    (tree.root / "trainannot" / "0006R0_f00960.png").unlink()
    with pytest.raises(VidsegError, match=r"0006R0_f00960.png has no label file: expected .*trainannot/0006R0_f00960"):
        build_index(tree.root, "train")
    tree = make_camvid_tree(tmp_path / "b", splits=("train",), decoys=False)
    (tree.root / "train" / "0001TP_006720.png").unlink()
    with pytest.raises(VidsegError, match=r"1 label files in .*trainannot have no frame .*0001TP_006720.png"):
        build_index(tree.root, "train")
    tree = make_camvid_tree(tmp_path / "c", splits=("train",), decoys=False)
    Image.new("RGB", (32, 24)).save(tree.root / "train" / "0001TP_06720.png")
    Image.new("L", (32, 24)).save(tree.root / "trainannot" / "0001TP_06720.png")
    with pytest.raises(VidsegError, match=r"both frame 6720 of video 0001TP"):
        build_index(tree.root, "train")
    tree = make_camvid_tree(tmp_path / "d", splits=("train",), decoys=False)
    Image.new("L", (16, 24)).save(tree.root / "trainannot" / "0001TP_006720.png")
    dataset = open_dataset(tree.root, "train", num_frames=1)
    with pytest.raises(VidsegError, match=r"label .*0001TP_006720.png is 16x24 but its image .* is 32x24"):
        dataset[dataset.names.index("0001TP_006720")]
    with pytest.raises(VidsegError, match=r"split 'val' not found .*splits present: train"):
        build_index(tree.root, "val")
    with pytest.raises(VidsegError, match="does not fit CamVid in the SegNet layout"):
        build_index(tree.root, "train", label_set="cityscapes")


# --------------------------------------------------------------------------------------------------- VSPW


def test_camvid_original_release_names_a_frame_without_its_colour_label(tmp_path):
    tree = make_camvid_tree(tmp_path / "a", original=True)
    label = next((tree.root / "LabeledApproved_full").glob("0016E5_*_L.png"))
    label.unlink()
    frame = label.name.removesuffix("_L.png")
    with pytest.raises(VidsegError, match=rf"{frame}.png has no label file: expected .*LabeledApproved_full/{frame}_L"):
        build_index(tree.root, "val")


def test_vspw_masks_shift_by_one_with_others_and_255_ignored(vspw):
    index = build_index(vspw.root, "train")
    assert index.layout == "vspw" and index.label_set.num_classes == 124
    assert structure(index) == [
        ("1001_abc", ["00000000", "00000001", "00000002", "00000003"], 1, None),
        ("1002_def", ["00000000", "00000001", "00000002"], 1, None),
    ]
    dataset = open_dataset(vspw.root, "train", num_frames=3, gt_position="last")
    assert len(dataset) == 2 + 1
    sample = dataset[0]
    assert [vspw.identify(f) for f in sample["frames"]] == [f"1001_abc/0000000{n}" for n in range(3)]
    mask = vspw.label_ids[("train", "1001_abc/00000002")]
    labels = sample["labels"][2].numpy()
    for value, expected in ((0, 255), (1, 0), (2, 1), (50, 49), (124, 123), (255, 255)):
        assert (mask == value).any() and (labels[mask == value] == expected).all(), value
    test = build_index(vspw.root, "test")
    assert test.num_labelled == 0 and all(f.label is None for f in test.frames)
    with pytest.raises(VidsegError, match="has no labelled frame"):
        open_dataset(vspw.root, "test", num_frames=1)


def test_vspw_missing_mask_and_unknown_video_are_named(tmp_path):
    tree = make_vspw_tree(tmp_path / "v", videos={"train": {"a": 3}})
    (tree.root / "data/a/mask/00000001.png").unlink()
    with pytest.raises(VidsegError, match=r"00000001.jpg has no mask: expected .*data/a/mask/00000001.png"):
        build_index(tree.root, "train")
    tree = make_vspw_tree(tmp_path / "w", videos={"train": {"a": 3}})
    (tree.root / "train.txt").write_text("a\nb\n")
    with pytest.raises(VidsegError, match=r"lists video 'b', but .*data/b/origin holds no frames"):
        build_index(tree.root, "train")


# ------------------------------------------------------------------------------------------------ folders


def test_folders_labels_are_optional_rgb_is_decoded_and_ignore_is_ignored(folders):
    index = build_index(folders.root, "train")
    assert index.label_set.name == "tiny" and index.label_set.class_names == ("road", "car", "tree")
    assert structure(index) == [
        ("street", [f"frame_000{n}" for n in range(1, 7)], 1, 10.0),
        ("yard-run1", ["frame_0010", "frame_0011", "frame_0012"], 1, 10.0),
        ("yard-run2", ["frame_0020", "frame_0021"], 1, 10.0),
    ]
    assert [f.label is not None for f in index.sequences[0].frames] == [True, False, True, True, False, True]
    dataset = open_dataset(folders.root, "train", num_frames=2, gt_position="last")
    # street: labelled 3, 4, 6 have a predecessor; yard: 11, 12, 21.
    assert dataset.names == ["frame_0003", "frame_0004", "frame_0006", "frame_0011", "frame_0012", "frame_0021"]
    sample = dataset[0]
    assert [folders.identify(f) for f in sample["frames"]] == ["street/frame_0002", "street/frame_0003"]
    assert sample["labelled"].tolist() == [False, True] and (sample["labels"][0] == 255).all()
    written = folders.label_ids[("train", "street/frame_0003")]
    expected = np.where(written == 9, 255, written)
    assert (written == 9).any()
    np.testing.assert_array_equal(sample["labels"][1].numpy(), expected)
    rgb = dataset[dataset.names.index("frame_0012")]
    np.testing.assert_array_equal(rgb["labels"][1].numpy(), folders.label_ids[("train", "yard/frame_0012")])


def test_folders_errors_name_the_file(tmp_path):
    tree = make_folders_tree(tmp_path / "f")
    Image.new("L", (32, 24)).save(tree.root / "train/street/labels/frame_0099.png")
    with pytest.raises(VidsegError, match=r"1 labels in .*street/labels have no frame .*frame_0099.png"):
        build_index(tree.root, "train")
    (tree.root / "classes.yaml").write_text("classes:\n  - {name: road}\n")
    with pytest.raises(VidsegError, match=r"classes.yaml: class 0 must be \{name: TEXT, color: \[R, G, B\]\}"):
        build_index(tree.root, "train")


# ------------------------------------------------------------------------------------- detection, splits


def test_detection_names_what_each_layout_expects(tmp_path, camvid, vspw, folders, cityscapes_tree):
    for tree, layout in ((camvid, "camvid"), (vspw, "vspw"), (folders, "folders"), (cityscapes_tree, "cityscapes")):
        assert build_index(tree.root, "train").layout == layout
    (tmp_path / "stuff").mkdir()
    with pytest.raises(VidsegError, match=r"in no known dataset layout: it has no gtFine/ folder \(found: stuff\).*"
                                          r"cityscapes: gtFine.*camvid: .*vspw: .*folders: classes.yaml"):
        build_index(tmp_path, "train")
    both = make_folders_tree(tmp_path / "both")
    make_cityscapes_tree(both.root, cities=("ulm",), splits=("train",))
    with pytest.raises(VidsegError, match=r"matches several layouts \(cityscapes, folders\); set one with data.layout"):
        build_index(both.root, "train")
    assert build_index(both.root, "train", layout="folders").layout == "folders"
    with pytest.raises(VidsegError, match="unknown layout 'kitti'"):
        build_index(both.root, "train", layout="kitti")


def test_a_root_with_only_some_splits_works(tmp_path):
    tree = make_camvid_tree(tmp_path / "only-val", splits=("val",))
    assert len(open_dataset(tree.root, "val", num_frames=1)) == 5
    with pytest.raises(VidsegError, match="splits present: val"):
        open_dataset(tree.root, "train", num_frames=1)


# ------------------------------------------------------------------------------- cache, prepare, training


def test_cache_of_camvid_serves_every_label_set_and_equals_decoding(camvid_original, tmp_path):
    root = camvid_original.root
    prepare_cache(root, tmp_path / "c", (12, 16), splits=["train"], num_frames=2)
    manifest = json.loads((tmp_path / "c/manifest.json").read_text())
    assert manifest["layout"] == "camvid" and [e["key"] for e in manifest["splits"]["train"]["entries"]] == [
        "0001TP", "0006R0", "0016E5-run1", "0016E5-run2"]
    for label_set in ("camvid11", "camvid32"):
        kwargs = dict(num_frames=2, gt_position="last", transform=ClipTransform((12, 16)), label_set=label_set)
        decoded = open_dataset(root, "train", **kwargs)
        cached = open_dataset(root, "train", cache=tmp_path / "c", **kwargs)
        assert cached.names == decoded.names and cached.num_classes == decoded.num_classes
        for index in range(len(decoded)):
            for key in ("frames", "labels", "labelled"):
                assert torch.equal(cached[index][key], decoded[index][key]), (label_set, index, key)


def test_prepare_command_detects_or_takes_the_layout(camvid, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["prepare", "--root", str(camvid.root), "--out", str(out), "--size", "12x16", "--split", "val",
                 "--layout", "camvid"]) == 0
    assert "val: 1 entries, 5 frames at 12x16" in capsys.readouterr().out
    assert main(["prepare", "--root", str(camvid.root), "--out", str(out), "--size", "12x16",
                 "--layout", "vspw"]) == 2
    assert "(vspw layout) has no train or val split" in capsys.readouterr().err


def test_training_on_camvid_builds_an_11_class_model_and_records_its_label_set(camvid, tmp_path):
    from vidseg.checkpoint import TrainState
    from vidseg.train import train

    config = config_from_dict({
        "model": {"name": "vanilla-crnn-small-shallow"},
        "data": {"root": str(camvid.root), "size": [16, 24], "num_frames": 2, "batch_size": 2},
        "loss": {"frames": "labelled", "class_weights": "sqrt_inverse_frequency"},
        "train": {"steps": 1, "log_every": 1, "tensorboard": False},
        "eval": {"every_epochs": 0},
    })
    messages: list[str] = []
    train(config, tmp_path / "run", log=messages.append)
    checkpoint = TrainState.load(tmp_path / "run/last.pt")
    assert checkpoint.num_classes == 11
    logits, _ = checkpoint.build_model()(torch.zeros(1, 1, 3, 16, 24))
    assert logits.shape[2] == 11
    label_set = checkpoint.predicted_label_set()
    assert label_set.name == "camvid11" and label_set.class_names[10] == "Bicyclist"
    np.testing.assert_array_equal(label_set.palette, get_label_set("camvid11").palette)
    assert checkpoint.trained_size() == (16, 24)
    assert any("split 'train': 4 sequences, 14 frames" in m for m in messages)


def test_class_weights_name_the_classes_absent_from_the_training_labels(tmp_path):
    from vidseg.train import train

    tree = make_folders_tree(tmp_path / "f")
    (tree.root / "classes.yaml").write_text(
        "classes:\n  - {name: road, color: [1, 1, 1]}\n  - {name: car, color: [2, 2, 2]}\n"
        "  - {name: tree, color: [3, 3, 3]}\n  - {name: boat, color: [4, 4, 4]}\nignore: 9\n"
    )
    config = config_from_dict({
        "model": {"name": "vanilla-none-small-shallow"},
        "data": {"root": str(tree.root), "size": [16, 24], "num_frames": 1, "batch_size": 2},
        "loss": {"class_weights": "sqrt_inverse_frequency"},
        "train": {"steps": 1, "tensorboard": False},
        "eval": {"every_epochs": 0},
    })
    messages: list[str] = []
    train(config, tmp_path / "run", log=messages.append)
    warnings = [m for m in messages if "absent" in m]
    assert len(warnings) == 1 and "boat" in warnings[0] and "road" not in warnings[0]


def test_unknown_label_values_are_reported_once(tmp_path, caplog):
    tree = make_camvid_tree(tmp_path / "u", splits=("val",), decoys=False)
    path = tree.root / "valannot" / "0016E5_07961.png"
    codes = np.array(Image.open(path))
    codes[0, :3] = 40
    Image.fromarray(codes).save(path)
    dataset = open_dataset(tree.root, "val", num_frames=1)
    with caplog.at_level(logging.WARNING):
        samples = [dataset[i] for i in range(len(dataset))]
    assert caplog.text.count("label values 40 are not codes of label set camvid11") == 1
    assert (samples[1]["labels"][0, 0, :3] == 255).all()


@pytest.mark.parametrize("maker", [make_vspw_tree, make_folders_tree])
def test_cache_serves_vspw_and_folders_like_their_files(maker, tmp_path):
    tree = maker(tmp_path / "root")
    manifest = prepare_cache(tree.root, tmp_path / "c", (12, 16), num_frames=2)
    assert set(manifest["splits"]) == {"train", "val"}
    kwargs = dict(num_frames=2, gt_position="random", transform=ClipTransform((12, 16), hflip=True))
    decoded = open_dataset(tree.root, "train", **kwargs)
    cached = open_dataset(tree.root, "train", cache=tmp_path / "c", **kwargs)
    assert cached.names == decoded.names and len(cached) > 0
    for index in range(len(decoded)):
        first, second = cached[(index, index)], decoded[(index, index)]
        assert first["gt_index"] == second["gt_index"]
        for key in ("frames", "labels", "labelled"):
            assert torch.equal(first[key], second[key]), (index, key)
