"""Two-process CPU DDP under torchrun (gloo): ranks stay in step, report identical metrics that count every
validation window once, and only rank 0 writes checkpoints and logs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from vidseg import distributed
from vidseg.checkpoint import load_checkpoint, model_from_checkpoint
from vidseg.config import load_config
from vidseg.errors import VidsegError
from vidseg.train import build_datasets

# Runs in every torchrun process: spies on checkpoint writes, trains, records what this rank saw.
DRIVER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    import vidseg.checkpoint as checkpoint
    from vidseg import distributed
    from vidseg.config import load_config
    from vidseg.train import Trainer

    written = []
    save = checkpoint.save_checkpoint
    def spy(path, payload):
        written.append(os.path.basename(path))
        save(path, payload)
    checkpoint.save_checkpoint = spy

    config = load_config(sys.argv[1])
    context = distributed.init("cpu")
    trainer = Trainer(config, sys.argv[2], context, resume=False, log=print)
    result = trainer.run()
    weights = hashlib.sha256(b"".join(t.numpy().tobytes() for t in trainer.model.state_dict().values()))
    report = {
        "rank": context.rank,
        "world_size": context.world_size,
        "step": result.step,
        "val": result.metrics["val"],
        "written": written,
        "weights": weights.hexdigest(),
    }
    with open(os.path.join(sys.argv[3], f"rank{context.rank}.json"), "w") as f:
        json.dump(report, f)
    distributed.shutdown()
    """
)


def test_two_process_ddp_on_cpu(tmp_path, dense_tree):
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "vanilla-crnn-small-shallow"},
                "data": {"root": str(dense_tree.root), "size": [16, 32], "num_frames": 3, "batch_size": 2},
                "loss": {"frames": "labelled"},
                "optim": {"lr": 3e-3, "accumulate": 2},
                "train": {"steps": 2, "device": "cpu", "log_every": 1, "tensorboard": False},
                # 5 windows over 2 processes: a padded sampler would count one twice.
                "eval": {"every_steps": 2, "every_epochs": 0, "num_frames": 3, "max_samples": 5, "batch_size": 2},
            }
        )
    )
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    completed = subprocess.run(
        [*command, str(driver), str(config_path), str(run), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    assert [r["world_size"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [2, 2]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were averaged, BatchNorm statistics shared
    assert ranks[0]["val"] == ranks[1]["val"]
    assert ranks[0]["val"]["windows"] == 5
    # Exactly one writer.
    assert sorted(ranks[0]["written"]) == ["best.pt", "last.pt"] and ranks[1]["written"] == []
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl"]
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(e["event"], e["step"]) for e in events] == [("train", 1), ("train", 2), ("eval", 2), ("stop", 2)]

    # The reduced figures are those of the saved model evaluated once, in a single process, on all 5 windows.
    from vidseg.evaluate import evaluate_model

    config = load_config(config_path)
    _, val_set = build_datasets(config)
    saved = model_from_checkpoint(load_checkpoint(run / "last.pt"))
    single = evaluate_model(saved, val_set, batch_size=2, tc=False, progress=False)
    assert single.miou == pytest.approx(ranks[0]["val"]["miou"], abs=1e-12)
    assert single.iou == ranks[0]["val"]["iou"]


def pretend_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_one_device_rule_for_every_entry_point(monkeypatch):
    pretend_gpus(monkeypatch, 0)
    assert distributed.resolve_device("auto") == torch.device("cpu")
    assert distributed.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(VidsegError, match=r"unknown --device 'gpu0'; use auto, cpu, cuda or cuda:N"):
        distributed.resolve_device("gpu0", option="--device")
    with pytest.raises(VidsegError, match="device meta is not supported; use cpu or cuda"):
        distributed.resolve_device("meta")
    with pytest.raises(VidsegError, match="train.device cuda was requested but no CUDA device is available"):
        distributed.resolve_device("cuda", local_rank=0, option="train.device")
    pretend_gpus(monkeypatch, 2)
    # Inference keeps the name it was given; a training process gets its own GPU.
    assert distributed.resolve_device("cuda") == torch.device("cuda")
    assert distributed.resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert distributed.resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)
