"""Where the thin classes are won and lost: pole, traffic sign and person IoU on clean frames, corrupted frames and
each corruption type, per-frame baseline against temporal recipes (issue 15).

A class's IoU over all frames pools every frame's pixels: intersection / union summed over the frames. A model that
predicts a class where it is not (on a corrupted frame, from memory) grows that class's union for every frame, so
the all-frames figure can fall while the clean-frame figure rises. The last column tells the two apart: on corrupted
frames, the pixels predicted as the class over the pixels that are the class (P / G), from the evaluation's class
accuracy (TP / G) and IoU (TP / (G + P - TP)): P / G = acc / IoU - 1 + acc.

Reads the ``evaluation.json`` files of demo folders that ``benchmarks/demo_recipes.py`` screened, one per seed (the
demo's baseline and its own temporal run, plus any named recipe):

    python benchmarks/thin_classes.py runs/demo10/s0 runs/demo10/s1 runs/demo10/s2

Results: a Markdown table on stdout and in ``benchmarks/results/thin_classes.md`` (``--name`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import write_result
from demo_recipes_seeds import DEMO_RECIPE, run_dir

from vidseg.results import Figures, read_results

CLASSES = ("pole", "traffic sign", "person")


def iou(figures: Figures, name: str) -> str:
    value = figures.iou.get(name)
    return "-" if value is None else f"{100 * value:.1f}"


def predicted_over_true(figures: Figures, name: str) -> str:
    """Pixels predicted as ``name`` over pixels labelled ``name`` (see the module docstring)."""
    value, acc = figures.iou.get(name), figures.acc.get(name)
    if not value or acc is None:
        return "-"
    return f"{acc / value - 1 + acc:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demos", nargs="+", help="demo folders screened by demo_recipes.py, one per seed")
    parser.add_argument("--recipes", nargs="*", default=[],
                        help="variant names of demo_recipes.py (default: none, the demo's own run only)")
    parser.add_argument("--name", default="thin_classes", help="result file name under benchmarks/results")
    args = parser.parse_args()

    models = {}
    for demo in map(Path, args.demos):
        seed = json.loads((demo / "results.json").read_text())["plan"]["seed"]
        models[(seed, "per-frame baseline")] = read_results(demo / "runs" / "baseline" / "evaluation.json")
        for recipe in [DEMO_RECIPE, *args.recipes]:
            models[(seed, recipe)] = read_results(run_dir(demo, recipe) / "evaluation.json")
    types = list(next(iter(models.values())).corruption.types)

    lines = [
        "### Thin classes by frame kind",
        "",
        "Class IoU in percent, pooled over the held-out frames of each kind; P / G: pixels predicted as the class "
        "over pixels labelled the class, on corrupted frames.",
        "",
        "| class | seed | model | all frames | clean | corrupted | " + " | ".join(types) + " | P / G corrupted |",
        "|---|---:|---|" + "---:|" * (4 + len(types)),
    ]
    for name in CLASSES:
        for (seed, model), results in models.items():
            corruption = results.corruption
            cells = [iou(results.all_frames, name), iou(corruption.clean, name), iou(corruption.corrupted, name)]
            cells += [iou(corruption.types[kind], name) for kind in types]
            cells.append(predicted_over_true(corruption.corrupted, name))
            lines.append(f"| {name} | {seed} | {model} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    print(markdown)
    print(f"written to {write_result(args.name, markdown)}")


if __name__ == "__main__":
    main()
