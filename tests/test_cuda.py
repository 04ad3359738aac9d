"""The CUDA code paths: fp16 autocast with GradScaler and bf16 autocast through the training loop, pinned host
memory, checkpoints that move between GPU and CPU through ``--resume``, the Segmenter on ``cuda`` / ``cuda:N``
against the CPU, the memory benchmark's CUDA peak, and NCCL DDP where two GPUs exist.

Every test marked ``cuda`` skips where ``torch.cuda.is_available()`` is false (CPU-only CI); run them on a GPU
machine with ``python -m pytest -m cuda`` (``benchmarks/gpu_check.py`` does, and records the outcome). The
unmarked tests at the end check the device-selection errors on any machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import quiet

from vidseg import distributed
from vidseg.checkpoint import load_checkpoint, save_checkpoint
from vidseg.config import config_from_dict
from vidseg.data.transforms import MEAN, STD
from vidseg.errors import VidsegError
from vidseg.models import build_model
from vidseg.segment import Segmenter
from vidseg.train import Trainer, resume_config

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = "needs a CUDA GPU: torch.cuda.is_available() is False (CPU-only machine or CPU build of PyTorch)"


def needs_cuda(test):
    """Mark ``test`` as a CUDA test that skips, saying why, where PyTorch sees no GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)(test))



def synth_config(root, device: str, amp: str, steps: int, **train):
    """vanilla-crnn-small-shallow on SynthCity 32x64, 3-frame windows, batch 2, loss on every labelled frame."""
    return config_from_dict(
        {
            "model": {"name": "vanilla-crnn-small-shallow"},
            "data": {"root": str(root), "size": [32, 64], "num_frames": 3, "batch_size": 2, "hflip": False},
            "loss": {"frames": "labelled"},
            "optim": {"lr": 3e-3},
            "train": {"steps": steps, "device": device, "amp": amp, "log_every": 1, "tensorboard": False, **train},
            "eval": {"every_epochs": 0},
        },
        source="test config",
    )


def make_trainer(config, run_dir: Path, resume: bool = False) -> Trainer:
    return Trainer(config, run_dir, distributed.init(config.train.device), resume=resume, log=quiet)


def train_losses(run_dir: Path) -> dict[int, float]:
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"] for e in events if e["event"] == "train"}


class Spy:
    """Records what the Trainer's micro-steps saw: the output dtype of the model's head under autocast, and
    whether the batch arrived in pinned (page-locked) host memory."""

    def __init__(self, trainer: Trainer):
        self.head_dtypes: set[torch.dtype] = set()
        self.pinned: list[bool] = []
        trainer.model.head.register_forward_hook(lambda module, args, output: self.head_dtypes.add(output.dtype))
        micro_step = trainer.micro_step

        def spied(batch, group_size, sync):
            self.pinned.append(batch["frames"].is_pinned() and batch["labels"].is_pinned())
            return micro_step(batch, group_size, sync)

        trainer.micro_step = spied  # type: ignore[method-assign]


def check_amp_training(root, tmp_path: Path, amp: str, dtype: torch.dtype) -> Trainer:
    """Train 30 steps on the GPU under ``amp``; the loss must stay finite and fall."""
    trainer = make_trainer(synth_config(root, "cuda", amp, steps=30), tmp_path / amp)
    spy = Spy(trainer)
    result = trainer.run()
    assert result.step == 30 and result.stopped_by == "budget"
    assert spy.head_dtypes == {dtype}, "the forward pass did not run under autocast in the requested precision"
    assert spy.pinned and all(spy.pinned), "CUDA training must load batches into pinned host memory"
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in trainer.model.parameters())
    losses = train_losses(tmp_path / amp)
    assert sorted(losses) == list(range(1, 31)) and all(math.isfinite(v) for v in losses.values())
    first, last = np.mean([losses[s] for s in range(1, 6)]), np.mean([losses[s] for s in range(26, 31)])
    assert last < 0.8 * first, f"{amp} training did not lower the loss: first 5 steps {first:.4f}, last 5 {last:.4f}"
    for parameter in trainer.model.parameters():
        assert torch.isfinite(parameter).all()
    return trainer


@needs_cuda
def test_fp16_autocast_with_grad_scaler_lowers_the_loss_and_stays_finite(tmp_path, synthcity_root):
    trainer = check_amp_training(synthcity_root, tmp_path, "fp16", torch.float16)
    assert isinstance(trainer.scaler, torch.amp.GradScaler) and trainer.scaler.is_enabled()
    scale = trainer.scaler.get_scale()
    assert math.isfinite(scale) and scale > 0
    saved = load_checkpoint(tmp_path / "fp16" / "last.pt")
    assert saved["scaler"] is not None and saved["scaler"]["scale"] == scale, "the scaler state must be saved"


@needs_cuda
def test_bf16_autocast_lowers_the_loss_on_the_gpu(tmp_path, synthcity_root):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 support")
    trainer = check_amp_training(synthcity_root, tmp_path, "bf16", torch.bfloat16)
    assert trainer.scaler is None, "bf16 needs no loss scaling"


def assert_resumed_state_equals_checkpoint(trainer: Trainer, payload: dict, device_type: str) -> None:
    for name, tensor in trainer.model.state_dict().items():
        assert tensor.device.type == device_type, name
        assert torch.equal(tensor.cpu(), payload["model"][name].cpu()), name
    saved_state = payload["optimizer"]["state"]
    parameters = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(trainer.optimizer.state) == len(saved_state) == len(parameters)
    for index, parameter in enumerate(parameters):
        state = trainer.optimizer.state[parameter]
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].device == parameter.device, f"Adam {key} must follow its parameter to {device_type}"
            assert torch.equal(state[key].cpu(), saved_state[index][key].cpu())
    assert trainer.progress.step == payload["step"]


@needs_cuda
def test_a_checkpoint_written_on_the_gpu_resumes_on_the_cpu(tmp_path, synthcity_root):
    run = tmp_path / "run"
    # 8 steps: GradScaler skips the first steps whose fp16 gradients overflow, and Adam state needs one taken.
    make_trainer(synth_config(synthcity_root, "cuda", "fp16", steps=8), run).run()
    payload = load_checkpoint(run / "last.pt")
    assert payload["step"] == 8 and payload["scaler"] is not None and "cuda" in payload["rng"]

    config = resume_config(run, ["train.device=cpu", "train.amp=off", "train.steps=10"])
    trainer = make_trainer(config, run, resume=True)
    assert trainer.scaler is None
    assert_resumed_state_equals_checkpoint(trainer, payload, "cpu")
    result = trainer.run()
    assert result.step == 10
    losses = train_losses(run)
    assert sorted(losses) == list(range(1, 11)) and all(math.isfinite(v) for v in losses.values())
    assert load_checkpoint(run / "last.pt")["step"] == 10


@needs_cuda
def test_a_checkpoint_written_on_the_cpu_resumes_on_the_gpu_with_fp16(tmp_path, synthcity_root):
    run = tmp_path / "run"
    make_trainer(synth_config(synthcity_root, "cpu", "off", steps=4), run).run()
    payload = load_checkpoint(run / "last.pt")
    assert payload["scaler"] is None

    config = resume_config(run, ["train.device=cuda", "train.amp=fp16", "train.steps=6"])
    trainer = make_trainer(config, run, resume=True)
    assert trainer.scaler is not None
    assert_resumed_state_equals_checkpoint(trainer, payload, "cuda")
    result = trainer.run()
    assert result.step == 6
    losses = train_losses(run)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6] and all(math.isfinite(v) for v in losses.values())
    resumed = load_checkpoint(run / "last.pt")
    assert resumed["step"] == 6 and resumed["scaler"] is not None


# ----------------------------------------------------------------------------------------- the Segmenter

MODEL = "vanilla-cgru-small-shallow"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small cGRU model with non-trivial BatchNorm statistics and a head scaled 20x: a freshly initialised
    head gives near-uniform probabilities (0.04-0.07), which would hide a wrong path; scaled, they reach ~0.6 and
    dropping the recurrent state changes them by up to 0.05 (measured on the CPU)."""
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=19)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    with torch.no_grad():
        model.head.weight.mul_(20.0)
        model.head.bias.mul_(20.0)
    path = tmp_path_factory.mktemp("ckpt") / "cgru.pt"
    save_checkpoint(
        path,
        {
            "model_name": MODEL,
            "num_classes": 19,
            "label_set": "cityscapes",
            "model": model.state_dict(),
            "normalization": {"mean": list(MEAN), "std": list(STD)},
        },
    )
    return path


def smooth_frames(num_frames: int, height: int = 45, width: int = 83) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(num_frames):
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [127 + 120 * np.sin(xs / (5 + 3 * c) + ys / (7 + c) + phase[c] + t) for c in range(3)]
        frames.append(np.stack(channels, axis=-1).astype(np.uint8))
    return frames


def segment(checkpoint: Path, frames: list[np.ndarray], **options) -> tuple[np.ndarray, np.ndarray]:
    results = list(Segmenter(checkpoint, **options).stream(frames, probabilities=True))
    return np.stack([labels for labels, _ in results]), np.stack([probs for _, probs in results])


@needs_cuda
@pytest.mark.parametrize("size", [None, (32, 48), (64, 128)], ids=["native", "shrink", "enlarge"])
def test_segmenter_on_cuda_equals_the_cpu(checkpoint, size, monkeypatch):
    # Full fp32 convolutions, so that fp32 on the GPU computes what the CPU does (TF32, PyTorch's default for
    # cuDNN convolutions, keeps 10 mantissa bits).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    frames = smooth_frames(6)
    cpu_labels, cpu_probs = segment(checkpoint, frames, device="cpu", size=size)
    for optimize in (True, False):
        labels, probs = segment(checkpoint, frames, device="cuda", size=size, optimize=optimize)
        assert labels.shape == cpu_labels.shape == (6, 45, 83)
        # The CPU resizes uint8 frames (rounding them), the GPU float ones: 1e-5 apart on the CPU.
        assert np.abs(probs - cpu_probs).max() < (1e-3 if size is None else 5e-3)
        assert (labels == cpu_labels).mean() > 0.995
    for amp in ("fp16", "bf16"):
        labels, probs = segment(checkpoint, frames, device="cuda", size=size, amp=amp)
        # bf16 autocast on the CPU is 4e-4 from fp32 on average; a stream that lost its state, 2.7e-3.
        assert np.isfinite(probs).all() and np.abs(probs - cpu_probs).mean() < 1.5e-3, amp
        assert (labels == cpu_labels).mean() > 0.98, amp


@needs_cuda
def test_segmenter_runs_on_the_cuda_device_it_is_given(checkpoint):
    last = torch.cuda.device_count() - 1
    segmenter = Segmenter(checkpoint, device=f"cuda:{last}")
    assert segmenter.device == torch.device("cuda", last)
    assert all(p.device == segmenter.device for p in segmenter.network.parameters())
    segmenter.segment_frame(smooth_frames(1)[0])
    assert segmenter._state is not None and all(s.device == segmenter.device for s in segmenter._state)
    with pytest.raises(VidsegError, match=f"cuda:{last + 1} was requested but this machine has {last + 1} CUDA GPU"):
        Segmenter(checkpoint, device=f"cuda:{last + 1}")


@needs_cuda
def test_training_uses_the_local_rank_gpu(monkeypatch):
    last = torch.cuda.device_count() - 1
    monkeypatch.setenv("LOCAL_RANK", str(last))
    assert distributed.init("cuda").device == torch.device("cuda", last)
    assert distributed.init("auto").device == torch.device("cuda", last)
    monkeypatch.setenv("LOCAL_RANK", str(last + 1))
    with pytest.raises(VidsegError, match=f"LOCAL_RANK {last + 1} needs GPU cuda:{last + 1}"):
        distributed.init("cuda")


# ------------------------------------------------------------------------------ CUDA peak memory accounting


@needs_cuda
def test_memory_benchmark_counts_cuda_peak_and_checkpointing_lowers_it():
    def peak(variant: str) -> dict:
        command = [sys.executable, str(REPO / "benchmarks" / "bench_memory.py"), "--child", "--variant", variant,
                   "--model", "vanilla-cgru-small-shallow", "--size", "128x256", "--frames", "4", "--batch", "1"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert completed.returncode == 0, completed.stderr[-3000:]
        return json.loads(completed.stdout.strip().splitlines()[-1])

    off, step, stage = peak("off"), peak("step"), peak("stage")
    for result in (off, step, stage):
        assert result["device"] == "cuda" and math.isfinite(result["loss"])
        assert result["cuda_peak"] > result["cuda_baseline"] > 0  # the weights are resident before the step
    # Every tensor kept for backward is on the GPU at the end of the forward pass, so the peak exceeds them.
    assert off["cuda_peak"] > off["saved_bytes"] > 10 * stage["saved_bytes"]
    assert stage["cuda_peak"] < step["cuda_peak"] < off["cuda_peak"]


# ------------------------------------------------------------------------------------------------ NCCL DDP

NCCL_DRIVER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    import torch.distributed as dist
    from vidseg import distributed
    from vidseg.config import load_config
    from vidseg.train import Trainer

    config = load_config(sys.argv[1])
    context = distributed.init("cuda")
    trainer = Trainer(config, sys.argv[2], context, resume=False, log=print)
    result = trainer.run()
    weights = hashlib.sha256(b"".join(t.cpu().numpy().tobytes() for t in trainer.model.state_dict().values()))
    report = {"rank": context.rank, "device": str(context.device), "backend": dist.get_backend(),
              "step": result.step, "weights": weights.hexdigest()}
    with open(os.path.join(sys.argv[3], f"rank{context.rank}.json"), "w") as f:
        json.dump(report, f)
    distributed.shutdown()
    """
)


@pytest.mark.cuda
@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason=f"NCCL DDP needs two CUDA GPUs, this machine has {torch.cuda.device_count()} (gloo DDP: test_ddp.py)",
)
def test_two_process_ddp_with_nccl_on_two_gpus(tmp_path, synthcity_root):
    config_path = tmp_path / "ddp.yaml"
    raw = {
        "model": {"name": "vanilla-crnn-small-shallow"},
        "data": {"root": str(synthcity_root), "size": [32, 64], "num_frames": 3, "batch_size": 2},
        "loss": {"frames": "labelled"},
        "optim": {"lr": 3e-3, "accumulate": 2},
        "train": {"steps": 3, "device": "cuda", "amp": "fp16", "log_every": 1, "tensorboard": False},
        "eval": {"every_epochs": 0},
    }
    config_path.write_text(yaml.safe_dump(raw))
    driver = tmp_path / "driver.py"
    driver.write_text(NCCL_DRIVER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver)]
    completed = subprocess.run(
        [*command, str(config_path), str(tmp_path / "run"), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["device"] for r in ranks] == ["cuda:0", "cuda:1"] and {r["backend"] for r in ranks} == {"nccl"}
    assert [r["step"] for r in ranks] == [3, 3] and ranks[0]["weights"] == ranks[1]["weights"]


# ------------------------------------------------------------------------- device selection, on any machine


def pretend_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_a_cuda_index_beyond_the_gpus_is_explained(monkeypatch, checkpoint):
    pretend_gpus(monkeypatch, 1)
    with pytest.raises(VidsegError, match=r"cuda:1 was requested but this machine has 1 CUDA GPU\(s\), cuda:0 to"):
        Segmenter(checkpoint, device="cuda:1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(VidsegError, match="LOCAL_RANK 1 needs GPU cuda:1 but this machine has 1"):
        distributed.resolve_device("cuda", local_rank=1)
    assert distributed.resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    pretend_gpus(monkeypatch, 0)
    assert distributed.resolve_device("auto", local_rank=1) == torch.device("cpu")
    with pytest.raises(VidsegError, match="no CUDA device is available"):
        distributed.resolve_device("cuda")
