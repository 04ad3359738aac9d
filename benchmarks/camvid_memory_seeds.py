"""Output memory on CamVid over seeds: each seed's memory model against its own network alone.

Each folder is the OUT of one ``RUNS=memory benchmarks/camvid_recipes.sh`` run with ``loss.memory_gradient=false``:
``memory-{clean,C}.json`` score the model, ``memory-off-{clean,C}.json`` its network without the memory, which is
the per-frame twin at the same step count (``benchmarks/without_memory.py``). Where a folder also holds a per-frame
twin's ``per-frame-{clean,C}.json`` (``RUNS="per-frame memory"``), the margins over it are shown too.

    python benchmarks/camvid_memory_seeds.py runs/d0 runs/d1 runs/d2 --tag camvid_memory_seeds
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import write_result

from vidseg.results import EvaluationResults, read_results

# Issue 15's CamVid bar, in points over the per-frame twin: clean val at least equal, corrupted frames +10.
BARS = {"clean val": 0.0, "corrupted": 10.0}
THIN = ("Pole", "SignSymbol", "Pedestrian")


def figures(clean: EvaluationResults, corrupted: EvaluationResults) -> dict[str, float | None]:
    """The table's figures of one model, in points."""
    assert corrupted.corruption is not None, "the -C results were not evaluated with --corrupt"
    position = clean.per_position
    rows: dict[str, float | None] = {
        "clean val": clean.miou,
        "first frames": position.miou[0] if position and position.miou else None,
        "stream": position.stream_miou if position else None,
        "TC": clean.tc,
        "C clean": corrupted.corruption.clean.miou,
        "corrupted": corrupted.corruption.corrupted.miou,
        "C all": corrupted.miou,
        "TC (-C)": corrupted.tc,
    }
    rows.update({name: clean.iou.get(name) for name in THIN})
    return {key: None if value is None else 100 * value for key, value in rows.items()}


def load(folder: Path, run: str) -> dict[str, float | None] | None:
    paths = [folder / f"{run}-clean.json", folder / f"{run}-C.json"]
    if not all(path.exists() for path in paths):
        return None
    return figures(*(read_results(path) for path in paths))


def cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="OUT folders of camvid_recipes.sh, one per seed")
    parser.add_argument("--names", nargs="+", help="row names (default: the folder names)")
    parser.add_argument("--tag", help="also write benchmarks/results/TAG.md")
    args = parser.parse_args()
    names = args.names or [folder.name for folder in args.folders]
    if len(names) != len(args.folders):
        parser.error("--names needs one name per folder")

    rows, margins = [], {"network alone": [], "per-frame twin": []}
    for name, folder in zip(names, args.folders):
        memory, alone = load(folder, "memory"), load(folder, "memory-off")
        if memory is None or alone is None:
            parser.error(f"{folder}: expected memory-{{clean,C}}.json and memory-off-{{clean,C}}.json in it")
        twin = load(folder, "per-frame")
        rows += [(f"{name}: network alone", alone), (f"{name}: with memory", memory)]
        margins["network alone"].append((name, {k: _minus(memory[k], alone[k]) for k in memory}))
        if twin is not None:
            rows.insert(-2, (f"{name}: per-frame twin", twin))
            margins["per-frame twin"].append((name, {k: _minus(memory[k], twin[k]) for k in memory}))
    keys = list(rows[0][1])

    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(cell(row[k]) for k in keys) + " |" for name, row in rows]
    for reference, per_seed in margins.items():
        if not per_seed:
            continue
        lines += ["", f"Margins of the memory model over the {reference}, in points:", ""]
        lines += ["| seed | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        lines += [f"| {name} | " + " | ".join(cell(m[k], signed=True) for k in keys) + " |" for name, m in per_seed]
        means = {k: _mean([m[k] for _, m in per_seed]) for k in keys}
        lines.append("| mean | " + " | ".join(cell(means[k], signed=True) for k in keys) + " |")
        spreads = {k: _spread([m[k] for _, m in per_seed]) for k in keys}
        lines.append("| spread (max - min) | " + " | ".join(cell(spreads[k]) for k in keys) + " |")
        for figure, bar in BARS.items():
            values = [m[figure] for _, m in per_seed]
            met = all(v is not None and v >= bar for v in values)
            lines.append(f"\nIssue 15's bar, {figure} >= {bar:+.0f} on every seed: {'met' if met else 'missed'}")
    print("\n".join(lines))
    if args.tag:
        print(f"wrote {write_result(args.tag, chr(10).join(lines))}")


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _spread(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if known else None


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


if __name__ == "__main__":
    main()
