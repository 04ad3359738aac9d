"""`vidseg demo`: what temporal units buy, shown on SynthCity in minutes on a CPU.

The pipeline: generate SynthCity (or reuse it), train a per-frame UNet and its temporal twin (same blocks and
size, plus cRNN units) at equal training compute, evaluate both on held-out sequences (all frames, clean frames,
corrupted frames, per corruption type, per number of frames seen, TC, mVC), segment a held-out clip with both,
and write ``report.md`` and ``report.html`` with plots, a side-by-side video and a strip of stills.

The temporal twin is warm-started: a per-frame model is trained first, its weights are copied into the temporal
model whose cRNN units start as the identity (C_x = identity, C_h = 0, so it reproduces the per-frame logits
exactly), and the copy is fine-tuned with the units learning. "Equal compute" counts training FLOPs: the
per-frame baseline trains for as many FLOPs as the temporal model's whole schedule, pre-training included.

Budgets are step counts derived from ``--minutes`` with fixed rates measured on a 2-core CPU, so the same
command gives the same numbers on the same machine.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from vidseg.checkpoint import load_checkpoint, model_from_checkpoint
from vidseg.config import config_from_dict, dump_config
from vidseg.data import CityscapesSequences
from vidseg.data.cityscapes import read_image, read_label_ids
from vidseg.data.labels import get_label_set
from vidseg.data.synthcity import CORRUPTIONS, generate
from vidseg.data.transforms import ClipTransform
from vidseg.data.video import VideoWriter
from vidseg.errors import VidsegError
from vidseg.evaluate import evaluate_model
from vidseg.fileio import atomic_path, atomic_write_text
from vidseg.models import build_model
from vidseg.models.inference import cpu_has_fast_bf16
from vidseg.segment import Segmenter
from vidseg.train import train
from vidseg.viz import add_caption, colorize, frame_strip, side_by_side

BASELINE_MODEL = "vanilla-none-small-shallow"
TEMPORAL_MODEL = "vanilla-crnn-small-shallow"

# Optimizer steps per minute of the two models on SynthCity 64 x 128 (batch 4 x 5 frames, bf16, channels_last),
# measured on the 2-core CPU this project is developed on. They turn --minutes into fixed step counts.
STEPS_PER_MINUTE = {BASELINE_MODEL: 330.0, TEMPORAL_MODEL: 240.0}


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

    def schedule(self) -> dict[str, int]:
        """Steps of the pre-training, fine-tuning and baseline runs, at equal training FLOPs."""
        if self.quick:
            pretrain, finetune = 3, 3
        else:
            temporal_minutes = self.minutes / 2
            pretrain = max(1, round(temporal_minutes * self.pretrain_share * STEPS_PER_MINUTE[BASELINE_MODEL]))
            finetune = max(1, round(temporal_minutes * (1 - self.pretrain_share) * STEPS_PER_MINUTE[TEMPORAL_MODEL]))
        ratio = training_flops(TEMPORAL_MODEL, self.size) / training_flops(BASELINE_MODEL, self.size)
        return {"pretrain": pretrain, "finetune": finetune, "baseline": pretrain + round(finetune * ratio)}

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
        if run == "finetune":
            config["train"]["init_from"] = str(self.run_dir("pretrain") / "last.pt")
            config["train"]["init_temporal"] = "identity"
            config["optim"]["lr"] = self.finetune_lr
            config["optim"]["copied_lr_scale"] = self.copied_lr_scale
        return config


def training_flops(model_name: str, size: tuple[int, int]) -> int:
    """FLOPs of the forward and backward pass of one frame (torch.utils.flop_counter), batch 1, 2 frames / 2."""
    model = build_model(model_name, num_classes=19)
    frames = torch.zeros(1, 2, 3, *size)
    with FlopCounterMode(display=False) as counter:
        logits, _ = model(frames)
        logits.sum().backward()
    return counter.get_total_flops() // 2


# ---------------------------------------------------------------------------------------------- pipeline


def run_demo(plan: DemoPlan, log=print) -> dict[str, Any]:
    """Run the whole demo; return the results that the report shows."""
    start = time.monotonic()
    plan.out.mkdir(parents=True, exist_ok=True)
    stage = _Stages(log, start)

    stage("SynthCity data")
    ensure_data(plan, log)

    for run in ("baseline", "pretrain", "finetune"):
        stage(f"training {_RUN_TITLES[run]} ({plan.steps[run]} steps)")
        train_run(plan, run, log)

    stage("evaluating both models on the held-out sequences")
    results = {name: evaluate_run(plan, run) for name, run in _MODELS.items()}

    stage("segmenting a held-out clip with both models")
    media = render_media(plan, results)

    stage("writing the report")
    summary: dict[str, Any] = {
        "plan": {
            "seed": plan.seed,
            "minutes": plan.minutes,
            "quick": plan.quick,
            "steps": plan.steps,
            "data": {
                "train_sequences": plan.train_sequences,
                "val_sequences": plan.val_sequences,
                "frames": plan.frames,
                "size": list(plan.size),
            },
        },
        "results": results,
        "seconds": round(time.monotonic() - start, 1),
    }
    atomic_write_text(plan.out / "results.json", json.dumps(summary, indent=1))
    write_report(plan, summary, media)
    log(f"\n{headline_table(results)}\n")
    log(f"report: {plan.out / 'report.md'} (and report.html), {summary['seconds'] / 60:.1f} minutes in all")
    return summary


_RUN_TITLES = {
    "baseline": "the per-frame baseline",
    "pretrain": "the per-frame twin that the temporal model starts from",
    "finetune": "the temporal model (cRNN units, warm-started)",
}
_MODELS = {"per-frame": "baseline", "temporal": "finetune"}


class _Stages:
    def __init__(self, log, start: float):
        self.log, self.start, self.count = log, start, 0

    def __call__(self, title: str) -> None:
        self.count += 1
        self.log(f"\n[{self.count}/7, {(time.monotonic() - self.start) / 60:.1f} min] {title}")


def ensure_data(plan: DemoPlan, log=print) -> Path:
    """Generate SynthCity at ``plan.data_root`` unless a dataset with the same parameters is already there."""
    root = plan.data_root
    wanted = {
        "seed": plan.seed,
        "frames_per_sequence": plan.frames,
        "size": list(plan.size),
        "splits": {"train": plan.train_sequences, "val": plan.val_sequences},
    }
    meta_path = root / "synthcity.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
        if all(meta.get(key) == value for key, value in wanted.items()):
            log(f"reusing {root}")
            return root
        log(f"{root} was generated with other parameters; generating it again")
    start = time.monotonic()
    generate(
        root,
        sequences=plan.train_sequences,
        frames=plan.frames,
        size=plan.size,
        seed=plan.seed,
        val_sequences=plan.val_sequences,
        workers=plan.workers,
        overwrite=True,
    )
    frames = (plan.train_sequences + plan.val_sequences) * plan.frames
    seconds = time.monotonic() - start
    log(f"wrote {root}: {frames} frames in {seconds:.0f} s ({frames / seconds:.0f} frames/s)")
    return root


def train_run(plan: DemoPlan, run: str, log=print) -> Path:
    """Train one of the runs from scratch into its run directory (an old one is replaced)."""
    run_dir = plan.run_dir(run)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = config_from_dict(plan.config(run), source=f"the demo's {run} config")
    run_dir.mkdir(parents=True)
    atomic_write_text(plan.out / "configs" / f"{run}.yaml", dump_config(config))
    train(config, run_dir, log=log)
    return run_dir / "last.pt"


def _val_dataset(plan: DemoPlan):
    return CityscapesSequences(
        plan.data_root, "val", num_frames=plan.frames, gt_position="last", transform=ClipTransform(size=plan.size)
    )


def evaluate_run(plan: DemoPlan, run: str) -> dict[str, Any]:
    """Evaluate a run's final checkpoint on every held-out sequence, all frames labelled."""
    checkpoint = load_checkpoint(plan.run_dir(run) / "last.pt")
    model = model_from_checkpoint(checkpoint)
    results = evaluate_model(model, _val_dataset(plan), tc=True, per_position="labelled", progress=True).to_dict()
    atomic_write_text(plan.run_dir(run) / "evaluation.json", json.dumps(results, indent=1))
    return results


# ------------------------------------------------------------------------------------------------- media


def _read_sequence(plan: DemoPlan, sequence: str) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Frames (uint8 RGB), ground-truth class maps and corruption codes of one validation sequence."""
    meta = json.loads((plan.data_root / "synthcity.json").read_text())
    codes = meta["sequences"]["val"][sequence]["corruption"]
    city = sequence.split("_")[0]
    lut = get_label_set("cityscapes").lut
    frames, labels = [], []
    for index in range(plan.frames):
        stem = f"{sequence}_{index:06d}"
        frames.append(read_image(plan.data_root / "leftImg8bit_sequence" / "val" / city / f"{stem}_leftImg8bit.png"))
        label_ids = read_label_ids(plan.data_root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png")
        labels.append(lut[label_ids])
    return frames, labels, list(codes)


def pick_clip(plan: DemoPlan) -> tuple[str, int]:
    """The held-out sequence to show, and the corrupted frame to centre the stills on: the first sequence whose
    first corruption burst starts late enough to show clean frames before it (else the first sequence)."""
    meta = json.loads((plan.data_root / "synthcity.json").read_text())
    sequences = meta["sequences"]["val"]
    for name in sorted(sequences):
        codes = sequences[name]["corruption"]
        corrupted = [i for i, code in enumerate(codes) if code != 0]
        if corrupted and 3 <= corrupted[0] <= plan.frames - 3:
            return name, corrupted[0]
    name = sorted(sequences)[0]
    corrupted = [i for i, code in enumerate(sequences[name]["corruption"]) if code != 0]
    return name, corrupted[0] if corrupted else plan.frames // 2


def render_media(plan: DemoPlan, results: dict[str, Any]) -> dict[str, str]:
    """Plots, the side-by-side video and the strip of stills; returns their file names within ``plan.out``."""
    sequence, centre = pick_clip(plan)
    frames, truth, codes = _read_sequence(plan, sequence)
    predictions = {}
    for name, run in _MODELS.items():
        segmenter = Segmenter(plan.run_dir(run) / "last.pt")
        predictions[name] = list(segmenter.stream(frames))

    zoom = max(1, 256 // plan.size[1])

    def big(image: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)

    def panel(t: int) -> list[np.ndarray]:
        what = CORRUPTIONS[codes[t]] if codes[t] < len(CORRUPTIONS) else str(codes[t])
        return [
            add_caption(big(frames[t]), f"input t={t} ({what})"),
            add_caption(big(colorize(predictions["per-frame"][t])), "per-frame UNet"),
            add_caption(big(colorize(predictions["temporal"][t])), "temporal (cRNN)"),
            add_caption(big(colorize(truth[t])), "ground truth"),
        ]

    media = {}
    video = plan.out / "side_by_side.mp4"
    with VideoWriter(video, frame_rate=8, overwrite=True) as writer:
        for t in range(len(frames)):
            writer.write(side_by_side(panel(t), gap=4))
    media["video"] = video.name

    steps = [t for t in range(centre - 2, centre + 3) if 0 <= t < len(frames)]
    columns = [panel(t) for t in steps]
    rows = [[column[kind] for column in columns] for kind in range(4)]
    _save_png(plan.out / "stills.png", frame_strip(rows, gap=4))
    media["stills"] = "stills.png"
    media["clip"] = f"{sequence}, frames {steps[0]}-{steps[-1]} (corruption at frame {centre})"

    media["per_position"] = _plot_per_position(plan.out / "per_position.png", results)
    media["corruption"] = _plot_corruption(plan.out / "per_corruption.png", results)
    return media


def _save_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _figure(width: float):
    """A new matplotlib figure and axes on the non-interactive backend."""
    # Imported here: matplotlib takes about half a second to import, and the backend is chosen before pyplot.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, 3.5), dpi=120)


def _save_figure(figure, axes, path: Path, title: str) -> str:
    import matplotlib.pyplot as plt

    axes.set_ylabel("mIoU (%)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path.name


def _plot_per_position(path: Path, results: dict[str, Any]) -> str:
    figure, axes = _figure(6)
    for name, result in results.items():
        position = result["per_position"]
        axes.plot(position["frames_seen"], [_pct(v) for v in position["miou"]], marker="o", label=name)
    axes.set_xlabel("frames seen (position in the sequence)")
    axes.grid(alpha=0.3)
    return _save_figure(figure, axes, path, "mIoU by number of frames seen, all held-out frames")


def _plot_corruption(path: Path, results: dict[str, Any]) -> str:
    groups = ["clean", *next(iter(results.values()))["corruption"]["types"]]
    figure, axes = _figure(7)
    width = 0.8 / len(results)
    for offset, (name, result) in enumerate(results.items()):
        corruption = result["corruption"]
        values = [_pct(corruption["clean"]["miou"])]
        values += [_pct(corruption["types"].get(kind, {}).get("miou")) for kind in groups[1:]]
        axes.bar(np.arange(len(groups)) + offset * width - 0.4 + width / 2, values, width, label=name)
    axes.set_xticks(np.arange(len(groups)), groups)
    axes.grid(axis="y", alpha=0.3)
    return _save_figure(figure, axes, path, "mIoU per corruption type, held-out frames")


def _pct(value) -> float:
    return math.nan if value is None else 100 * value


# ------------------------------------------------------------------------------------------------ report


def _fmt(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def headline_table(results: dict[str, Any]) -> str:
    """Markdown: both models on all, clean and corrupted held-out frames, plus TC and mVC."""
    lines = [
        "| model | mIoU all | mIoU clean | mIoU corrupted | mAcc all | aAcc all | TC | mVC_8 | mVC_16 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        all_frames, corruption = r["all_frames"], r["corruption"]
        lines.append(
            f"| {name} | {_fmt(all_frames['miou'])} | {_fmt(corruption['clean']['miou'])} "
            f"| {_fmt(corruption['corrupted']['miou'])} | {_fmt(all_frames['macc'])} | {_fmt(all_frames['aacc'])} "
            f"| {_fmt(r['tc'])} | {_fmt(r['mvc_8'])} | {_fmt(r['mvc_16'])} |"
        )
    return "\n".join(lines)


def _groups_table(results: dict[str, Any]) -> str:
    """mIoU / mAcc / aAcc of both models per frame group (all, clean, corrupted, each corruption type)."""
    names = list(results)
    first = results[names[0]]
    groups: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any] | None]]] = [
        ("all frames", lambda r: r["all_frames"]),
        ("clean", lambda r: r["corruption"]["clean"]),
    ]
    groups.append(("corrupted", lambda r: r["corruption"]["corrupted"]))
    for kind in first["corruption"]["types"]:

        def of_kind(r: dict[str, Any], kind: str = kind) -> dict[str, Any] | None:
            return r["corruption"]["types"].get(kind)

        groups.append((kind, of_kind))
    header = "| frames | " + " | ".join(f"{n} mIoU | {n} mAcc | {n} aAcc" for n in names) + " | mIoU gain |"
    lines = [header, "|---|" + "---:|" * (3 * len(names) + 1)]
    for title, get in groups:
        cells, mious = [], []
        for name in names:
            figures = get(results[name]) or {}
            mious.append(figures.get("miou"))
            cells.append(f"{_fmt(figures.get('miou'))} | {_fmt(figures.get('macc'))} | {_fmt(figures.get('aacc'))}")
        known = [miou for miou in mious if miou is not None]
        gain = "–" if len(known) < len(mious) else f"{100 * (known[-1] - known[0]):+.1f}"
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {gain} |")
    return "\n".join(lines)


def _class_table(results: dict[str, Any]) -> str:
    names = list(results)
    classes = [c for c, v in results[names[0]]["all_frames"]["iou"].items() if v is not None]
    lines = ["| class | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for cls in classes:
        lines.append(f"| {cls} | " + " | ".join(_fmt(results[n]["all_frames"]["iou"].get(cls)) for n in names) + " |")
    return "\n".join(lines)


def _findings(results: dict[str, Any]) -> list[str]:
    """Plain statements of where the temporal model wins and where it does not, computed from the results."""
    base, temporal = results["per-frame"], results["temporal"]

    def gain(get) -> float:
        return 100 * (get(temporal) - get(base))

    findings = []
    for title, get in [
        ("all held-out frames", lambda r: r["all_frames"]["miou"]),
        ("corrupted frames", lambda r: r["corruption"]["corrupted"]["miou"]),
        ("clean frames", lambda r: r["corruption"]["clean"]["miou"]),
    ]:
        delta = gain(get)
        verdict = "better" if delta > 0 else "worse"
        findings.append(f"On {title} the temporal model is {abs(delta):.1f} mIoU points {verdict} than per-frame.")
    if base["tc"] is not None and temporal["tc"] is not None:
        delta = 100 * (temporal["tc"] - base["tc"])
        findings.append(
            f"Temporal consistency (TC) is {abs(delta):.1f} points {'higher' if delta > 0 else 'lower'} "
            f"({_fmt(temporal['tc'])} vs {_fmt(base['tc'])})."
        )
    first = temporal["per_position"]["miou"][0], base["per_position"]["miou"][0]
    if None not in first:
        findings.append(
            f"At the first frame of a sequence (no memory yet) the temporal model scores {_fmt(first[0])} mIoU against "
            f"{_fmt(first[1])}: what it adds comes from the frames it has seen."
        )
    return findings


def write_report(plan: DemoPlan, summary: dict[str, Any], media: dict[str, str]) -> None:
    results = summary["results"]
    configs = {run: (plan.out / "configs" / f"{run}.yaml").read_text() for run in ("baseline", "pretrain", "finetune")}
    steps = plan.steps
    command = f"vidseg demo --out {plan.out} --minutes {plan.minutes:g} --seed {plan.seed}" + (
        " --quick" if plan.quick else ""
    )
    lines = [
        "# vidseg demo: what temporal units buy on SynthCity",
        "",
        f"Per-frame UNet (`{BASELINE_MODEL}`) against its temporal twin (`{TEMPORAL_MODEL}`: the same blocks and "
        "size, with cRNN units on the skip connections), trained at equal compute and evaluated on "
        f"{plan.val_sequences} held-out sequences of {plan.frames} frames at {plan.size[0]}x{plan.size[1]}, every "
        "frame labelled. About 30% of the frames are corrupted (noise, darkness, over-exposure, blur, dropped "
        "regions) or briefly occluded; their labels are the true scene.",
        "",
        "Standard Cityscapes metrics over the classes present (void ignored); figures in percent.",
        "",
        headline_table(results),
        "",
        "## Findings",
        "",
        *[f"- {line}" for line in _findings(results)],
        "",
        "## Per frame group",
        "",
        _groups_table(results),
        "",
        "## mIoU by frames seen",
        "",
        f"![mIoU by frames seen]({media['per_position']})",
        "",
        "## mIoU per corruption type",
        "",
        f"![mIoU per corruption type]({media['corruption']})",
        "",
        "## Per-class IoU (all held-out frames)",
        "",
        _class_table(results),
        "",
        "## A held-out clip",
        "",
        f"Clip: {media['clip']}. Rows: input, per-frame UNet, temporal model, ground truth.",
        "",
        f"![stills around a corrupted frame]({media['stills']})",
        "",
        f"Video (input | per-frame | temporal | ground truth): [{media['video']}]({media['video']})",
        "",
        "## Training schedule (equal compute)",
        "",
        f"- temporal model: {steps['pretrain']} steps of per-frame pre-training, then {steps['finetune']} steps "
        "with cRNN units (identity-initialised, so training starts from the per-frame model's exact outputs);",
        f"- per-frame baseline: {steps['baseline']} steps, the same training FLOPs as the temporal schedule "
        "(torch.utils.flop_counter, forward + backward).",
        f"- Training precision: {'bf16 autocast' if plan.amp == 'bf16' else 'float32 (this CPU has no native bf16)'}.",
        f"- Total time of this run: {summary['seconds'] / 60:.1f} minutes.",
        "",
        "## Reproduce",
        "",
        "```bash",
        command,
        "```",
        "",
        "or step by step, with the configs below saved as files:",
        "",
        "```bash",
        f"vidseg synth --out {plan.data_root} --sequences {plan.train_sequences} --val-sequences {plan.val_sequences} "
        f"--frames {plan.frames} --size {plan.size[0]}x{plan.size[1]} --seed {plan.seed}",
        *[
            f"vidseg train {plan.out / 'configs' / f'{run}.yaml'} --out {plan.run_dir(run)}"
            for run in ("baseline", "pretrain", "finetune")
        ],
        *[
            f"vidseg evaluate --checkpoint {plan.run_dir(run) / 'last.pt'} --num-frames {plan.frames}"
            for run in ("baseline", "finetune")
        ],
        "```",
        "",
    ]
    for run, text in configs.items():
        lines += [f"### {run}.yaml ({_RUN_TITLES[run]})", "", "```yaml", text.rstrip(), "```", ""]
    markdown = "\n".join(lines)
    atomic_write_text(plan.out / "report.md", markdown)
    atomic_write_text(plan.out / "report.html", _html(markdown, plan.out))


def _html(markdown: str, folder: Path) -> str:
    """A self-contained HTML rendering of the report: images and the video embedded as data URIs."""
    body, in_code, in_table, in_list = [], False, False, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            body.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            body.append(html.escape(line))
            continue
        if in_table and not line.startswith("|"):
            body.append("</table>")
            in_table = False
        if in_list and not line.startswith("- "):
            body.append("</ul>")
            in_list = False
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-:"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            data = base64.b64encode((folder / src.rstrip(")")).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("Video"):
            src = line.rsplit("(", 1)[1].rstrip(")")
            data = base64.b64encode((folder / src).read_bytes()).decode()
            body.append(f'<p>{_inline(line.split(":")[0])}:</p><video controls loop autoplay muted '
                        f'src="data:video/mp4;base64,{data}"></video>')
        elif line.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    if in_list:
        body.append("</ul>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}pre{background:#f4f4f4;padding:8px;overflow:auto}"
        "img,video{max-width:100%;image-rendering:pixelated}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>vidseg demo</title><style>{style}</style>"
        f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)
