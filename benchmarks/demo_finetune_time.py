"""Wall time of the demo's training runs under its current and previous temporal recipes, at the same FLOPs.

The demo's schedule fixes the fine-tuning run's training FLOPs, not its time. 1x1 units add 5% to a per-frame step
in FLOPs and get 833 steps where 3x3 units get 600, but a recurrent step has costs that no FLOP count sees (the frame
loop, the units' elementwise work). This script trains the same fraction of each run's steps on a finished demo's
data (the fine-tuning runs from its pre-training run), alternating the runs and keeping each one's best time per
step, and projects the demo's total training time under each recipe.

    vidseg demo --out runs/demo
    python benchmarks/demo_finetune_time.py --demo runs/demo --fraction 0.1

Results: a Markdown table on stdout and in ``benchmarks/results/demo_finetune_time.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from common import write_result

from vidseg.demo import DemoPlan, train_run

PREVIOUS = {"model": {"temporal_residual": True}, "data": {"mixup": {"kind": "cutmix", "prob": 0.5}}}
"""The recipe the demo trained before issue 15's 1x1 units: residual 3x3 cRNN units with CutMix."""


def seconds_per_step(run_dir: Path) -> float:
    """Seconds per step between the run's first and last logged steps (set-up, data loader start and the first
    logging window are left out, so runs of different lengths are timed alike)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first, *_, last = [record for record in records if record.get("event") == "train"]
    return (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", required=True, help="output folder of a finished `vidseg demo`")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of each run's steps to time")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    summary = json.loads((Path(args.demo) / "results.json").read_text())["plan"]
    demo = DemoPlan.create(args.demo, seed=summary["seed"], minutes=summary["minutes"], quick=summary["quick"])
    work = Path(tempfile.mkdtemp(prefix="demo_finetune_time-"))
    runs = {}
    for label, run, options in [
        ("per-frame baseline", "baseline", None),
        ("temporal fine-tuning, previous recipe (residual 3x3 units + CutMix)", "finetune", PREVIOUS),
        ("temporal fine-tuning, current recipe (the demo's default)", "finetune", demo.finetune_options),
    ]:
        plan = DemoPlan.create(work / f"{len(runs)}", seed=demo.seed, minutes=demo.minutes, quick=demo.quick)
        if options is not None:
            plan.finetune_options = options
        plan.steps = plan.schedule()
        full = plan.steps[run]
        plan.steps[run] = max(1, round(args.fraction * full))
        plan.run_dir("pretrain").parent.mkdir(parents=True)
        os.symlink(demo.data_root.resolve(), plan.data_root)
        os.symlink(demo.run_dir("pretrain").resolve(), plan.run_dir("pretrain"))
        runs[label] = (plan, run, full, [])
    try:
        for _ in range(args.repeats):
            for plan, run, _full, times in runs.values():
                train_run(plan, run, log=lambda *_: None)
                times.append(seconds_per_step(plan.run_dir(run)))
    finally:
        shutil.rmtree(work)

    per_step = {label: min(times) for label, (_plan, _run, _full, times) in runs.items()}
    baseline = per_step["per-frame baseline"]
    lines = [
        f"### The demo's training time under two temporal recipes (`--minutes {demo.minutes:g}`, "
        f"{args.fraction:g} of each run timed, best of {args.repeats})",
        "",
        "| run | steps in the demo | steps timed | s per step | per step, vs the baseline | projected run time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    projected = {}
    for label, (plan, run, full, _times) in runs.items():
        projected[label] = per_step[label] * full
        lines.append(f"| {label} | {full} | {plan.steps[run]} | {per_step[label]:.3f} | "
                     f"{per_step[label] / baseline:.2f}x | {projected[label]:.0f} |")
    fixed = baseline * (demo.steps["baseline"] + demo.steps["pretrain"])  # baseline and pre-training runs
    previous, current = (projected[label] for label in list(runs)[1:])
    lines += [
        "",
        f"Training time of the demo (baseline + pre-training + fine-tuning, projected): previous recipe "
        f"{(fixed + previous) / 60:.1f} min, current recipe {(fixed + current) / 60:.1f} min, ratio "
        f"{(fixed + current) / (fixed + previous):.3f}; fine-tuning alone {current / previous:.3f}.",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    print(f"written to {write_result('demo_finetune_time', markdown)}")


if __name__ == "__main__":
    main()
