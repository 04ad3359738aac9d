"""The demo's plan as data: the dataset, the three training runs at equal compute, their configs."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidseg.errors import VidsegError
from vidseg.models import build_model
from vidseg.models.inference import cpu_has_fast_bf16
from vidseg.models.zoo import architecture_options

BASELINE_MODEL = "vanilla-none-small-shallow"
TEMPORAL_MODEL = "vanilla-crnn-small-shallow"

# Optimizer steps per minute of the two models on SynthCity 64 x 128 (batch 4 x 5 frames, bf16, channels_last),
# measured on the 2-core CPU this project is developed on. They turn --minutes into fixed step counts.
STEPS_PER_MINUTE = {BASELINE_MODEL: 330.0, TEMPORAL_MODEL: 240.0}

FINETUNE_OPTIONS: dict[str, dict[str, Any]] = {
    "model": {"temporal_residual": True, "temporal_kernel": 1, "warp_state": True},
    "data": {"mixup": {"kind": "cutmix", "prob": 0.5}, "frame_stride": [1, 3]},
    "loss": {"corrupted_weight": 0.5, "corrupted_class_weights": False},
}
"""The demo's temporal recipe: residual 1x1 cRNN units (nearly free in FLOPs, so at ``--minutes 10`` the budget buys
819 fine-tuning steps where 3x3 units get 600) whose previous state is warped by a motion field the model predicts,
CutMix on half the clips, clips whose frames lie 1 to 3 apart, corrupted frames' cross-entropy at 0.5x a clean
frame's and not class-weighted (rare-class guesses on unreadable frames stop paying); with
``DemoPlan.pretrain_final_lr_scale`` = 1 (one schedule: warm-up, hold, decay), it meets every bar of issue 15 on
each of seeds 0-4 at ``--minutes 10``: at least the per-frame baseline on clean frames and on pole, traffic sign and
person, corrupted frames above +20, all frames above +6, TC higher (docs/benchmarks.md, section 6)."""

RUNS = ("baseline", "pretrain", "finetune")
RUN_TITLES = {
    "baseline": "the per-frame baseline",
    "pretrain": "the per-frame twin that the temporal model starts from",
    "finetune": "the temporal model (cRNN units, warm-started)",
}
MODELS = {"per-frame": "baseline", "temporal": "finetune"}
"""The two models the demo compares, by the name the report gives them, and the run that trains each."""


@dataclass
class DemoPlan:
    """Everything the demo does, as data: the dataset, the three training runs and the evaluation."""

    out: Path
    seed: int = 0
    minutes: float = 10.0
    """Training budget of both models together (the baseline gets half, the temporal schedule the other half)."""
    pretrain_share: float = 0.5
    """Share of the temporal schedule spent pre-training its per-frame twin."""
    train_sequences: int = 240
    val_sequences: int = 40
    frames: int = 24
    size: tuple[int, int] = (64, 128)
    batch_size: int = 4
    window: int = 5
    lr: float = 3e-3
    finetune_lr: float = 3e-3
    """Rate of the cRNN fine-tuning: better than 1e-3 on every figure over seeds 0-2 (benchmarks/demo_recipes.py)."""
    amp: str = field(default_factory=lambda: "bf16" if cpu_has_fast_bf16() else "off")
    """Training precision: bf16 autocast where the CPU has native bf16 convolutions, else float32 (bf16 through
    PyTorch's reference kernels trains about 10x slower on an AVX2-only CPU)."""
    copied_lr_scale: float = 1.0
    pretrain_final_lr_scale: float = 1.0
    """Where the pre-training run's cosine schedule ends, as a share of its rate: 1 (the default) holds the rate after
    the warm-up, so that the fine-tuning run's decay is the temporal schedule's only one (warm-up, hold, decay, as one
    schedule of the baseline's length); 0 decays it fully before the fine-tuning run warms up again (two cosine
    cycles: the demo before issue 15's last screen, which cost the per-frame path itself 2.6 clean mIoU)."""
    finetune_options: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(FINETUNE_OPTIONS))
    """Recipe options of the temporal run, as config sections merged into its config (default: ``FINETUNE_OPTIONS``;
    ``{}`` is the plain cRNN recipe of the first demo)."""
    workers: int = 2
    quick: bool = False
    steps: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, out: str | Path, seed: int = 0, minutes: float = 10.0, quick: bool = False) -> DemoPlan:
        if minutes <= 0:
            raise VidsegError(f"--minutes must be positive, got {minutes}")
        plan = cls(out=Path(out), seed=seed, minutes=minutes, quick=quick)
        if quick:  # a smoke run in seconds: the numbers mean nothing
            plan.train_sequences, plan.val_sequences, plan.frames, plan.size = 4, 2, 8, (32, 64)
            plan.batch_size, plan.window, plan.workers = 2, 3, 1
        plan.steps = plan.schedule()
        return plan

    @property
    def data_root(self) -> Path:
        return self.out / "synthcity"

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def config_path(self, run: str) -> Path:
        return self.out / "configs" / f"{run}.yaml"

    @property
    def command(self) -> str:
        """The `vidseg demo` command line that makes this plan."""
        quick = " --quick" if self.quick else ""
        return f"vidseg demo --out {self.out} --minutes {self.minutes:g} --seed {self.seed}{quick}"

    def schedule(self) -> dict[str, int]:
        """Steps of the pre-training, fine-tuning and baseline runs, at equal training FLOPs.

        The fine-tuning budget is the FLOPs of the cRNN steps that ``STEPS_PER_MINUTE`` buys. The temporal run's
        own model and options spend it: 1x1 units cost less per step and get more steps; a warped state, cGRU units
        or longer training clips cost more and get fewer (``finetune_cost``; other data options, such as the batch
        size, are not counted and must stay the baseline's). At a given pre-training share the baseline gets the same
        steps whatever the recipe, so recipes share a baseline and the demo takes about the same time."""
        if self.quick:
            pretrain, reference_steps = 3, 3
        else:
            temporal_minutes = self.minutes / 2
            pretrain = max(1, round(temporal_minutes * self.pretrain_share * STEPS_PER_MINUTE[BASELINE_MODEL]))
            finetune_minutes = temporal_minutes * (1 - self.pretrain_share)
            reference_steps = max(1, round(finetune_minutes * STEPS_PER_MINUTE[TEMPORAL_MODEL]))
        per_frame = training_flops(BASELINE_MODEL, self.size)
        budget = reference_steps * training_flops(TEMPORAL_MODEL, self.size) / per_frame  # per-frame steps
        finetune = max(1, round(budget / self.finetune_cost()))
        return {"pretrain": pretrain, "finetune": finetune, "baseline": pretrain + round(budget)}

    def finetune_cost(self) -> float:
        """Training FLOPs of one fine-tuning step in per-frame steps: the temporal run's own model and options, and
        its clip length against the baseline's."""
        model = self.finetune_options.get("model")
        name = (model or {}).get("name", TEMPORAL_MODEL)
        flops = training_flops(name, self.size, **architecture_options(model))
        clip = self.finetune_options.get("data", {}).get("num_frames", self.window) / self.window
        return flops / training_flops(BASELINE_MODEL, self.size) * clip

    def config(self, run: str) -> dict[str, Any]:
        """The training config (a plain dict, as in a YAML file) of one of the runs."""
        steps = self.steps[run]
        config: dict[str, Any] = {
            "model": {"name": TEMPORAL_MODEL if run == "finetune" else BASELINE_MODEL},
            "data": {
                "root": str(self.data_root),
                "label_set": "cityscapes",
                "num_frames": self.window,
                "gt_position": "random",
                "size": list(self.size),
                "hflip": True,
                "batch_size": self.batch_size,
                "num_workers": 0 if self.quick else 1,
            },
            "loss": {"frames": "labelled", "class_weights": "sqrt_inverse_frequency", "class_weight_samples": 500},
            "optim": {"name": "adam", "lr": self.lr, "schedule": "cosine", "warmup_fraction": 0.05},
            "train": {
                "steps": steps,
                "seed": self.seed,
                "amp": self.amp,
                "channels_last": True,
                "log_every": max(1, steps // 10),
                "checkpoint_every": 0,
                "tensorboard": False,
            },
            "eval": {"every_epochs": 0, "every_steps": 0},
        }
        if run == "pretrain" and self.pretrain_final_lr_scale != 0.0:
            config["optim"]["final_lr_scale"] = self.pretrain_final_lr_scale
        if run == "finetune":
            config["train"]["init_from"] = str(self.run_dir("pretrain") / "last.pt")
            config["train"]["init_temporal"] = "identity"
            config["optim"]["lr"] = self.finetune_lr
            config["optim"]["copied_lr_scale"] = self.copied_lr_scale
            for section, options in self.finetune_options.items():
                config.setdefault(section, {}).update(options)
        return config

    def pretrain_recipe(self) -> str:
        """How the pre-training run's rate goes, in words, for the report (follows ``pretrain_final_lr_scale``)."""
        scale = self.pretrain_final_lr_scale
        if scale == 0:
            return "per-frame pre-training (its cosine decays to 0)"
        if scale == 1:
            return "per-frame pre-training at a held rate (after the warm-up; the fine-tuning run's cosine decays it)"
        return f"per-frame pre-training (its cosine ends at {scale:g}x its rate)"

    def temporal_recipe(self) -> str:
        """How the temporal run trains, in words, for the report (follows ``finetune_options``)."""
        model = self.finetune_options.get("model", {})
        data = self.finetune_options.get("data", {})
        loss = self.finetune_options.get("loss", {})
        units = "cGRU units" if "cgru" in model.get("name", TEMPORAL_MODEL) else "cRNN units"
        if model.get("temporal_kernel") == 1:
            units = f"1x1 {units}"
        if model.get("temporal_residual"):
            parts = [
                f"residual {units} (skips pass x + h; each unit's input path starts at zero, so training starts "
                "from the per-frame model's exact outputs)"
            ]
        else:
            parts = [f"{units} (identity-initialised, so training starts from the per-frame model's exact outputs)"]
        if model.get("warp_state"):
            parts.append("the previous state warped before each unit by a motion field predicted from the current "
                         "features (zero motion at the start)")
        mixup = data.get("mixup", {})
        if mixup.get("kind") == "cutmix":
            parts.append(f"CutMix on {mixup.get('prob', 0.5):.0%} of the training clips (one box on every frame)")
        if isinstance(data.get("frame_stride"), list):
            low, high = data["frame_stride"]
            parts.append(f"random frame skipping ({low} to {high} frames apart)")
        if "num_frames" in data:
            parts.append(f"{data['num_frames']}-frame training clips")
        if loss.get("corrupted_weight", 1.0) != 1.0:
            parts.append(f"corrupted frames' cross-entropy weighted {loss['corrupted_weight']:g}x a clean frame's")
        if loss.get("corrupted_class_weights") is False:
            parts.append("corrupted frames' pixels not class-weighted (each weighs its frame's mean class weight)")
        for key, value in sorted(model.items()):
            if key not in ("temporal_residual", "name", "warp_state") and value and not (
                key == "temporal_kernel" and value == 1
            ):
                parts.append(f"model.{key}={value}")
        return ", ".join(parts)

    def summary(self) -> dict[str, Any]:
        """The plan as ``results.json`` records it."""
        return {
            "seed": self.seed,
            "minutes": self.minutes,
            "quick": self.quick,
            "steps": self.steps,
            "pretrain_final_lr_scale": self.pretrain_final_lr_scale,
            "finetune_options": self.finetune_options,
            "data": {
                "train_sequences": self.train_sequences,
                "val_sequences": self.val_sequences,
                "frames": self.frames,
                "size": list(self.size),
            },
        }


def training_flops(model_name: str, size: tuple[int, int], **options) -> int:
    """FLOPs of the forward and backward pass of one frame (torch.utils.flop_counter), batch 1, 2 frames / 2;
    ``options`` are ``build_model``'s (``warp_state``, ...). Work outside the model (the optical flow of
    ``loss.temporal_consistency``, on the CPU) is not counted."""
    model = build_model(model_name, num_classes=19, **options)
    frames = torch.zeros(1, 2, 3, *size)
    with FlopCounterMode(display=False) as counter:
        logits, _ = model(frames)
        logits.sum().backward()
    return counter.get_total_flops() // 2
