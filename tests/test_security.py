"""Security and data safety (issue 12): checkpoints that cannot run code, outputs that never destroy inputs,
one writer per run directory, resumed settings that are applied or refused, sizes bounded before allocation,
SIGTERM handled like SIGINT. docs/reliability.md lists each case with its test."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vidseg.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from vidseg.cli import main
from vidseg.data.cityscapes import CityscapesSequences
from vidseg.data.testing import make_cityscapes_tree
from vidseg.data.transforms import MEAN, STD
from vidseg.errors import VidsegError
from vidseg.models import build_model
from vidseg.segment import Segmenter

MODEL = "vanilla-none-small-shallow"


def cli(capsys, *args) -> tuple[int, str]:
    """Run ``vidseg ARGS`` in this process; return the exit status and stderr, which must hold no traceback."""
    code = main([str(arg) for arg in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def payload() -> dict:
    torch.manual_seed(0)
    return {
        "model_name": MODEL, "num_classes": 19, "label_set": "cityscapes",
        "model": build_model(MODEL, num_classes=19).state_dict(),
        "normalization": {"mean": list(MEAN), "std": list(STD)},
    }


def write_config(path: Path, root: Path, **sections) -> Path:
    raw = {
        "model": {"name": MODEL},
        "data": {"root": str(root), "size": [16, 32], "num_frames": 2, "hflip": False},
        "train": {"steps": 2, "tensorboard": False, "log_every": 1, "device": "cpu"},
        "eval": {"every_epochs": 0},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


def write_frames(folder: Path, count: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(folder / f"{index:04d}.png")


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or ``path`` itself) with its bytes."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ------------------------------------------------------------------------------- checkpoints that run code


class Payload:
    """Unpickling this calls ``Path.write_text(marker, ...)``: what an attacker's code would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (self.marker, "the checkpoint ran code")


@pytest.fixture
def booby_trapped(tmp_path) -> tuple[Path, Path]:
    """A real vidseg training checkpoint (and its run's config) with a pickled payload added."""
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    run.mkdir()
    path = run / "last.pt"
    trap = {"format": FORMAT, **payload(), "config": {}, "optimizer": {}, "scheduler": {}, "step": 1, "epoch": 0,
            "rng": {}, "extra": Payload(marker)}
    torch.save(trap, path)
    # The payload is live: an unrestricted load runs it.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "the checkpoint ran code"
    marker.unlink()
    return path, marker


def assert_refused(code: int, err: str, marker: Path) -> None:
    assert code == 2
    assert "refusing to load checkpoint" in err and "builtins.getattr" in err, err
    assert not marker.exists()


def test_evaluate_refuses_a_checkpoint_that_runs_code(booby_trapped, dense_tree, tmp_path, capsys):
    path, marker = booby_trapped
    code, err = cli(capsys, "evaluate", "--checkpoint", path, "--data", dense_tree.root, "--out", tmp_path / "r.json")
    assert_refused(code, err, marker)


def test_segment_refuses_a_checkpoint_that_runs_code(booby_trapped, tmp_path, capsys):
    path, marker = booby_trapped
    write_frames(tmp_path / "frames")
    code, err = cli(capsys, "segment", tmp_path / "frames", "--checkpoint", path, "--masks", tmp_path / "masks",
                    "--no-progress")
    assert_refused(code, err, marker)


def test_export_refuses_a_checkpoint_that_runs_code(booby_trapped, tmp_path, capsys):
    path, marker = booby_trapped
    code, err = cli(capsys, "export", "--checkpoint", path, "--out", tmp_path / "m.onnx", "--no-check")
    assert_refused(code, err, marker)


def test_train_resume_refuses_a_checkpoint_that_runs_code(booby_trapped, dense_tree, capsys):
    path, marker = booby_trapped
    write_config(path.parent / "config.yaml", dense_tree.root)
    code, err = cli(capsys, "train", "--resume", path.parent)
    assert_refused(code, err, marker)


def test_train_init_from_refuses_a_checkpoint_that_runs_code(booby_trapped, dense_tree, tmp_path, capsys):
    path, marker = booby_trapped
    config = write_config(tmp_path / "c.yaml", dense_tree.root, train={"init_from": str(path)})
    code, err = cli(capsys, "train", config, "--out", tmp_path / "new")
    assert_refused(code, err, marker)


def test_segmenter_refuses_a_checkpoint_that_runs_code(booby_trapped):
    path, marker = booby_trapped
    with pytest.raises(VidsegError, match="refusing to load checkpoint .*builtins.getattr"):
        Segmenter(path)
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_data(dense_tree, tmp_path):
    config = write_config(tmp_path / "c.yaml", dense_tree.root)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "run" / "last.pt") == []
    torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    with pytest.raises(TypeError, match=r"checkpoint\['metrics'\]\['miou'\] is a numpy.float64"):
        save_checkpoint(tmp_path / "x.pt", {**payload(), "metrics": {"miou": np.float64(0.5)}})
    assert not (tmp_path / "x.pt").exists()


def test_checkpoints_of_earlier_versions_still_load(tmp_path):
    """Earlier versions stored the RNG states as pickled NumPy arrays and tuples; the restricted load allows
    exactly NumPy's array constructors, and resuming restores those states."""
    from vidseg.train import restore_rng_states, rng_states

    legacy = {"python": __import__("random").getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    torch.save({"format": FORMAT, **payload(), "rng": legacy}, tmp_path / "old.pt")
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    expected = np.random.random(3)
    restore_rng_states(loaded["rng"])
    assert np.array_equal(np.random.random(3), expected)
    # And the new form restores the same draws.
    states = rng_states()
    expected = (np.random.random(3), __import__("random").random(), torch.rand(2))
    restore_rng_states(states)
    assert np.array_equal(np.random.random(3), expected[0]) and __import__("random").random() == expected[1]
    assert torch.equal(torch.rand(2), expected[2])


def test_checkpoints_written_under_numpy_1_still_load(tmp_path, monkeypatch):
    """NumPy 1 pickles its array constructor as numpy.core.multiarray._reconstruct (NumPy 2: numpy._core)."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    monkeypatch.setattr(multiarray._reconstruct, "__module__", "numpy.core.multiarray")
    torch.save({"format": FORMAT, **payload(), "rng": {"numpy": np.random.get_state()}}, tmp_path / "np1.pt")
    monkeypatch.undo()
    assert "numpy.core.multiarray._reconstruct" in torch.serialization.get_unsafe_globals_in_checkpoint(
        tmp_path / "np1.pt"
    )
    keys = load_checkpoint(tmp_path / "np1.pt")["rng"]["numpy"][1]
    assert isinstance(keys, np.ndarray) and keys.dtype == np.uint32 and keys.shape == (624,)


# ------------------------------------------------------------------------------ outputs that are inputs


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "run" / "best.pt"
    path.parent.mkdir()
    save_checkpoint(path, payload())
    return path


def test_segment_masks_into_its_input_frames_is_refused(checkpoint, tmp_path, capsys):
    frames = tmp_path / "frames"
    write_frames(frames)
    before = snapshot(frames)
    for masks in (frames, tmp_path / "frames" / ".." / "frames"):
        code, err = cli(capsys, "segment", frames, "--checkpoint", checkpoint, "--masks", masks, "--overwrite",
                        "--no-progress")
        assert code == 2 and "an input of this command" in err, err
    (tmp_path / "link").symlink_to(frames)
    code, err = cli(capsys, "segment", str(frames / "*.png"), "--checkpoint", checkpoint, "--masks",
                    tmp_path / "link", "--overwrite", "--no-progress")
    assert code == 2 and "an input of this command" in err, err
    assert snapshot(frames) == before


def test_evaluate_onto_its_checkpoint_or_the_dataset_metadata_is_refused(checkpoint, tmp_path, capsys):
    tree = make_cityscapes_tree(tmp_path / "data", sequences=1, dense_frames=4, cities=("ulm",))
    meta = tree.root / "synthcity.json"
    before = (checkpoint.read_bytes(), meta.read_bytes())
    for out in (checkpoint, meta, tree.root / "gtFine" / ".." / "synthcity.json"):
        code, err = cli(capsys, "evaluate", "--checkpoint", checkpoint, "--data", tree.root, "--num-frames", "2",
                        "--no-tc", "--out", out, "--overwrite")
        assert code == 2 and "an input of this command" in err, err
    assert (checkpoint.read_bytes(), meta.read_bytes()) == before


def test_evaluate_never_silently_replaces_a_markdown_file_the_user_made(checkpoint, dense_tree, tmp_path, capsys):
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    args = ["evaluate", "--checkpoint", checkpoint, "--data", dense_tree.root, "--num-frames", "2", "--no-tc",
            "--max-samples", "1", "--out", tmp_path / "notes.json"]
    code, err = cli(capsys, *args)
    assert code == 2 and "notes.md exists and was not written by `vidseg evaluate`" in err, err
    assert notes.read_text() == "my notes\n" and not (tmp_path / "notes.json").exists()
    # Its own results are replaced on the next evaluation; a user's file only when asked to.
    assert cli(capsys, *args, "--overwrite")[0] == 0 and "| protocol |" in notes.read_text()
    assert cli(capsys, *args)[0] == 0


def test_export_onto_its_checkpoint_is_refused_also_through_a_hard_link(checkpoint, tmp_path, capsys):
    before = checkpoint.read_bytes()
    os.link(checkpoint, tmp_path / "linked.onnx")
    for out in (checkpoint, tmp_path / "linked.onnx"):
        code, err = cli(capsys, "export", "--checkpoint", checkpoint, "--out", out, "--overwrite", "--no-check")
        assert code == 2 and "an input of this command" in err, err
    assert checkpoint.read_bytes() == before and (tmp_path / "linked.onnx").read_bytes() == before


def test_train_and_prepare_never_write_over_their_inputs(tmp_path, capsys):
    tree = make_cityscapes_tree(tmp_path / "data", sequences=1, dense_frames=4, cities=("ulm",))
    before = snapshot(tree.root)
    run = tmp_path / "run"
    run.mkdir()
    config = write_config(run / "config.yaml", tree.root)
    config_bytes = config.read_bytes()
    code, err = cli(capsys, "train", config, "--out", run)
    assert code == 2 and "CONFIG" in err and config.read_bytes() == config_bytes, err
    code, err = cli(capsys, "prepare", "--root", tree.root, "--out", tree.root, "--size", "16x32")
    assert code == 2 and "an input of this command" in err, err
    code, err = cli(capsys, "prepare", "--root", tree.root, "--out", tree.root / "gtFine", "--size", "16x32")
    assert code == 2 and "an input of this command" in err, err
    assert snapshot(tree.root) == before
    # A cache inside the dataset root, beside what it caches, is fine.
    assert cli(capsys, "prepare", "--root", tree.root, "--out", tree.root / "cache", "--size", "16x32")[0] == 0


# ---------------------------------------------------------------------------------- one writer per run


def test_a_second_training_on_a_held_run_directory_exits_2_and_the_first_finishes(tmp_path, dense_tree, capsys):
    steps = 40
    config = write_config(tmp_path / "c.yaml", dense_tree.root, train={"steps": steps, "checkpoint_every": 5})
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "vidseg", "train", str(config), "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    log = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count('"train"') >= 1):
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the first training made no progress"
        time.sleep(0.02)
    for args in (["--resume", run], [config, "--out", run]):
        code, err = cli(capsys, "train", *args)
        assert code == 2 and f"process {first.pid} is training it" in err, err
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == list(range(1, steps + 1))
    assert [e["event"] for e in events].count("stop") == 1
    assert load_checkpoint(run / "last.pt")["step"] == steps
    assert not list(run.glob(".*.pid*"))
    # The kernel released the lock with the process: the run can be continued.
    code, err = cli(capsys, "train", "--resume", run, "--set", f"train.steps={steps + 1}")
    assert code == 0, err


# ------------------------------------------------------------------------------------- resumed settings


def test_resume_applies_a_changed_learning_rate_and_refuses_a_changed_model_input(tmp_path, dense_tree, capsys):
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", dense_tree.root, optim={"lr": 1e-3})
    assert cli(capsys, "train", config, "--out", run)[0] == 0
    code, err = cli(capsys, "train", "--resume", run, "--set", "optim.lr=0.5", "--set", "train.steps=3")
    assert code == 0, err
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["lr"] for e in events if e["event"] == "train"] == [1e-3, 1e-3, 0.5]
    state = load_checkpoint(run / "last.pt")
    assert [group["lr"] for group in state["optimizer"]["param_groups"]] == [0.5]
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.5

    before = snapshot(run)
    for change in ("data.size=[32,64]", "data.batch_size=2", "loss.frames=labelled", "optim.accumulate=2"):
        code, err = cli(capsys, "train", "--resume", run, "--set", change, "--set", "train.steps=4")
        key = change.split("=")[0]
        assert code == 2 and f"{key} " in err and "cannot change in a resumed run" in err, err
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------- sizes and metadata


def test_huge_sizes_are_refused_before_any_allocation(checkpoint, dense_tree, tmp_path, capsys):
    write_frames(tmp_path / "frames")
    config = write_config(tmp_path / "c.yaml", dense_tree.root)
    commands = {
        "evaluate": ["evaluate", "--checkpoint", checkpoint, "--data", dense_tree.root, "--out", tmp_path / "r.json"],
        "segment": ["segment", tmp_path / "frames", "--checkpoint", checkpoint, "--masks", tmp_path / "m"],
        "synth": ["synth", "--out", tmp_path / "synth"],
        "prepare": ["prepare", "--root", dense_tree.root, "--out", tmp_path / "cache"],
    }
    for name, args in commands.items():
        with pytest.raises(SystemExit) if name == "segment" else _no_exit():
            code, err = cli(capsys, *args, "--size", "100000x100000")
        if name == "segment":  # argparse checks --size of segment: exit status 2 with the message
            err = capsys.readouterr().err
            code = 2
        assert code == 2 and "10,000,000,000 pixels" in err and "67,108,864" in err, (name, err)
    code, err = cli(capsys, "train", config, "--out", tmp_path / "new", "--set", "data.size=[100000,100000]")
    assert code == 2 and "data.size" in err and "67,108,864" in err, err
    code, err = cli(capsys, "synth", "--out", tmp_path / "synth", "--size", "2048x4096", "--frames", "1000")
    assert code == 2 and "with 1,000 frames" in err, err
    assert not (tmp_path / "new").exists() and not (tmp_path / "synth").exists()


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda meta: meta.update(sequences="lies"), "sequences: expected an object"),
        (lambda meta: meta["sequences"]["train"]["ulm_000000"].update(corruption=[0, 10**9, 0, 0]),
         r"sequences.train.ulm_000000.corruption\[1\]: expected a code in 0..2"),
        (lambda meta: meta["sequences"]["train"]["ulm_000000"].update(corruption="0000"),
         "sequences.train.ulm_000000.corruption: expected a list"),
        (lambda meta: meta.update(frames_per_sequence=-3), "frames_per_sequence: expected an integer"),
    ],
)
def test_synthcity_metadata_is_validated(tmp_path, change, message):
    tree = make_cityscapes_tree(tmp_path / "data", sequences=1, dense_frames=4, cities=("ulm",))
    meta_path = tree.root / "synthcity.json"
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(VidsegError, match=rf"synthcity.json: {message}"):
        CityscapesSequences(tree.root, "train", num_frames=2)


# -------------------------------------------------------------------------------------------------- SIGTERM


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vidseg", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def terminate_when(process: subprocess.Popen, condition, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the command made no progress"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    # Generous: under load, removing what a run wrote before the signal can take long; a lost signal still fails
    # (the command would finish with 0, or hang past this).
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 143, stderr[-2000:]
    assert "terminated by SIGTERM" in stderr and "Traceback" not in stderr, stderr[-2000:]
    return stderr


def test_sigterm_during_synth_removes_its_partial_dataset(tmp_path):
    out = tmp_path / "synth"
    process = start("synth", "--out", str(out), "--sequences", "20000", "--frames", "8", "--size", "32x64")
    terminate_when(process, lambda: any(p.name.startswith(".synth.pid") for p in tmp_path.iterdir()))
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_segment_removes_its_temporaries_and_a_later_run_removes_dead_ones(
    checkpoint, tmp_path, capsys
):
    frames = tmp_path / "frames"
    write_frames(frames, count=400)
    masks, video = tmp_path / "out" / "masks", tmp_path / "out" / "video.mp4"
    process = start("segment", str(frames), "--checkpoint", str(checkpoint), "--masks", str(masks), "--out",
                    str(video), "--no-progress")

    def writing() -> bool:
        return any(p.is_dir() and any(p.iterdir()) for p in masks.parent.glob(".masks.pid*"))

    terminate_when(process, lambda: masks.parent.is_dir() and writing())
    assert list(masks.parent.iterdir()) == []

    # What a SIGKILLed run leaves (its pid is dead) goes; what a live process is writing stays.
    dead, live = dead_pid(), os.getpid()
    leftovers = [masks.parent / f".masks.pid{dead}.x1.tmp", masks.parent / f".video.pid{dead}.x2.tmp.mp4"]
    kept = masks.parent / f".video.pid{live}.x3.tmp.mp4"
    leftovers[0].mkdir()
    (leftovers[0] / "0000.png").write_bytes(b"")
    leftovers[1].write_bytes(b"")
    kept.write_bytes(b"")
    write_frames(small := tmp_path / "small", count=2)
    code, err = cli(capsys, "segment", small, "--checkpoint", checkpoint, "--masks", masks, "--out", video,
                    "--no-progress")
    assert code == 0, err
    assert sorted(p.name for p in masks.parent.iterdir()) == sorted([kept.name, "masks", "video.mp4"])


def test_sigterm_during_evaluate_leaves_no_temporaries_and_no_results(checkpoint, tmp_path):
    tree = make_cityscapes_tree(tmp_path / "data", cities=("ulm",), sequences=12, dense_frames=6, decoys=False)
    predictions, out = tmp_path / "predictions", tmp_path / "results.json"
    # Upsampled 8x so that each window takes long enough to be caught mid-run.
    process = start("evaluate", "--checkpoint", str(checkpoint), "--data", str(tree.root), "--num-frames", "2",
                    "--no-tc", "--size", "256x512", "--save-predictions", str(predictions), "--out", str(out))
    terminate_when(process, lambda: predictions.is_dir() and any(predictions.glob("*_pred.png")))
    assert not out.exists() and not out.with_suffix(".md").exists()
    assert not [p for p in tmp_path.rglob(".*") if ".pid" in p.name]


def test_synth_stops_on_a_sigterm_whose_exception_was_swallowed(tmp_path, monkeypatch):
    """The CLI's handler raises Terminated where SIGTERM lands, and a C extension can swallow that exception; the
    record it leaves still stops synth before the next sequence, and the partial dataset goes."""
    from vidseg.data import synthcity
    from vidseg.errors import Terminated, TerminationRequest

    monkeypatch.setattr(TerminationRequest, "requested", True)
    with pytest.raises(Terminated):
        synthcity.generate(tmp_path / "synth", sequences=3, frames=2, size=(16, 32), val_sequences=1)
    assert list(tmp_path.iterdir()) == []
