"""Bad input tried on every entry point (train, evaluate, segment, prepare, synth, export) through the real CLI.

Each case must end with a message that names the file or key and says what to do, a non-zero exit status, no
traceback, and no output or half-written file left behind (folders are listed with their hidden temporary
entries). docs/reliability.md lists every case with the test that shows it; the crash-safety cases (SIGKILL,
SIGTERM, truncated last.pt, NaN loss) live in test_resume.py and test_train.py.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vidseg.checkpoint import load_checkpoint, save_checkpoint
from vidseg.cli import main
from vidseg.config import config_from_dict
from vidseg.data.cache import FrameCache
from vidseg.data.cityscapes import (
    SEQUENCE_FOLDER,
    CityscapesSequences,
    image_path,
    label_path,
    read_image,
    read_label_ids,
)
from vidseg.data.testing import make_cityscapes_tree
from vidseg.data.transforms import MEAN, STD, ClipTransform
from vidseg.data.video import open_frames
from vidseg.errors import VidsegError
from vidseg.fileio import atomic_write_bytes
from vidseg.models import build_model
from vidseg.segment import Segmenter

MODEL = "vanilla-none-small-shallow"
HEIGHT, WIDTH = 32, 64
# Hypothesis runs the same examples on every machine, so a failure in CI reproduces locally.
FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------- helpers


def cli(capsys, *args) -> tuple[int, str]:
    """Run ``vidseg ARGS`` in this process; return the exit status and stderr, which must hold no traceback."""
    code = main([str(arg) for arg in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def everything_under(folder: Path) -> list[str]:
    """Every entry below ``folder``, hidden temporary files and folders included, as sorted relative paths."""
    return sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*"))


def write_frames(folder: Path, count: int = 2, seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index}.png")
    return frames


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width x height`` RGB pixels and whose image data is empty."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">II", width, height) + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_mp4(path: Path, num_frames: int = 12, faststart: bool = False) -> Path:
    options = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = HEIGHT, WIDTH, "yuv420p"
        for _ in range(num_frames):
            frame = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def fill_disk(monkeypatch, owner, name: str, *, after: int, path_arg: int) -> None:
    """Let ``after`` calls of ``owner.name`` (a writer) succeed; the next ones write the start of their file and
    fail with ENOSPC, as writes to a full disk do."""
    real = getattr(owner, name)
    calls = []

    def writer(*args, **kwargs):
        calls.append(args)
        if len(calls) <= after:
            return real(*args, **kwargs)
        with open(args[path_arg], "wb") as half_written:
            half_written.write(b"\x89PNG\r\n\x1a\nhalf a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(owner, name, writer)


def small_tree(folder: Path):
    """A dense tree, one sequence of 3 frames per split at 32x64, that a test may damage."""
    return make_cityscapes_tree(folder, cities=("aachen",), sequences=1, dense_frames=3, decoys=False)


def frame_file(tree, split: str = "val", frame: int = 1) -> Path:
    return image_path(tree.root, SEQUENCE_FOLDER, split, "aachen", 0, frame)


def label_file(tree, split: str = "val", frame: int = 1) -> Path:
    return label_path(tree.root, split, "aachen", 0, frame)


def write_config(path: Path, root: Path, **sections) -> Path:
    """A training run of seconds: per-frame model, 16x32 frames, 2-frame windows, 2 steps, no evaluation."""
    raw = {
        "model": {"name": MODEL},
        "data": {"root": str(root), "size": [16, 32], "num_frames": 2, "hflip": False},
        "train": {"steps": 2, "tensorboard": False, "log_every": 1},
        "eval": {"every_epochs": 0},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


def checkpoint_payload(num_classes: int = 19, **extra) -> dict:
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=num_classes)
    payload = {"model_name": MODEL, "num_classes": num_classes, "label_set": "cityscapes",
               "model": model.state_dict(), "normalization": {"mean": list(MEAN), "std": list(STD)}}
    payload.update(extra)
    return payload


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
    save_checkpoint(path, checkpoint_payload())
    return path


# ---------------------------------------------------------------------------- outputs that cannot be written


def command_writing_to(kind: str, output: Path, checkpoint: Path, tree, tmp_path: Path) -> list:
    """The arguments of a command that writes ``output``."""
    frames = tmp_path / "frames"
    if not frames.exists():
        write_frames(frames)
    return {
        "segment video": ["segment", frames, "--checkpoint", checkpoint, "--out", output, "--no-progress"],
        "segment masks": ["segment", frames, "--checkpoint", checkpoint, "--masks", output, "--no-progress"],
        "export": ["export", "--checkpoint", checkpoint, "--out", output, "--no-check"],
        "evaluate results": ["evaluate", "--checkpoint", checkpoint, "--data", tree.root, "--num-frames", "2",
                             "--no-tc", "--out", output],
        "evaluate predictions": ["evaluate", "--checkpoint", checkpoint, "--data", tree.root, "--num-frames", "2",
                                 "--no-tc", "--out", tmp_path / "results.json", "--save-predictions", output],
        "prepare": ["prepare", "--root", tree.root, "--out", output, "--size", "16x32"],
        "synth": ["synth", "--out", output, "--sequences", "1", "--frames", "2", "--size", "16x16"],
        "train": ["train", write_config(tmp_path / "run.yaml", tree.root), "--out", output],
    }[kind]


OUTPUT_KINDS = ["segment video", "segment masks", "export", "evaluate results", "evaluate predictions", "prepare",
                "synth", "train"]
OUTPUT_NAMES = {"segment video": "out.mp4", "export": "model.onnx", "evaluate results": "results.json"}


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_an_output_below_a_file_is_refused_naming_the_file_in_the_way(kind, checkpoint, dense_tree, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    output = blocker / "sub" / OUTPUT_NAMES.get(kind, "out")
    code, err = cli(capsys, *command_writing_to(kind, output, checkpoint, dense_tree, tmp_path))
    assert code == 2
    assert f"cannot write {output}: {blocker} is a file, not a folder; choose another output path" in err
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_a_read_only_folder_is_explained(kind, checkpoint, dense_tree, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:
            (locked / "probe").write_bytes(b"")
        except PermissionError:
            pass
        else:  # root ignores permissions (as in CI containers): test_a_read_only_folder_is_explained_to_root
            pytest.skip("this user can write into a 0o500 folder; the _to_root variant covers root")
        output = locked / OUTPUT_NAMES.get(kind, "out")
        code, err = cli(capsys, *command_writing_to(kind, output, checkpoint, dense_tree, tmp_path))
        assert code == 2
        assert f"cannot write {output}: no permission to write into {locked}; choose a folder you can write to" in err
        assert everything_under(locked) == []
    finally:
        locked.chmod(0o700)


# Runs ARGV (a program and its arguments) after removing CAP_DAC_OVERRIDE, the capability that lets root write
# into any folder, from the bounding set: after the exec, the kernel checks folder permission bits for root as
# for any other user (reading stays allowed through CAP_DAC_READ_SEARCH). Needs CAP_SETPCAP, which root has in
# an ordinary container.
WITHOUT_WRITE_OVERRIDE = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0):  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE
    sys.exit(f"cannot drop CAP_DAC_OVERRIDE: {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[1], sys.argv[1:])
"""


def run_without_write_override(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_WRITE_OVERRIDE, *map(str, argv)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_a_read_only_folder_is_explained_to_root(kind, checkpoint, dense_tree, tmp_path):
    """test_a_read_only_folder_is_explained for root, which the kernel lets write anywhere: the command runs
    in a process without that override, so the kernel itself refuses the write, as it does for other users."""
    if os.geteuid() != 0:
        pytest.skip("not root: test_a_read_only_folder_is_explained runs the same case in this process")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    probe = run_without_write_override(sys.executable, "-c", f"open({str(locked / 'probe')!r}, 'w')")
    if "PermissionError" not in probe.stderr:
        pytest.skip(f"cannot take root's write override away here: {probe.stderr.strip()[-200:]}")
    output = locked / OUTPUT_NAMES.get(kind, "out")
    args = command_writing_to(kind, output, checkpoint, dense_tree, tmp_path)
    result = run_without_write_override(sys.executable, "-m", "vidseg", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"cannot write {output}: no permission to write into {locked}; choose a folder you can write to" in (
        result.stderr
    )
    assert everything_under(locked) == []


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old, complete")
    fill_disk(monkeypatch, Path, "write_bytes", after=0, path_arg=0)
    with pytest.raises(VidsegError, match=f"cannot write {target}: no space left on the device"):
        atomic_write_bytes(target, b"new" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old, complete"
    assert everything_under(tmp_path) == ["model.onnx"]


def test_segment_full_disk_mid_video_leaves_no_file(checkpoint, tmp_path, monkeypatch, capsys):
    import vidseg.data.video

    write_frames(tmp_path / "frames", count=3)
    results = tmp_path / "results"
    real_write = vidseg.data.video.VideoWriter.write

    def write_then_fill_disk(self, frame, pts=None):
        real_write(self, frame, pts)
        if self.num_frames == 2:
            half_written = [path for path in results.iterdir() if path.name.startswith(".out.")]
            assert len(half_written) == 1  # the temporary video that must disappear
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(vidseg.data.video.VideoWriter, "write", write_then_fill_disk)
    out = results / "out.mp4"
    code, err = cli(capsys, "segment", tmp_path / "frames", "--checkpoint", checkpoint, "--out", out, "--no-progress")
    assert code == 2 and f"cannot write {out}: no space left on the device" in err
    assert everything_under(results) == []


def test_segment_full_disk_mid_masks_leaves_no_folder(checkpoint, tmp_path, monkeypatch, capsys):
    write_frames(tmp_path / "frames", count=3)
    results = tmp_path / "results"
    results.mkdir()
    fill_disk(monkeypatch, Image.Image, "save", after=1, path_arg=1)
    masks = results / "masks"
    code, err = cli(capsys, "segment", tmp_path / "frames", "--checkpoint", checkpoint, "--masks", masks,
                    "--no-progress")
    assert code == 2 and f"cannot write {masks}: no space left on the device" in err
    assert everything_under(results) == []


def test_evaluate_full_disk_writing_results_leaves_no_file(checkpoint, dense_tree, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    results.mkdir()
    fill_disk(monkeypatch, Path, "write_bytes", after=0, path_arg=0)
    out = results / "figures.json"
    code, err = cli(capsys, "evaluate", "--checkpoint", checkpoint, "--data", dense_tree.root, "--num-frames", "2",
                    "--max-samples", "1", "--no-tc", "--out", out)
    assert code == 2 and f"cannot write {out}: no space left on the device" in err
    assert everything_under(results) == []


def test_train_full_disk_at_a_checkpoint_keeps_the_previous_one(dense_tree, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "run.yaml", dense_tree.root, train={"steps": 3, "checkpoint_every": 1})
    fill_disk(monkeypatch, torch, "save", after=1, path_arg=1)
    run = tmp_path / "run"
    code, err = cli(capsys, "train", config, "--out", run)
    assert code == 2 and f"cannot write {run / 'last.pt'}: no space left on the device" in err
    monkeypatch.undo()
    assert load_checkpoint(run / "last.pt")["step"] == 1
    assert not [name for name in everything_under(run) if name.startswith(".")]


def test_prepare_full_disk_leaves_no_partial_array_and_no_manifest(dense_tree, tmp_path, monkeypatch, capsys):
    fill_disk(monkeypatch, np, "save", after=1, path_arg=0)
    cache = tmp_path / "cache"
    code, err = cli(capsys, "prepare", "--root", dense_tree.root, "--out", cache, "--size", "16x32")
    assert code == 2 and "no space left on the device" in err and f"cannot write {cache}" in err
    left = everything_under(cache)
    assert not [name for name in left if Path(name).name.startswith(".")]
    assert "manifest.json" not in left
    for array in cache.rglob("*.npy"):
        np.load(array)  # whatever is there is complete
    with pytest.raises(VidsegError, match="is not a frame cache"):
        FrameCache(cache)


def test_synth_full_disk_mid_generation_leaves_nothing(tmp_path, monkeypatch, capsys):
    fill_disk(monkeypatch, Image.Image, "save", after=3, path_arg=1)
    out = tmp_path / "synth"
    code, err = cli(capsys, "synth", "--out", out, "--sequences", "1", "--frames", "3", "--size", "16x16")
    assert code == 2 and f"cannot write {out}: no space left on the device" in err
    assert everything_under(tmp_path) == []


def test_a_full_disk_that_no_module_explains_still_gets_one_line(tmp_path, monkeypatch, capsys):
    import vidseg.data.synthcity

    def generate(out, **settings):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(out) / "synthcity.json"))

    monkeypatch.setattr(vidseg.data.synthcity, "generate", generate)
    code, err = cli(capsys, "synth", "--out", tmp_path / "synth")
    assert code == 2
    assert err.strip() == (
        f"vidseg synth: error: No space left on device ({tmp_path / 'synth' / 'synthcity.json'}); free some space "
        "or write somewhere else"
    )


def test_existing_outputs_are_refused_unless_overwrite(checkpoint, tmp_path, capsys):
    frames = tmp_path / "frames"
    write_frames(frames)
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "0.png").write_bytes(b"earlier result")
    args = ["segment", frames, "--checkpoint", checkpoint, "--masks", masks, "--no-progress"]
    code, err = cli(capsys, *args)
    assert code == 2 and f"output folder {masks} already exists and is not empty; pass --overwrite" in err
    assert (masks / "0.png").read_bytes() == b"earlier result"

    (masks / "notes.txt").write_text("mine")  # --overwrite never deletes what vidseg could not have written
    code, err = cli(capsys, *args, "--overwrite")
    assert code == 2 and "holds 1 other entries (notes.txt)" in err and "choose another folder" in err
    assert everything_under(masks) == ["0.png", "notes.txt"]

    existing = tmp_path / "synth"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        code, err = cli(capsys, "synth", "--out", existing, "--sequences", "1", "--frames", "2", *extra)
        assert code == 2 and str(existing) in err
        assert ("not a SynthCity dataset" if extra else "already exists and is not empty") in err
    assert everything_under(existing) == ["notes.txt"]
    existing_file = tmp_path / "data.bin"
    existing_file.write_bytes(b"x")
    code, err = cli(capsys, "synth", "--out", existing_file)
    assert code == 2 and f"{existing_file} is a file; --out must name a folder" in err


def test_train_refuses_a_directory_that_holds_a_run(dense_tree, tmp_path, capsys):
    run = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", dense_tree.root, train={"steps": 1})
    assert cli(capsys, "train", config, "--out", run)[0] == 0
    before = (run / "last.pt").read_bytes()
    code, err = cli(capsys, "train", config, "--out", run)
    assert code == 2 and f"{run} already holds a run (last.pt); continue it with --resume {run}" in err
    assert (run / "last.pt").read_bytes() == before

    code, err = cli(capsys, "train", "--resume", run, "--set", "data.label_set=report")
    assert code == 2
    assert f"the checkpoint holds {MODEL} with 19 classes but the config asks for {MODEL} with 20" in err
    assert (run / "last.pt").read_bytes() == before


# --------------------------------------------------------------------------------------- bad input frames


def corrupt_png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage, detail",
    [
        (corrupt_png, "cannot identify image file"),
        (truncate, "image file is truncated"),
        (lambda path: path.write_bytes(b""), "cannot identify image file"),
        (lambda path: path.write_bytes(png_header(0, 0)), "cannot identify image file"),
        (lambda path: path.write_bytes(png_header(200_000, 200_000)), "decompression bomb"),
    ],
    ids=["corrupt bytes", "truncated", "zero bytes", "0x0 pixels", "decompression bomb"],
)
def test_segment_names_an_unreadable_frame_and_writes_nothing(damage, detail, checkpoint, tmp_path, capsys):
    frames = tmp_path / "frames"
    write_frames(frames, count=3)
    damage(frames / "1.png")
    results = tmp_path / "results"
    code, err = cli(capsys, "segment", frames, "--checkpoint", checkpoint, "--out", results / "out.mp4",
                    "--masks", results / "masks", "--no-progress")
    assert code == 2
    assert f"frame {frames / '1.png'} cannot be read" in err and detail in err
    assert "replace or delete the file" in err
    assert not results.exists() or everything_under(results) == []


def write_text(path: Path) -> None:
    path.write_text("this is not a video\n" * 50)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda path: truncate(write_mp4(path)), "cannot be opened"),
        (lambda path: truncate(write_mp4(path, faststart=True)), "ended after 3 frames but its header announces 12"),
        (write_text, "cannot be opened"),
        (lambda path: path.write_bytes(b""), "cannot be opened"),
    ],
    ids=["truncated mp4", "truncated faststart mp4", "text named .mp4", "empty .mp4"],
)
def test_segment_explains_a_broken_video_and_writes_nothing(make, expected, checkpoint, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    make(video)
    results = tmp_path / "results"
    code, err = cli(capsys, "segment", video, "--checkpoint", checkpoint, "--out", results / "out.mp4",
                    "--masks", results / "masks", "--no-progress")
    assert code == 2 and f"video {video} {expected}" in err and "re-download it" in err
    assert not results.exists() or everything_under(results) == []


def test_segment_explains_missing_inputs_and_empty_folders(checkpoint, tmp_path, capsys):
    masks = tmp_path / "masks"
    missing = tmp_path / "holiday.mp4"
    code, err = cli(capsys, "segment", missing, "--checkpoint", checkpoint, "--masks", masks)
    assert code == 2 and f"input {missing} does not exist; pass a video file, a folder of frames" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = cli(capsys, "segment", empty, "--checkpoint", checkpoint, "--masks", masks)
    assert code == 2 and f"folder {empty} contains no frames" in err and "found nothing" in err
    code, err = cli(capsys, "segment", f"{empty}/*.png", "--checkpoint", checkpoint, "--masks", masks)
    assert code == 2 and "matches no image files" in err
    assert not masks.exists()


def test_segment_reads_grey_rgba_and_16_bit_frames_as_their_rgb_equivalents(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(3)
    grey16 = rng.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)
    grey8 = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    rgba = rng.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    odd, rgb = tmp_path / "odd", tmp_path / "rgb"
    odd.mkdir()
    rgb.mkdir()
    Image.fromarray(grey16).save(odd / "0.png")  # 16-bit greyscale: mode I;16
    Image.fromarray(grey8, mode="L").save(odd / "1.png")
    Image.fromarray(rgba, mode="RGBA").save(odd / "2.png")
    high_byte = (grey16 >> 8).astype(np.uint8)
    for index, equivalent in enumerate([np.dstack([high_byte] * 3), np.dstack([grey8] * 3), rgba[:, :, :3]]):
        Image.fromarray(equivalent).save(rgb / f"{index}.png")
    for folder in (odd, rgb):
        masks = tmp_path / f"{folder.name}-masks"
        code, _ = cli(capsys, "segment", folder, "--checkpoint", checkpoint, "--masks", masks, "--no-progress")
        assert code == 0
    for index in range(3):
        odd_mask = np.asarray(Image.open(tmp_path / "odd-masks" / f"{index}.png"))
        rgb_mask = np.asarray(Image.open(tmp_path / "rgb-masks" / f"{index}.png"))
        np.testing.assert_array_equal(odd_mask, rgb_mask)


# ------------------------------------------------------------------------------------------ bad checkpoints


def truncated_checkpoint(path: Path) -> str:
    save_checkpoint(path, checkpoint_payload())
    truncate(path)
    return "is truncated or corrupt"


def empty_file(path: Path) -> str:
    path.write_bytes(b"")
    return "is truncated or corrupt"


def text_file(path: Path) -> str:
    path.write_text("model weights, honest")
    return "is truncated or corrupt"


def plain_tensor(path: Path) -> str:
    torch.save(torch.zeros(3), path)
    return "is not a vidseg checkpoint (expected format 'vidseg-checkpoint-v1', found 'Tensor')"


def foreign_dict(path: Path) -> str:
    torch.save({"state_dict": {}}, path)
    return "is not a vidseg checkpoint"


def weights_of_another_class_count(path: Path) -> str:
    save_checkpoint(path, checkpoint_payload(model=build_model(MODEL, num_classes=7).state_dict()))
    return f"does not fit model {MODEL}"


def unknown_model(path: Path) -> str:
    save_checkpoint(path, checkpoint_payload(model_name="vanilla-lstm-huge"))
    return "unknown model name 'vanilla-lstm-huge'; valid names are"


def no_file(path: Path) -> str:
    return "does not exist"


BAD_CHECKPOINTS = [truncated_checkpoint, empty_file, text_file, plain_tensor, foreign_dict,
                   weights_of_another_class_count, unknown_model, no_file]


# A warm start copies whatever matches by name and shape, so weights of another class count are fine there.
CHECKPOINT_CASES = [
    pytest.param(command, make, id=f"{command}-{make.__name__}")
    for command in ("segment", "evaluate", "export")
    for make in BAD_CHECKPOINTS
] + [
    pytest.param("train --set train.init_from", make, id=f"train-{make.__name__}")
    for make in (truncated_checkpoint, text_file, no_file)
]


@pytest.mark.parametrize("command, make", CHECKPOINT_CASES)
def test_bad_checkpoints_are_explained_by_every_command(command, make, dense_tree, tmp_path, capsys):
    path = tmp_path / "model.pt"
    expected = make(path)
    out = tmp_path / "out"
    write_frames(tmp_path / "frames", count=1)
    args = {
        "segment": ["segment", tmp_path / "frames", "--checkpoint", path, "--masks", out],
        "evaluate": ["evaluate", "--checkpoint", path, "--data", dense_tree.root, "--out", out / "r.json"],
        "export": ["export", "--checkpoint", path, "--out", out / "model.onnx"],
        "train --set train.init_from": ["train", write_config(tmp_path / "run.yaml", dense_tree.root), "--out", out,
                                        "--set", f"train.init_from={path}"],
    }[command]
    code, err = cli(capsys, *args)
    assert code == 2 and str(path) in err and expected in err
    assert not [name for name in everything_under(tmp_path) if name.startswith("out/") and "config" not in name]


def test_a_checkpoint_for_another_label_set_is_refused_by_segment_and_evaluate(dense_tree, tmp_path, capsys):
    path = tmp_path / "seven.pt"
    payload = checkpoint_payload(num_classes=7)
    del payload["label_set"]
    save_checkpoint(path, payload)
    write_frames(tmp_path / "frames", count=1)
    code, err = cli(capsys, "segment", tmp_path / "frames", "--checkpoint", path, "--masks", tmp_path / "masks")
    assert code == 2 and f"checkpoint {path}: " in err
    assert "predicts 7 classes but its label set 'cityscapes' has 19" in err
    code, err = cli(capsys, "evaluate", "--checkpoint", path, "--data", dense_tree.root, "--num-frames", "2",
                    "--no-tc", "--out", tmp_path / "r.json")
    assert code == 2 and "the model predicts 7 classes but label set 'cityscapes' has 19" in err
    assert everything_under(tmp_path) == ["frames", "frames/0.png", "seven.pt"]


# -------------------------------------------------------------------------------------- bad dataset files


def grey_rgb_label(path: Path) -> None:
    Image.open(path).convert("RGB").save(path)


DATASET_DAMAGE = {
    "corrupt image": (frame_file, corrupt_png, "cannot decode {path} (cannot identify image file"),
    "truncated image": (frame_file, truncate, "cannot decode {path} (image file is truncated)"),
    "zero-byte label": (label_file, lambda path: path.write_bytes(b""), "cannot decode {path}"),
    "colour label": (label_file, grey_rgb_label, "{path} has mode RGB (3 channels), but a labelIds file has one"),
    "missing frame": (frame_file, Path.unlink, "snippet frame {path} is missing"),
}


@pytest.mark.parametrize("damage", list(DATASET_DAMAGE))
@pytest.mark.parametrize("command", ["evaluate", "train", "prepare"])
def test_damaged_dataset_files_are_named_and_nothing_is_written(command, damage, checkpoint, tmp_path, capsys, caplog):
    tree = small_tree(tmp_path / "data")
    locate, spoil, expected = DATASET_DAMAGE[damage]
    split = "train" if command == "train" else "val"
    path = locate(tree, split)
    spoil(path)
    out = tmp_path / "out"
    args = {
        "evaluate": ["evaluate", "--checkpoint", checkpoint, "--data", tree.root, "--num-frames", "2", "--no-tc",
                     "--out", out / "results.json"],
        "train": ["train", write_config(tmp_path / "run.yaml", tree.root), "--out", out],
        "prepare": ["prepare", "--root", tree.root, "--out", out, "--size", "16x32", "--split", "val"],
    }[command]
    code, err = cli(capsys, *args)
    if command == "prepare" and damage == "missing frame":
        # A cache records missing frames; reading them raises (or skips them) exactly as reading the PNGs does.
        assert code == 0 and "1 snippet frames are missing" in caplog.text
        with pytest.raises(VidsegError, match=expected.format(path=path)):
            cached = CityscapesSequences(tree.root, "val", 2, gt_position="last", transform=ClipTransform((16, 32)),
                                         cache=out)
            cached[0]
        return
    assert code == 2 and expected.format(path=path) in err
    left = everything_under(out) if out.exists() else []
    assert not [name for name in left if Path(name).name.startswith(".")]
    assert not [name for name in left if name.endswith((".json", ".md", ".pt")) and name != "prepare.json"]


def test_unknown_label_ids_are_ignored_like_void_and_reported_once(checkpoint, tmp_path, caplog, capsys):
    unknown, void = small_tree(tmp_path / "unknown"), small_tree(tmp_path / "void")
    figures = {}
    for tree, label_id in ((unknown, 200), (void, 0)):
        path = label_file(tree)
        ids = read_label_ids(path)
        ids[:, : WIDTH // 2] = label_id
        Image.fromarray(ids).save(path)
        out = tmp_path / f"{tree.root.name}.json"
        code, _ = cli(capsys, "evaluate", "--checkpoint", checkpoint, "--data", tree.root, "--num-frames", "2",
                      "--no-tc", "--out", out)
        assert code == 0
        results = json.loads(out.read_text())
        figures[label_id] = {key: results[key] for key in ("miou", "macc", "aacc", "iou")}
    assert json.dumps(figures[200]) == json.dumps(figures[0])
    warnings = [record.getMessage() for record in caplog.records if "not in the Cityscapes" in record.getMessage()]
    assert len(warnings) == 1 and str(label_file(unknown)) in warnings[0] and "labelIds 200" in warnings[0]


@pytest.mark.parametrize("command", ["evaluate", "train", "prepare"])
def test_missing_and_empty_dataset_roots_are_explained(command, checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for root, expected in ((tmp_path / "absent", "does not exist"), (empty, "has no gtFine/ folder (found: nothing)")):
        args = {
            "evaluate": ["evaluate", "--checkpoint", checkpoint, "--data", root, "--out", tmp_path / "r.json"],
            "train": ["train", write_config(tmp_path / "run.yaml", root), "--out", tmp_path / "run"],
            "prepare": ["prepare", "--root", root, "--out", tmp_path / "cache", "--size", "16x32"],
        }[command]
        code, err = cli(capsys, *args)
        assert code == 2 and str(root) in err and expected in err
    assert everything_under(tmp_path) == ["empty", "run.yaml"]  # no results, run folder or cache


# ------------------------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("data: {roots: x}\ntrain: {steps: 1}\n", [], "unknown key 'data.roots'; valid keys here: data.root"),
        ("train: {steps: many}\n", [], "key 'train.steps' expects an integer or null, found a string 'many'"),
        ("train: [steps: 1\n", [], "is not valid YAML"),
        ("- 1\n- 2\n", [], "the top level must be a mapping of keys to values, found a list"),
        ("train: 5\n", [], "train must be a mapping of keys to values, found an integer 5"),
        ("model: {name: vanilla-lstm}\ntrain: {steps: 1}\n", [], "model.name: unknown model 'vanilla-lstm'"),
        ("train: {steps: 1}\n", ["train.stepz=3"], "--set train.stepz=3: unknown key 'train.stepz'"),
        ("train: {steps: 1}\n", ["optim.lr=.nan"], "optim.lr: expected a finite number, found nan"),
        ("train: {steps: 1}\n", ["optim.grad_clip=.inf"], "optim.grad_clip: expected a finite number, found inf"),
        ("train: {steps: 1}\n", ["optim.weight_decay=-1"], "optim.weight_decay: expected >= 0, found -1.0"),
        ("train: {steps: 1}\n", ["optim.eps=0"], "optim.eps: expected a positive epsilon, found 0.0"),
        ("train: {steps: 1}\n", ["optim.final_lr_scale=-2"], "optim.final_lr_scale: expected >= 0"),
    ],
    ids=["unknown key", "wrong type", "not YAML", "a list", "section not a mapping", "unknown model",
         "--set unknown key", "NaN learning rate", "infinite clip", "negative weight decay", "zero epsilon",
         "negative final rate"],
)
def test_config_errors_name_the_key_and_the_file_and_start_nothing(text, overrides, expected, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    sets = [arg for override in overrides for arg in ("--set", override)]
    code, err = cli(capsys, "train", config, "--out", tmp_path / "run", *sets)
    assert code == 2 and expected in err
    assert str(config) in err or expected.startswith("--set")  # an unknown --set key is named as given
    assert everything_under(tmp_path) == ["run.yaml"]


def test_missing_or_unreadable_config_files_are_explained(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    code, err = cli(capsys, "train", missing)
    assert code == 2 and f"config file {missing} does not exist; see configs/ for examples" in err
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, err = cli(capsys, "train", binary)
    assert code == 2 and f"cannot read config file {binary}" in err and "codec can't decode" in err
    code, err = cli(capsys, "train", tmp_path)
    assert code == 2 and f"cannot read config file {tmp_path}" in err and "Is a directory" in err


def test_resume_without_a_loadable_checkpoint_is_explained(tmp_path, capsys):
    code, err = cli(capsys, "train", "--resume", tmp_path / "absent")
    assert code == 2 and f"--resume {tmp_path / 'absent'}: no such run directory" in err
    run = tmp_path / "run"
    run.mkdir()
    code, err = cli(capsys, "train", "--resume", run)
    assert code == 2 and "the directory holds no checkpoint (last.pt, best.pt or step-*.pt)" in err
    (run / "last.pt").write_bytes(b"junk")
    (run / "best.pt").write_bytes(b"")
    code, err = cli(capsys, "train", "--resume", run)
    assert code == 2 and f"--resume {run}: no checkpoint loads" in err
    assert f"{run / 'last.pt'} is truncated or corrupt" in err and f"{run / 'best.pt'} is truncated or corrupt" in err


# ---------------------------------------------------------------------------------- bad command arguments


@pytest.mark.parametrize(
    "args, expected",
    [
        (["prepare", "--root", "{root}", "--out", "{tmp}/cache", "--size", "big"], "--size: expected HEIGHTxW"),
        (["prepare", "--root", "{root}", "--out", "{tmp}/cache", "--size", "0x32"], "--size: expected HEIGHTxW"),
        (["synth", "--out", "{tmp}/synth", "--size", "4x4"], "--size 4x4 is too small; use at least 8x8"),
        (["synth", "--out", "{tmp}/synth", "--sequences", "0"], "--sequences and --frames must be at least 1"),
        (["evaluate", "--checkpoint", "{checkpoint}", "--data", "{root}", "--size", "wide"], "--size: expected HEIGHT"),
        (["evaluate", "--checkpoint", "{checkpoint}", "--data", "{root}", "--num-frames", "40"], "do not fit the data"),
    ],
    ids=["prepare size not a size", "prepare zero size", "synth tiny size", "synth no sequences",
         "evaluate size not a size", "evaluate window too long"],
)
def test_bad_arguments_are_explained_and_start_nothing(args, expected, checkpoint, dense_tree, tmp_path, capsys):
    values = {"root": dense_tree.root, "tmp": tmp_path, "checkpoint": checkpoint}
    code, err = cli(capsys, *[arg.format(**values) for arg in args])
    assert code == 2 and expected in err
    assert everything_under(tmp_path) == []


# ------------------------------------------------------------------------------- a fresh process, no hangs


@pytest.mark.parametrize("case", ["train with a DataLoader worker", "prepare with 2 worker processes"])
def test_an_error_in_a_worker_process_ends_the_command_promptly_with_only_its_message(case, tmp_path):
    """Run in a fresh process, where a hang would show as a timeout: PyTorch's DataLoader re-raises a worker's
    error with the worker's traceback as its message, which the CLI must not print."""
    tree = small_tree(tmp_path / "data")
    split = "train" if case.startswith("train") else "val"
    broken = frame_file(tree, split, 2)
    corrupt_png(broken)
    if case.startswith("train"):
        config = write_config(tmp_path / "run.yaml", tree.root, data={"num_workers": 1})
        args = ["train", config, "--out", tmp_path / "run"]
    else:
        args = ["prepare", "--root", tree.root, "--out", tmp_path / "cache", "--size", "16x32", "--workers", "2"]
    done = subprocess.run([sys.executable, "-m", "vidseg", *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"vidseg {args[0]}: error: cannot decode {broken} (cannot identify image file '{broken}'); the file is "
        "truncated or not an image: extract it again from the dataset archive, or remove its sample"
    )
    assert "Traceback" not in done.stderr and "Caught VidsegError" not in done.stderr


# ------------------------------------------------------------------------------- property-based: any bytes

VALID_PNG = png_bytes(np.random.default_rng(5).integers(0, 256, (12, 20, 3), dtype=np.uint8))


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """``original`` cut short and with a few bytes overwritten."""
    data = bytearray(original[: draw(st.integers(0, len(original)))])
    for _ in range(draw(st.integers(0, 6))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


ANY_IMAGE_BYTES = st.one_of(
    st.binary(max_size=300),
    damaged(VALID_PNG),
    st.builds(png_header, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@settings(FUZZ, max_examples=150)
@given(data=ANY_IMAGE_BYTES)
def test_any_bytes_as_an_image_give_an_rgb_array_or_a_vidseg_error(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / "frame.png"
    path.write_bytes(data)
    for read in (read_image, lambda p: next(iter(open_frames(p)))):
        try:
            frame = read(path)
        except VidsegError as error:
            assert str(path) in str(error)
        else:
            assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    try:
        ids = read_label_ids(path)
    except VidsegError as error:
        assert str(path) in str(error)
    else:
        assert ids.dtype == np.uint8 and ids.ndim == 2


@pytest.fixture(scope="module")
def valid_mp4(tmp_path_factory) -> bytes:
    return write_mp4(tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=4).read_bytes()


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_any_bytes_as_a_video_give_frames_or_a_vidseg_error(data, valid_mp4, tmp_path_factory):
    content = data.draw(st.one_of(st.binary(max_size=300), damaged(valid_mp4)))
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / "clip.mp4"
    path.write_bytes(content)
    try:
        frames = list(open_frames(path))
    except VidsegError as error:
        assert str(path) in str(error)
    else:
        assert frames and all(frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8 for frame in frames)


# -------------------------------------------------------------------------------- property-based: any size

SIDE = st.integers(1, 40)


@settings(FUZZ, max_examples=60)
@given(height=SIDE, width=SIDE, out_height=SIDE, out_width=SIDE, crop=st.booleans(), seed=st.integers(0, 2**16))
def test_clip_transform_gives_the_asked_size_and_only_known_labels_for_any_size(
    height, width, out_height, out_width, crop, seed
):
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 19, (2, height, width), dtype=torch.uint8, generator=generator)
    transform = ClipTransform((out_height, out_width), scale_range=(0.5, 2.0) if crop else None, crop=crop,
                              hflip=True)
    out_frames, out_labels = transform(frames, labels, generator)
    assert out_frames.shape == (2, 3, out_height, out_width) and out_frames.dtype == torch.uint8
    assert out_labels.shape == (2, out_height, out_width)
    assert set(out_labels.unique().tolist()) <= set(labels.unique().tolist()) | {255}


@pytest.fixture(scope="module")
def segmenter(checkpoint) -> Segmenter:
    return Segmenter(checkpoint)


@settings(FUZZ, max_examples=20)
@given(height=SIDE, width=SIDE, working=st.one_of(st.none(), st.tuples(SIDE, SIDE)), seed=st.integers(0, 2**16))
def test_segmenter_labels_every_pixel_of_any_small_frame(segmenter, height, width, working, seed):
    frame = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    segmenter.reset()
    segmenter.size = working
    labels = segmenter.segment_frame(frame)
    assert labels.shape == (height, width) and labels.dtype == np.uint8 and labels.max() < 19


CONFIG_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(), st.text(max_size=6),
    st.lists(st.one_of(st.integers(-5, 50), st.floats(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
CONFIG_KEYS = {
    section: [*keys, "unknown_key"]
    for section, keys in {
        "model": ["name"],
        "data": ["size", "scale", "num_frames", "gt_position", "frame_stride", "batch_size", "label_set"],
        "optim": ["lr", "betas", "eps", "weight_decay", "warmup_fraction", "grad_clip", "accumulate", "schedule"],
        "train": ["steps", "epochs", "minutes", "checkpoint_every", "amp", "init_temporal"],
        "eval": ["num_frames", "gt_position", "max_samples", "every_steps"],
    }.items()
}


@settings(FUZZ, max_examples=300)
@given(
    raw=st.fixed_dictionaries(
        {}, optional={
            section: st.one_of(st.dictionaries(st.sampled_from(keys), CONFIG_VALUES, max_size=4), CONFIG_VALUES)
            for section, keys in CONFIG_KEYS.items()
        }
    )
)
def test_any_config_is_accepted_or_refused_with_a_vidseg_error(raw):
    try:
        config = config_from_dict(raw, source="fuzz.yaml")
    except VidsegError as error:
        assert str(error).startswith("fuzz.yaml")
    else:
        numbers = [config.optim.lr, config.optim.eps, config.optim.weight_decay, *config.data.scale]
        assert all(math.isfinite(value) for value in numbers) and config.optim.lr > 0
