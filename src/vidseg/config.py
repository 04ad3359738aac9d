"""Typed training configuration: dataclasses loaded from YAML, validated key by key.

A config file has the sections ``model``, ``data``, ``loss``, ``optim``, ``train`` and ``eval``; every key is
optional and defaults to the report's recipe where the report gives one. An unknown key or a value of the wrong
type raises VidsegError naming the key, the file and the expected type. ``--set a.b=value`` overrides go through
the same checks (the value is read as YAML, so ``--set train.amp=bf16`` and ``--set data.size=[32,64]`` work).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from vidseg.choices import AmpMode
from vidseg.errors import VidsegError


@dataclass
class ModelConfig:
    name: str = "vanilla-none-small-shallow"
    """One of ``vidseg.models.MODEL_NAMES``; the class count comes from ``data.label_set``."""
    temporal_residual: bool = False
    """Residual temporal units: skips pass ``x + h`` and the units start as the identity, so the model starts as
    (and a warm start from a per-frame checkpoint reproduces exactly) its per-frame twin (``models.temporal``)."""
    state_dropout: float = 0.0
    """Training only: probability that a sample's incoming hidden state (all levels) is replaced by zeros, per frame."""
    warp_state: bool = False
    """Temporal units warp the previous state by a motion field the model predicts (starting at zero motion)."""
    temporal_levels: list[int] | None = None
    """Encoder levels (0 = full resolution) that carry a temporal unit; null = every level (the report's models).
    The other levels pass their per-frame feature to the decoder, and their units' FLOPs are saved."""
    temporal_kernel: int = 3
    """Kernel size of the temporal units' convolutions (odd). 3 is the report's; 1 makes each unit a per-pixel
    recurrence over channels at a ninth of the FLOPs (no spatial context inside the unit)."""
    temporal_gate: bool = False
    """Residual units only: skips pass ``x + g * h``, where a 1x1 convolution of ``[x, h]`` gives the gate g, so
    the model could keep memory out of a clean frame and let it into a corrupted one (``models.temporal.SkipGate``;
    in the issue 15 screen it did not learn that switch, docs/benchmarks.md section 6)."""
    temporal_memory_only: bool = False
    """Residual units only: skips pass ``x + (h_t - h0_t)``, where ``h0_t`` is the state the unit gives the same
    frame from the zero state: only what memory adds reaches the decoder, so a frame without history (the first
    one) gets exactly the per-frame path, and the units cannot act as a per-frame layer (``models.unet``)."""
    output_memory: bool = False
    """The output is a learned running average of the class probabilities, weighted per pixel by a gate the model
    computes from the frame and the memory (``models.memory``): a corrupted frame can lean on the past, a clean one
    keeps its own prediction. Any model, per-frame ones included (which makes them temporal)."""


CorruptionKind = Literal["noise", "dark", "overexposed", "blur", "dropout", "occlusion"]


@dataclass
class CorruptConfig:
    """The "-C" variant of a dataset (``vidseg.data.corrupt``): corrupted frames in training and validation."""

    rate: float = 0.0
    """Share of frames corrupted, each independently (0 = off)."""
    kinds: list[CorruptionKind] = field(
        default_factory=lambda: ["noise", "dark", "overexposed", "blur", "dropout", "occlusion"]
    )
    seed: int = 0
    """Fixes which validation frames are corrupted and how (training draws change every epoch)."""


@dataclass
class MixConfig:
    """Mixing two training clips (``vidseg.data.mix``): the same box on every frame of the window."""

    kind: Literal["none", "cutmix"] = "none"
    """``cutmix``: a box of another clip, labels pasted with it; pixel-blending mixup is not offered (no class
    for a blended pixel without soft targets)."""
    prob: float = 0.5
    """Share of training samples that are mixed."""
    alpha: float = 1.0
    """The kept share of the clip is drawn from Beta(alpha, alpha)."""


@dataclass
class StillConfig:
    """Still clips (``vidseg.data.still``): a labelled frame made into a short video by a synthetic camera moving
    forward, the small motion of a high frame rate with labels on every frame."""

    prob: float = 0.0
    """Share of training samples replaced by a still clip of their annotated frame; 0 = off."""
    zoom: float = 0.04
    """The per-frame zoom is drawn from U(0, zoom)."""
    pan: float = 0.01
    """The per-frame pan is drawn from U(-pan, pan) of the frame's width and height."""


@dataclass
class DataConfig:
    root: str = "data/cityscapes"
    layout: str = "auto"
    """``auto`` (detected from the folders), ``cityscapes``, ``camvid``, ``vspw`` or ``folders``."""
    label_set: str | None = None
    """The classes the model predicts: ``cityscapes``, ``report``, ``camvid11``, ``camvid32``, ``vspw124``;
    None = the layout's own (``cityscapes``, ``camvid11``, ``vspw124``, a ``classes.yaml``'s)."""
    train_split: str = "train"
    val_split: str = "val"
    num_frames: int = 5
    """Frames per training window (1 for per-frame baselines)."""
    gt_position: Literal["random", "last"] | int = "random"
    frame_stride: int | list[int] = 1
    """A fixed stride, or ``[lo, hi]`` for a random stride per window."""
    size: list[int] = field(default_factory=lambda: [512, 1024])
    """Working resolution ``[height, width]`` of training and evaluation frames."""
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    """Random scale range applied before cropping to ``size`` (``[1, 1]`` = resize only)."""
    crop: list[int] | None = None
    """Training window ``[height, width]``, cut at random from frames resized to ``size`` x a random ``scale``;
    None = ``size``. Evaluation and ``vidseg segment`` run on whole frames at ``size``, so a window smaller than
    ``size`` trains at the working resolution for a fraction of its cost (as image toolkits train on crops)."""
    hflip: bool = True
    batch_size: int = 1
    num_workers: int = 0
    cache: str | None = None
    """A frame cache written by ``vidseg prepare``; None reads the PNG tree."""
    skip_missing: bool = False
    corrupt: CorruptConfig = field(default_factory=CorruptConfig)
    mixup: MixConfig = field(default_factory=MixConfig)
    still: StillConfig = field(default_factory=StillConfig)


@dataclass
class LossConfig:
    frames: Literal["annotated", "labelled"] = "annotated"
    """``annotated``: the loss on the annotated frame only (the report); ``labelled``: on every labelled frame."""
    class_weights: Literal["none", "sqrt_inverse_frequency"] | list[float] = "none"
    class_weight_samples: int = 0
    """Training samples counted for frequency-based weights (evenly spaced); 0 = all."""
    temporal_consistency: float = 0.0
    """Weight of the temporal-consistency term (``vidseg.training.losses``): consecutive frames' predictions
    disagreeing where optical flow says the pixel is the same; 0 = off."""
    corrupted_weight: float = 1.0
    """Weight of a corrupted frame's pixels in the cross-entropy (a sample's ``corruption`` code > 0: SynthCity's
    bursts, ``data.corrupt``), relative to a clean frame's 1; 1 = every frame alike."""
    corrupted_class_weights: bool = True
    """False: a corrupted frame's pixels are not weighted by class; each weighs the mean class weight of its frame's
    labelled pixels (times ``corrupted_weight``), so a frame counts as much as before but a rare class gains
    nothing from being guessed where the frame cannot be read."""
    corrupted_encoder_gradient: float = 1.0
    """Scale of the gradient that a corrupted frame's encoder features receive (from its own loss and, through the
    state, from later frames'); the units, decoder and head get it whole. 0: corrupted frames do not train the
    encoder, only what reads its features; 1 = every frame alike."""
    memory_gradient: bool = True
    """With ``model.output_memory``: the loss on the blended output trains the network and the gate. False: it
    trains the gate only, and the network trains on the loss of its own per-frame prediction, as its per-frame twin
    does (the loss is the sum of the two; ``models.memory``)."""


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    """``cosine``: linear warm-up over ``warmup_fraction`` of the budget, then cosine decay to ``final_lr_scale``."""
    warmup_fraction: float = 0.0
    final_lr_scale: float = 0.0
    accumulate: int = 1
    """Micro-batches whose gradients are summed into one optimizer step."""
    grad_clip: float | None = None
    """Maximum global gradient norm; None = no clipping."""
    copied_lr_scale: float = 1.0
    """Learning-rate factor for weights copied by ``train.init_from``."""
    freeze: list[str] = field(default_factory=list)
    """Parameter name prefixes (e.g. ``encoder.``, ``temporal.0.``) kept at their initial or warm-started values:
    left out of the optimizer (BatchNorm statistics still update). A residual unit frozen at its zero start is no
    unit: its level's skip passes the per-frame feature."""


@dataclass
class TrainConfig:
    epochs: int | None = None
    steps: int | None = None
    minutes: float | None = None
    """The budget: training stops at whichever of epochs, optimizer steps or wall-clock minutes comes first."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: AmpMode = "off"
    channels_last: bool = False
    activation_checkpointing: Literal["off", "step", "stage"] = "off"
    """``step``: recompute each time step in the backward pass; ``stage``: also each stage within a step."""
    deterministic: bool = False
    log_every: int = 10
    checkpoint_every: int = 0
    """Also write ``last.pt`` every N optimizer steps (0 = at the end of each epoch, at evaluations and at exit)."""
    keep_checkpoints: bool = False
    """Keep every periodic checkpoint as ``step-NNNNNNN.pt`` besides ``last.pt``."""
    init_from: str | None = None
    """A checkpoint whose weights of matching name and shape initialise the model (warm start)."""
    init_temporal: Literal["default", "identity"] = "default"
    """``identity``: cRNN units start with C_x = identity and C_h = 0, so the model reproduces per-frame logits;
    residual units (``model.temporal_residual``, cRNN or cGRU) start with their input path at zero, to the same end."""
    tensorboard: bool = True


@dataclass
class EvalConfig:
    every_epochs: int = 1
    every_steps: int = 0
    num_frames: int = 12
    gt_position: Literal["last"] | int = "last"
    batch_size: int = 1
    max_samples: int | None = None
    """Evaluate on N evenly spaced validation samples only (None = all)."""
    protocol: Literal["standard", "report"] = "standard"
    tc: bool = False
    """Also compute flow-based temporal consistency (slow)."""
    mode: Literal["auto", "stream", "windows"] = "auto"
    """``stream``: every labelled frame once, each sequence from its start; ``windows``: one window per annotated
    frame (sparse Cityscapes); ``auto``: windows when no sequence has more than one labelled frame."""
    score_at: Literal["labels", "working"] = "labels"
    """``labels``: at the label files' resolution (logits upsampled), as the benchmarks score; ``working``: at
    ``data.size`` (labels resized, nearest)."""
    per_position: Literal["auto", "context", "labelled", "off"] = "off"
    """mIoU by frames of context during training evaluations (``vidseg evaluate`` has its own option)."""
    state_stride: int = 1
    """Carry a temporal model's state this many frames apart when evaluating (``vidseg.models.stride``): the
    evaluated video's frame rate over the training video's (15 for CamVid's 15 Hz val after its 1 Hz train
    split); 1 = from each frame to the next. ``vidseg evaluate`` and ``vidseg segment`` default to it."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Limits checked before anything is allocated. A frame above 8192x8192 (8K video is 7680x4320) is a typo, not a
# video; a batch of more pixels than BATCH_PIXEL_LIMIT needs over 24 GiB for its float32 RGB input alone.
FRAME_PIXEL_LIMIT = 8192 * 8192
BATCH_PIXEL_LIMIT = 2**31
GIB = 2**30


def parse_size(text: str) -> tuple[int, int]:
    """``"512x1024"`` -> ``(512, 1024)`` (height x width); ValueError for anything else."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise ValueError(f"expected HEIGHTxWIDTH with positive integers, such as 512x1024; got {text!r}")
    return int(parts[0]), int(parts[1])


def check_frame_size(size: Sequence[int], what: str, frames: int = 1) -> None:
    """VidsegError unless ``frames`` frames of ``size`` (height, width) stay within the limits; the message gives
    the limit and the memory of the float32 RGB input alone (the model's activations take many times more)."""
    height, width = int(size[0]), int(size[1])
    pixels = height * width
    if pixels > FRAME_PIXEL_LIMIT:
        raise VidsegError(
            f"{what} {height}x{width} is {pixels:,} pixels per frame, over the limit of {FRAME_PIXEL_LIMIT:,} "
            f"(8192x8192): one float32 RGB frame alone would take {pixels * 12 / GIB:,.1f} GiB; use a smaller size"
        )
    if pixels * frames > BATCH_PIXEL_LIMIT:
        raise VidsegError(
            f"{what} {height}x{width} with {frames:,} frames per batch is {pixels * frames:,} pixels, over the limit "
            f"of {BATCH_PIXEL_LIMIT:,}: the float32 RGB input alone would take {pixels * frames * 12 / GIB:,.1f} "
            "GiB; use a smaller size, fewer frames or a smaller batch"
        )


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply ``key.path=value`` overrides and return the validated Config."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VidsegError(f"config file {path} does not exist; see configs/ for examples") from None
    except (OSError, UnicodeDecodeError) as error:
        raise VidsegError(f"cannot read config file {path}: {error}") from error
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise VidsegError(f"config file {path} is not valid YAML: {error}") from error
    return config_from_dict({} if raw is None else raw, source=str(path), overrides=overrides)


def config_from_dict(raw: Any, source: str = "<dict>", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Validate a plain nested dict (as read from YAML) into a Config, then apply overrides."""
    config = _build(Config, raw, prefix="", source=source)
    for override in overrides:
        apply_override(config, override)
    if overrides:
        source = f"{source} with --set {' '.join(overrides)}"
    validate(config, source)
    return config


def apply_override(config: Config, override: str) -> None:
    """Apply one ``section.key=value`` override in place; the value is parsed as YAML and type-checked."""
    source = f"--set {override}"
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise VidsegError(f"{source}: expected KEY=VALUE such as train.steps=100")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise VidsegError(f"{source}: the value is not valid YAML: {error}") from error
    *parents, leaf = key.split(".")
    target: Any = config
    walked = []
    for part in parents:
        walked.append(part)
        if not dataclasses.is_dataclass(target) or part not in _field_types(type(target)):
            raise VidsegError(f"{source}: unknown key {'.'.join(walked)!r}; {_valid_keys(type(target), walked[:-1])}")
        target = getattr(target, part)
    if not dataclasses.is_dataclass(target) or leaf not in _field_types(type(target)):
        raise VidsegError(f"{source}: unknown key {key!r}; {_valid_keys(type(target), parents)}")
    expected = _field_types(type(target))[leaf]
    if isinstance(expected, type) and dataclasses.is_dataclass(expected):
        raise VidsegError(f"{source}: {key!r} is a section; set one of its keys, e.g. {key}.{_first_field(expected)}")
    setattr(target, leaf, _coerce(value, expected, key, source))


def config_to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as plain data (what ``config.yaml`` of a run directory holds)."""
    return dataclasses.asdict(config)


def dump_config(config: Config) -> str:
    """The resolved config as YAML: one key per line, lists inline."""
    return yaml.dump(config_to_dict(config), Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False)


class _ConfigDumper(yaml.SafeDumper):
    pass


_ConfigDumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)
)


def validate(config: Config, source: str) -> None:
    """Checks that involve values rather than types; raise VidsegError naming the key and the file."""

    def fail(key: str, message: str) -> None:
        raise VidsegError(f"{source}: {key}: {message}")

    # Imported here: config stays free of torch, for `vidseg --help` and the benchmarks' torch-free parents.
    from vidseg.models import MODEL_NAMES

    if config.model.name not in MODEL_NAMES:
        fail("model.name", f"unknown model {config.model.name!r}; valid names are: {', '.join(MODEL_NAMES)}")
    data, optim, train, evaluation = config.data, config.optim, config.train, config.eval
    # Imported here for the same reason: the vidseg.data package loads torch.
    from vidseg.data.index import layouts
    from vidseg.data.labels import LABEL_SETS

    if data.layout != "auto" and data.layout not in layouts():
        fail("data.layout", f"unknown layout {data.layout!r}; valid layouts are: auto, {', '.join(layouts())}")
    if data.label_set is not None and data.label_set not in LABEL_SETS:
        fail(
            "data.label_set",
            f"unknown label set {data.label_set!r}; valid label sets are: {', '.join(LABEL_SETS)} (or leave it "
            "unset for the layout's own)",
        )
    if len(data.size) != 2 or min(data.size) < 1:
        fail("data.size", f"expected [height, width] with positive values, found {data.size}")
    if data.crop is not None:
        if len(data.crop) != 2 or min(data.crop) < 1:
            fail("data.crop", f"expected [height, width] with positive values, or null, found {data.crop}")
        if data.crop[0] > data.size[0] or data.crop[1] > data.size[1]:
            fail("data.crop", f"the training window {data.crop} is larger than data.size {data.size}: it would be "
                 "mostly padding; use a larger data.size")
    for what, window, frames in [
        ("data.crop" if data.crop else "data.size", data.crop or data.size, data.batch_size * data.num_frames),
        ("data.size (with eval.batch_size and eval.num_frames)", data.size,
         config.eval.batch_size * config.eval.num_frames),
    ]:
        try:
            check_frame_size(window, what, max(frames, 1))
        except VidsegError as error:
            raise VidsegError(f"{source}: {error}") from None
    if len(data.scale) != 2 or not 0 < data.scale[0] <= data.scale[1]:
        fail("data.scale", f"expected [min, max] with 0 < min <= max, found {data.scale}")
    stride = data.frame_stride
    if isinstance(stride, list) and (len(stride) != 2 or not 1 <= stride[0] <= stride[1]):
        fail("data.frame_stride", f"expected an int >= 1 or [lo, hi] with 1 <= lo <= hi, found {stride}")
    if isinstance(stride, int) and stride < 1:
        fail("data.frame_stride", f"expected >= 1, found {stride}")
    for key, value, minimum in [
        ("data.num_frames", data.num_frames, 1),
        ("data.batch_size", data.batch_size, 1),
        ("data.num_workers", data.num_workers, 0),
        ("loss.class_weight_samples", config.loss.class_weight_samples, 0),
        ("optim.accumulate", optim.accumulate, 1),
        ("train.log_every", train.log_every, 1),
        ("train.checkpoint_every", train.checkpoint_every, 0),
        ("eval.every_epochs", evaluation.every_epochs, 0),
        ("eval.every_steps", evaluation.every_steps, 0),
        ("eval.num_frames", evaluation.num_frames, 1),
        ("eval.batch_size", evaluation.batch_size, 1),
        ("eval.state_stride", evaluation.state_stride, 1),
    ]:
        if value < minimum:
            fail(key, f"expected an integer >= {minimum}, found {value}")
    for key, position, frames in [
        ("data.gt_position", data.gt_position, data.num_frames),
        ("eval.gt_position", evaluation.gt_position, evaluation.num_frames),
    ]:
        if isinstance(position, int) and not 0 <= position < frames:
            fail(key, f"position {position} is outside a window of {frames} frames (0 ... {frames - 1})")
    numbers: dict[str, Sequence[float | None]] = {
        "data.scale": data.scale, "optim.lr": [optim.lr], "optim.betas": optim.betas, "optim.eps": [optim.eps],
        "optim.weight_decay": [optim.weight_decay], "optim.warmup_fraction": [optim.warmup_fraction],
        "optim.final_lr_scale": [optim.final_lr_scale], "optim.grad_clip": [optim.grad_clip],
        "optim.copied_lr_scale": [optim.copied_lr_scale], "train.minutes": [train.minutes],
        "loss.temporal_consistency": [config.loss.temporal_consistency],
        "loss.corrupted_weight": [config.loss.corrupted_weight],
        "loss.corrupted_encoder_gradient": [config.loss.corrupted_encoder_gradient],
    }
    for key, values in numbers.items():
        # NaN passes every comparison below unnoticed; infinities make no sense for any of these.
        if any(value is not None and not math.isfinite(value) for value in values):
            expected, found = ("finite numbers", values) if len(values) > 1 else ("a finite number", values[0])
            fail(key, f"expected {expected}, found {found}")
    if optim.lr <= 0:
        fail("optim.lr", f"expected a positive learning rate, found {optim.lr}")
    if optim.eps <= 0:
        fail("optim.eps", f"expected a positive epsilon, found {optim.eps}")
    if optim.weight_decay < 0:
        fail("optim.weight_decay", f"expected >= 0, found {optim.weight_decay}")
    if optim.final_lr_scale < 0:
        fail("optim.final_lr_scale", f"expected >= 0 (a fraction of optim.lr), found {optim.final_lr_scale}")
    if len(optim.betas) != 2 or not all(0 <= b < 1 for b in optim.betas):
        fail("optim.betas", f"expected [beta1, beta2] in [0, 1), found {optim.betas}")
    if not 0 <= optim.warmup_fraction < 1:
        fail("optim.warmup_fraction", f"expected a fraction in [0, 1), found {optim.warmup_fraction}")
    if optim.grad_clip is not None and optim.grad_clip <= 0:
        fail("optim.grad_clip", f"expected a positive norm or null, found {optim.grad_clip}")
    if optim.copied_lr_scale < 0:
        fail("optim.copied_lr_scale", f"expected >= 0, found {optim.copied_lr_scale}")
    if config.loss.temporal_consistency < 0:
        fail("loss.temporal_consistency", f"expected a weight >= 0, found {config.loss.temporal_consistency}")
    if config.loss.corrupted_weight < 0:
        fail("loss.corrupted_weight", f"expected a weight >= 0, found {config.loss.corrupted_weight}")
    if not 0 <= config.loss.corrupted_encoder_gradient <= 1:
        fail(
            "loss.corrupted_encoder_gradient",
            f"expected a scale in [0, 1], found {config.loss.corrupted_encoder_gradient}",
        )
    if config.loss.temporal_consistency > 0 and data.num_frames < 2:
        fail(
            "loss.temporal_consistency",
            f"compares consecutive frames, but data.num_frames is {data.num_frames}: the term would always be 0 "
            "(use windows of 2 frames or more, or weight 0)",
        )
    budgets = {"train.epochs": train.epochs, "train.steps": train.steps, "train.minutes": train.minutes}
    if all(value is None for value in budgets.values()):
        fail("train", "no budget: set at least one of train.epochs, train.steps or train.minutes")
    for key, budget in budgets.items():
        if budget is not None and budget <= 0:
            fail(key, f"expected a positive budget or null, found {budget}")
    if train.init_temporal == "identity" and "-crnn-" not in config.model.name and not config.model.temporal_residual:
        fail(
            "train.init_temporal",
            f"'identity' is defined for cRNN units and residual units only; model {config.model.name!r} has "
            "neither (use 'default', a *-crnn-* model, or model.temporal_residual)",
        )
    model = config.model
    if not (math.isfinite(model.state_dropout) and 0 <= model.state_dropout < 1):
        fail("model.state_dropout", f"expected a probability in [0, 1), found {model.state_dropout}")
    options = {
        "temporal_residual": model.temporal_residual,
        "state_dropout": model.state_dropout > 0,
        "warp_state": model.warp_state,
        "temporal_levels": model.temporal_levels is not None,
        "temporal_kernel": model.temporal_kernel != 3,
        "temporal_gate": model.temporal_gate,
        "temporal_memory_only": model.temporal_memory_only,
    }
    if any(options.values()) and "-none-" in model.name:
        key = "model." + next(name for name, on in options.items() if on)
        fail(key, f"needs temporal units; model {model.name!r} is per-frame (use a *-crnn-* or *-cgru-* model)")
    if model.temporal_gate and not model.temporal_residual:
        fail("model.temporal_gate", "needs model.temporal_residual: true (the gate scales h in the residual skip "
             "x + h); found temporal_residual: false")
    if model.temporal_memory_only and not model.temporal_residual:
        fail("model.temporal_memory_only", "needs model.temporal_residual: true (it corrects the residual skip "
             "x + h); found temporal_residual: false")
    if not config.loss.memory_gradient and not model.output_memory:
        fail("loss.memory_gradient", "false needs model.output_memory: true (it stops the blended output's gradient "
             "into the network); found output_memory: false")
    if not config.loss.memory_gradient and config.train.activation_checkpointing != "off":
        fail("loss.memory_gradient", "false does not run with train.activation_checkpointing (the network's own "
             f"logits are collected during the forward pass); found {config.train.activation_checkpointing!r}")
    if model.temporal_kernel < 1 or model.temporal_kernel % 2 == 0:
        found = model.temporal_kernel
        fail("model.temporal_kernel", f"expected an odd positive size (3 is the report's), found {found}")
    if model.temporal_levels is not None:
        from vidseg.models import SIZES, parse_model_name

        depth = len(SIZES[parse_model_name(model.name)[2]])
        levels = model.temporal_levels
        if not levels or len(set(levels)) != len(levels) or not all(0 <= level < depth for level in levels):
            fail(
                "model.temporal_levels",
                f"expected distinct levels from 0 (full resolution) to {depth - 1} ({model.name!r} has {depth}), "
                f"at least one, or null for all; found {levels}",
            )
    if evaluation.max_samples is not None and evaluation.max_samples < 1:
        fail("eval.max_samples", f"expected a positive count or null, found {evaluation.max_samples}")
    mix = data.mixup
    if not (math.isfinite(mix.prob) and 0 <= mix.prob <= 1):
        fail("data.mixup.prob", f"expected a share of samples in [0, 1], found {mix.prob}")
    if not (math.isfinite(mix.alpha) and mix.alpha > 0):
        fail("data.mixup.alpha", f"expected a positive number, found {mix.alpha}")
    unused = [key for key in ("prob", "alpha") if getattr(mix, key) != getattr(MixConfig(), key)]
    if mix.kind == "none" and unused:
        fail(f"data.mixup.{unused[0]}", "has no effect while data.mixup.kind is 'none' (set data.mixup.kind=cutmix)")
    still = data.still
    if not (math.isfinite(still.prob) and 0 <= still.prob <= 1):
        fail("data.still.prob", f"expected a share of samples in [0, 1], found {still.prob}")
    for key in ("zoom", "pan"):
        value = getattr(still, key)
        if not (math.isfinite(value) and 0 <= value < 1):
            fail(f"data.still.{key}", f"expected a per-frame share in [0, 1), found {value}")
    corrupt = data.corrupt
    if not (math.isfinite(corrupt.rate) and 0 <= corrupt.rate <= 1):
        fail("data.corrupt.rate", f"expected a share of frames in [0, 1], found {corrupt.rate}")
    if not corrupt.kinds or len(set(corrupt.kinds)) != len(corrupt.kinds):
        fail("data.corrupt.kinds", f"expected distinct corruption kinds, at least one, found {corrupt.kinds}")


# ------------------------------------------------------------------------------------------- checking


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _first_field(cls: type) -> str:
    return dataclasses.fields(cls)[0].name


def _valid_keys(cls: type, parents: list[str]) -> str:
    if not dataclasses.is_dataclass(cls):
        return f"{'.'.join(parents)!r} has no sub-keys"
    prefix = "".join(f"{p}." for p in parents)
    return "valid keys here: " + ", ".join(f"{prefix}{name}" for name in _field_types(cls))


def _build(cls: type, raw: Any, prefix: str, source: str):
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise VidsegError(f"{source}: {where} must be a mapping of keys to values, found {_describe(raw)}")
    types_by_name = _field_types(cls)
    values = {}
    for key, value in raw.items():
        full_key = f"{prefix}{key}"
        if key not in types_by_name:
            parents = prefix.rstrip(".").split(".") if prefix else []
            raise VidsegError(f"{source}: unknown key {full_key!r}; {_valid_keys(cls, parents)}")
        expected = types_by_name[key]
        if isinstance(expected, type) and dataclasses.is_dataclass(expected):
            values[key] = _build(expected, {} if value is None else value, f"{full_key}.", source)
        else:
            values[key] = _coerce(value, expected, full_key, source)
    return cls(**values)


def _coerce(value: Any, expected: Any, key: str, source: str) -> Any:
    """Return ``value`` as the type ``expected`` or raise VidsegError naming key, file and type."""
    ok, result = _try_coerce(value, expected)
    if not ok:
        raise VidsegError(
            f"{source}: key {key!r} expects {_type_name(expected)}, found {_describe(value)}; fix the value or "
            "remove the key to use the default"
        )
    return result


def _try_coerce(value: Any, expected: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(expected)
    if expected is type(None):
        return value is None, None
    if origin in (Union, types.UnionType):
        for option in typing.get_args(expected):
            ok, result = _try_coerce(value, option)
            if ok:
                return True, result
        return False, None
    if origin is Literal:
        choices = typing.get_args(expected)
        # YAML 1.1 reads an unquoted `off` as false.
        if value is False and "off" in choices:
            return True, "off"
        return value in choices and not isinstance(value, bool), value
    if origin is list:
        (item_type,) = typing.get_args(expected)
        if not isinstance(value, (list, tuple)):
            return False, None
        items = []
        for item in value:
            ok, result = _try_coerce(item, item_type)
            if not ok:
                return False, None
            items.append(result)
        return True, items
    if expected is bool:
        return isinstance(value, bool), value
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        # PyYAML reads exponents without a dot (3e-4) as strings.
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if expected is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported config type {expected!r}")


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if expected is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(expected))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(expected))
    if origin is list:
        item = typing.get_args(expected)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, _type_name(item))
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(expected, str(expected))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"
