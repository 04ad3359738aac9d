"""The demo over several seeds: each model's mean and spread, and the temporal model's margin per seed.

Reads the ``results.json`` of finished demo runs (one folder per seed; each seed is also another SynthCity
dataset) and writes a table: per figure, each model's mean and spread (max - min over seeds), the margin of the
temporal model per seed, and whether the mean margin is larger than the spread of either model.

    for s in 0 1 2; do vidseg demo --seed $s --out runs/demo-$s; done
    python benchmarks/demo_seeds.py runs/demo-0 runs/demo-1 runs/demo-2

Results: a Markdown table on stdout and in ``benchmarks/results/demo_seeds.md`` (``--name`` for another file).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import ISSUE15_BARS, meets_issue15_bar, write_result

FIGURES = {
    "mIoU all": lambda r: r["all_frames"]["miou"],
    "mIoU clean": lambda r: r["corruption"]["clean"]["miou"],
    "mIoU corrupted": lambda r: r["corruption"]["corrupted"]["miou"],
    "TC": lambda r: r["tc"],
    "mVC_8": lambda r: r["mvc_8"],
    # the thin or moving classes of issue 15, on all frames and on clean frames
    "pole IoU all": lambda r: r["all_frames"]["iou"]["pole"],
    "traffic sign IoU all": lambda r: r["all_frames"]["iou"]["traffic sign"],
    "person IoU all": lambda r: r["all_frames"]["iou"]["person"],
    "pole IoU clean": lambda r: r["corruption"]["clean"]["iou"]["pole"],
    "traffic sign IoU clean": lambda r: r["corruption"]["clean"]["iou"]["traffic sign"],
    "person IoU clean": lambda r: r["corruption"]["clean"]["iou"]["person"],
}


def spread(values: list[float]) -> float:
    return max(values) - min(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demos", nargs="+", help="output folders of finished `vidseg demo` runs, one per seed")
    parser.add_argument("--name", default="demo_seeds", help="result file name under benchmarks/results")
    args = parser.parse_args()

    summaries = [json.loads((Path(folder) / "results.json").read_text()) for folder in args.demos]
    seeds = [summary["plan"]["seed"] for summary in summaries]
    plans = {json.dumps({k: v for k, v in summary["plan"].items() if k != "seed"}) for summary in summaries}
    if len(plans) != 1:
        raise SystemExit("the demo runs differ in more than their seed (budget, steps or data); compare like with like")
    steps = summaries[0]["plan"]["steps"]

    lines = [
        f"### The demo over seeds {', '.join(map(str, seeds))}",
        "",
        f"`vidseg demo --seed S` (budget `--minutes {summaries[0]['plan']['minutes']:g}`: per-frame baseline "
        f"{steps['baseline']} steps; temporal model {steps['pretrain']} + {steps['finetune']} steps). Figures in "
        "percent over all held-out frames; spread = max - min over seeds; bar: issue 15's smallest margin on every "
        "seed (TC: higher).",
        "",
        "| figure | per-frame (mean, spread) | temporal (mean, spread) | margin per seed | margin mean "
        "| margin spread | mean margin > spread of both models? | bar met on every seed? |",
        "|---|---:|---:|---|---:|---:|---|---|",
    ]
    for name, get in FIGURES.items():
        base = [100 * get(summary["results"]["per-frame"]) for summary in summaries]
        temporal = [100 * get(summary["results"]["temporal"]) for summary in summaries]
        margins = [t - b for b, t in zip(base, temporal)]
        beats_spread = abs(statistics.mean(margins)) > max(spread(base), spread(temporal))
        figure = name.removesuffix(" IoU all")  # the bars read the classes' all-frames IoU
        bar = ""
        if figure in ISSUE15_BARS:
            relation = "> 0" if figure == "TC" else f">= {ISSUE15_BARS[figure]:+g}"
            bar = f"{'yes' if meets_issue15_bar(figure, margins) else 'no'} ({relation})"
        lines.append(
            f"| {name} | {statistics.mean(base):.1f} ({spread(base):.1f}) "
            f"| {statistics.mean(temporal):.1f} ({spread(temporal):.1f}) "
            f"| {', '.join(f'{m:+.1f}' for m in margins)} | {statistics.mean(margins):+.1f} | {spread(margins):.1f} "
            f"| {'yes' if beats_spread else 'no'} | {bar} |"
        )
    markdown = "\n".join(lines)
    print(markdown)
    print(f"written to {write_result(args.name, markdown)}")


if __name__ == "__main__":
    main()
