"""The demo's pipeline: make the data, train the three runs, evaluate both models, render the media, report."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidseg.checkpoint import TrainState
from vidseg.config import config_from_dict, dump_config
from vidseg.data import CityscapesSequences
from vidseg.data.synthcity import generate
from vidseg.data.transforms import ClipTransform
from vidseg.demo.evaluation import ModelResults
from vidseg.demo.media import render_media
from vidseg.demo.plan import MODELS, RUN_TITLES, RUNS, DemoPlan
from vidseg.demo.report import headline_table, write_report
from vidseg.evaluate import evaluate_model
from vidseg.fileio import atomic_write_text
from vidseg.results import EvaluationResults
from vidseg.train import train

Log = Callable[[str], None]


def run_demo(plan: DemoPlan, log: Log = print) -> dict[str, Any]:
    """Run the whole demo; return the summary that ``results.json`` holds (the plan, both models' results)."""
    start = time.monotonic()
    plan.out.mkdir(parents=True, exist_ok=True)
    stage = _Stages(log, start)

    stage("SynthCity data")
    ensure_data(plan, log)

    for run in RUNS:
        stage(f"training {RUN_TITLES[run]} ({plan.steps[run]} steps)")
        train_run(plan, run, log)

    stage("evaluating both models on the held-out sequences")
    results = {name: ModelResults.of(evaluate_run(plan, run), f"the {run} run") for name, run in MODELS.items()}

    stage("segmenting a held-out clip with both models")
    media = render_media(plan, results)

    stage("writing the report")
    seconds = round(time.monotonic() - start, 1)
    summary: dict[str, Any] = {
        "plan": plan.summary(),
        "results": {name: result.evaluation.to_dict() for name, result in results.items()},
        "seconds": seconds,
    }
    atomic_write_text(plan.out / "results.json", json.dumps(summary, indent=1))
    write_report(plan, results, media, seconds)
    log(f"\n{headline_table(results).markdown()}\n")
    log(f"report: {plan.out / 'report.md'} (and report.html), {seconds / 60:.1f} minutes in all")
    return summary


class _Stages:
    def __init__(self, log: Log, start: float):
        self.log, self.start, self.count = log, start, 0

    def __call__(self, title: str) -> None:
        self.count += 1
        self.log(f"\n[{self.count}/7, {(time.monotonic() - self.start) / 60:.1f} min] {title}")


def ensure_data(plan: DemoPlan, log: Log = print) -> Path:
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


def train_run(plan: DemoPlan, run: str, log: Log = print) -> Path:
    """Train one of the runs from scratch into its run directory (an old one is replaced)."""
    run_dir = plan.run_dir(run)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = config_from_dict(plan.config(run), source=f"the demo's {run} config")
    run_dir.mkdir(parents=True)
    atomic_write_text(plan.config_path(run), dump_config(config))
    train(config, run_dir, log=log)
    return run_dir / "last.pt"


def evaluate_run(plan: DemoPlan, run: str) -> EvaluationResults:
    """Evaluate a run's final checkpoint on every held-out sequence, all frames labelled; also saved as the run's
    ``evaluation.json``."""
    model = TrainState.load(plan.run_dir(run) / "last.pt").build_model()
    val = CityscapesSequences(
        plan.data_root, "val", num_frames=plan.frames, gt_position="last", transform=ClipTransform(size=plan.size)
    )
    results = evaluate_model(model, val, tc=True, per_position="labelled", progress=True)
    atomic_write_text(plan.run_dir(run) / "evaluation.json", json.dumps(results.to_dict(), indent=1))
    return results
