"""Crash safety: SIGKILL mid-epoch then --resume ends bitwise equal to an uninterrupted run; SIGTERM writes a
checkpoint and exits; a truncated last.pt gives a clear error and resume falls back to an older checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import quiet

from vidseg.checkpoint import load_checkpoint
from vidseg.cli import main as cli_main
from vidseg.config import load_config
from vidseg.errors import VidsegError
from vidseg.train import find_resume_checkpoint, train


def write_config(path: Path, root: Path, exact: bool = True, **train) -> Path:
    """A run whose every random choice matters: random windows and crops, accumulation (with a short last group:
    36 samples make 9 micro-batches of 4 and 5 steps per epoch), warm-up + cosine, clipping, and with ``exact``
    class weights counted from the labels and deterministic algorithms."""
    raw = {
        "model": {"name": "vanilla-crnn-small-shallow"},
        "data": {"root": str(root), "size": [16, 32], "num_frames": 3, "batch_size": 4, "scale": [0.8, 1.25]},
        "loss": {"frames": "labelled", "class_weights": "sqrt_inverse_frequency" if exact else "none"},
        "optim": {"lr": 3e-3, "schedule": "cosine", "warmup_fraction": 0.2, "accumulate": 2, "grad_clip": 1.0},
        "train": {"steps": 7, "checkpoint_every": 3, "deterministic": exact, "tensorboard": False, **train},
        "eval": {"every_epochs": 0},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def vidseg_train(*args: str) -> subprocess.Popen:
    """``vidseg train ARGS`` in a new process with one compute thread: a multi-threaded process on a busy shared
    machine spends its time waiting for its threads, and runs compared bitwise must use the same setting."""
    return subprocess.Popen(
        [sys.executable, "-m", "vidseg", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish(process: subprocess.Popen) -> int:
    return finish_with_output(process)[0]


def finish_with_output(process: subprocess.Popen) -> tuple[int, str]:
    """The exit status and what the process printed (the training log goes to stdout)."""
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode in (0, 143), stderr[-3000:]
    return process.returncode, stdout


def wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training exited early ({process.returncode}): {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("training made no progress in time")
        time.sleep(0.01)


def test_sigkill_mid_epoch_then_resume_gives_bitwise_identical_weights(tmp_path, dense_tree):
    config = write_config(tmp_path / "run.yaml", dense_tree.root, log_every=1)
    run = tmp_path / "killed"
    uninterrupted = vidseg_train(str(config), "--out", str(tmp_path / "uninterrupted"))
    killed = vidseg_train(str(config), "--out", str(run))
    wait_for((run / "last.pt").exists, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    checkpoint = load_checkpoint(run / "last.pt")
    # Killed mid-epoch, after the first periodic checkpoint, before the end.
    assert 0 < checkpoint["rng"]["data_order"]["batches_done"] < 9 and checkpoint["step"] < 7
    start = checkpoint["step"]

    code, log = finish_with_output(vidseg_train("--resume", str(run)))
    assert code == 0
    # A resume that silently started over would end with the same weights (the run is deterministic), so the
    # resumed process itself must say where it starts and then train only the steps after it.
    assert f"resuming {run} at step {start}\n" in log
    assert [int(line.split()[1]) for line in log.splitlines() if line.startswith("step ")] == list(range(start + 1, 8))
    assert finish(uninterrupted) == 0
    expected = load_checkpoint(tmp_path / "uninterrupted" / "last.pt")
    resumed = load_checkpoint(run / "last.pt")
    assert (resumed["step"], resumed["epoch"]) == (expected["step"], expected["epoch"]) == (7, 1)
    for name, tensor in expected["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    for index, state in expected["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(resumed["optimizer"]["state"][index][key], value), (index, key)
    assert resumed["scheduler"] == expected["scheduler"]
    losses = [
        [
            (e["step"], e["loss"])
            for e in map(json.loads, (directory / "metrics.jsonl").read_text().splitlines())
            if e["event"] == "train"
        ]
        for directory in (tmp_path / "uninterrupted", run)
    ]
    assert losses[0] == losses[1]  # the killed run's events after its checkpoint were dropped on resume


def test_sigterm_writes_a_checkpoint_and_exits_resumable(tmp_path, dense_tree):
    config = write_config(
        tmp_path / "run.yaml", dense_tree.root, exact=False, steps=10_000, checkpoint_every=0, log_every=1
    )
    run = tmp_path / "run"
    process = vidseg_train(str(config), "--out", str(run))
    log = run / "metrics.jsonl"
    wait_for(lambda: log.exists() and log.read_text().count('"train"') >= 2, process)
    process.send_signal(signal.SIGTERM)
    assert finish(process) == 143
    checkpoint = load_checkpoint(run / "last.pt")
    stop = json.loads(log.read_text().splitlines()[-1])
    assert stop == {"event": "stop", "step": checkpoint["step"], "epoch": checkpoint["epoch"], "reason": "sigterm"}
    assert checkpoint["step"] >= 2
    assert not list(run.glob(".*.tmp*"))


def test_truncated_checkpoint_gives_a_clear_error_and_resume_falls_back(tmp_path, dense_tree):
    config = load_config(
        write_config(
            tmp_path / "run.yaml", dense_tree.root, exact=False, steps=2, checkpoint_every=1, keep_checkpoints=True
        )
    )
    run = tmp_path / "run"
    train(config, run, log=quiet)
    last = run / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(VidsegError, match=r"last\.pt is truncated or corrupt"):
        load_checkpoint(last)

    messages = []
    path, state = find_resume_checkpoint(run, messages.append)
    assert path.name == "step-0000002.pt" and state.step == 2
    assert "last.pt is truncated or corrupt" in messages[0] and "falling back to" in messages[1]

    config.train.steps = 3
    result = train(config, run, resume=True, log=quiet)
    assert result.step == 3 and load_checkpoint(last)["step"] == 3

    for checkpoint in run.glob("*.pt"):
        checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(VidsegError, match="no checkpoint loads"):
        train(config, run, resume=True, log=quiet)
    os.remove(run / "config.yaml")
    assert cli_main(["train", "--resume", str(tmp_path / "absent")]) == 2
