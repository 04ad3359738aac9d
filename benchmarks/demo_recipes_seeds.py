"""Temporal recipes over several seeds: each recipe's margin over the per-frame baseline, seed by seed.

Reads the demo folders that ``benchmarks/demo_recipes.py`` screened (one per seed; each seed is also another
SynthCity dataset): the baseline's and the demo's own temporal run's ``evaluation.json``, and each named recipe's
(``recipes/<name>/runs/finetune``). For each recipe and figure it writes the margin over the per-frame baseline per
seed, its mean, and whether every seed's margin clears the issue's bar (clean >= 0, corrupted >= +20, all >= +6,
TC > 0, each thin class >= 0).

    for s in 0 1 2; do vidseg demo --seed $s --minutes 4 --out runs/demo4-$s; \
        python benchmarks/demo_recipes.py --demo runs/demo4-$s --variants "residual units"; done
    python benchmarks/demo_recipes_seeds.py runs/demo4-0 runs/demo4-1 runs/demo4-2 --recipes "residual units"

Results: a Markdown table on stdout and in ``benchmarks/results/demo_recipes_seeds.md`` (``--name`` to write
another file).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import ISSUE15_BARS, meets_issue15_bar, write_result

from vidseg.results import EvaluationResults, read_results

FIGURES = {
    "mIoU all": lambda r: r.all_frames.miou,
    "mIoU clean": lambda r: r.corruption.clean.miou,
    "mIoU corrupted": lambda r: r.corruption.corrupted.miou,
    "TC": lambda r: r.tc,
    "mVC_8": lambda r: r.mvc_8,
    "pole": lambda r: r.all_frames.iou.get("pole"),
    "traffic sign": lambda r: r.all_frames.iou.get("traffic sign"),
    "person": lambda r: r.all_frames.iou.get("person"),
}
DEMO_RECIPE = "the demo's recipe"


def run_dir(demo: Path, recipe: str) -> Path:
    if recipe == DEMO_RECIPE:
        return demo / "runs" / "finetune"
    return demo / "recipes" / recipe.replace(" ", "_") / "runs" / "finetune"


def own_recipe(plan: dict) -> str:
    """The recipe options the demo folders ran with (``results.json``), as ``section.key=value``."""
    options = plan.get("finetune_options") or {}
    words = [f"{section}.{key}={value}" for section, values in options.items() for key, value in values.items()]
    scale = plan.get("pretrain_final_lr_scale", 0.0)  # demos before it decayed the pre-training rate to 0
    if scale:
        words.append(f"pre-training optim.final_lr_scale={scale:g}")
    return ", ".join(words) or "plain cRNN units"


def percent(results: EvaluationResults, get) -> float:
    value = get(results)
    return float("nan") if value is None else 100 * value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demos", nargs="+", help="demo folders screened by demo_recipes.py, one per seed")
    parser.add_argument("--recipes", nargs="*", default=[],
                        help="variant names of demo_recipes.py (default: none, the demo's own run only)")
    parser.add_argument("--name", default="demo_recipes_seeds", help="result file name under benchmarks/results")
    args = parser.parse_args()

    demos = [Path(folder) for folder in args.demos]
    summaries = [json.loads((demo / "results.json").read_text()) for demo in demos]
    seeds = [summary["plan"]["seed"] for summary in summaries]
    plans = {json.dumps({k: v for k, v in summary["plan"].items() if k != "seed"}) for summary in summaries}
    if len(plans) != 1:
        raise SystemExit("the demo runs differ in more than their seed (budget, steps or data); compare like with like")
    plan = summaries[0]["plan"]
    baselines = [read_results(demo / "runs" / "baseline" / "evaluation.json") for demo in demos]

    lines = [
        f"### Temporal recipes over seeds {', '.join(map(str, seeds))} (`--minutes {plan['minutes']:g}`)",
        "",
        f"Margin of each temporal recipe over the per-frame baseline ({plan['steps']['baseline']} steps), in mIoU "
        "(or TC, mVC_8, class IoU) points over the held-out frames, seed by seed; 'bar' is the issue's: clean >= 0, "
        "corrupted >= +20, all >= +6, TC > 0, pole / traffic sign / person >= 0 (on every seed).",
        "",
        "| recipe | " + " | ".join(FIGURES) + " |",
        "|---|" + "---|" * len(FIGURES),
    ]
    base_means = [statistics.mean(percent(r, get) for r in baselines) for get in FIGURES.values()]
    means = " | ".join(f"{m:.1f}" for m in base_means)
    lines.append(f"| per-frame baseline: its figures, mean over seeds | {means} |")
    for recipe in [DEMO_RECIPE, *args.recipes]:
        cells = []
        for figure, get in FIGURES.items():
            margins = [
                percent(read_results(run_dir(demo, recipe) / "evaluation.json"), get) - percent(base, get)
                for demo, base in zip(demos, baselines)
            ]
            met = "" if figure not in ISSUE15_BARS else (" ✓" if meets_issue15_bar(figure, margins) else " ✗")
            cells.append(f"{statistics.mean(margins):+.1f} ({', '.join(f'{m:+.1f}' for m in margins)}){met}")
        label = f"the demo folders' own run ({own_recipe(plan)})" if recipe == DEMO_RECIPE else recipe
        lines.append(f"| temporal, {label} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    print(markdown)
    print(f"written to {write_result(args.name, markdown)}")


if __name__ == "__main__":
    main()
