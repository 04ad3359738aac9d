"""Side by side figures of `vidseg evaluate` results of one model (e.g. fp32 and int8), with the differences.

    vidseg evaluate --checkpoint run/last.pt --precision fp32 --out fp32.json
    vidseg evaluate --checkpoint run/last.pt --precision int8 --out int8.json
    python benchmarks/compare_evaluations.py fp32.json int8.json --tag camvid

Rows: mIoU of the scored frames, all labelled frames of the windows (where the results have them), clean and
corrupted frames (where frames were corrupted), TC and mVC_8 / mVC_16, in points; the difference is the last
file minus the first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import write_result

from vidseg.results import EvaluationResults, read_results


def figures(results: EvaluationResults) -> dict[str, float | None]:
    rows: dict[str, float | None] = {"mIoU (scored frames)": results.miou}
    if results.all_frames is not None:
        rows["mIoU, all labelled frames"] = results.all_frames.miou
    if results.corruption is not None:
        rows["mIoU, clean frames"] = results.corruption.clean.miou
        rows["mIoU, corrupted frames"] = results.corruption.corrupted.miou
    rows.update({"TC": results.tc, "mVC_8": results.mvc_8, "mVC_16": results.mvc_16})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="results JSON files of `vidseg evaluate`")
    parser.add_argument("--names", nargs="+", help="column names (default: each file's run.precision)")
    parser.add_argument("--tag", help="also write benchmarks/results/compare_evaluations_TAG.md")
    args = parser.parse_args()
    if len(args.results) < 2:
        parser.error("give at least two results files")
    evaluations = [read_results(path) for path in args.results]
    runs = [evaluation.run or {} for evaluation in evaluations]
    names = args.names or [str(run.get("precision") or run.get("amp") or path.stem)
                           for run, path in zip(runs, args.results)]
    if len(names) != len(args.results):
        parser.error("--names needs one name per results file")
    table = [figures(evaluation) for evaluation in evaluations]

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.2f}"

    lines = [
        f"## {runs[0].get('model_name', '?')} on {runs[0].get('data', '?')} ({runs[0].get('split', '?')})",
        "",
        "| figure | " + " | ".join(names) + f" | {names[-1]} − {names[0]} |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for key in table[0]:
        values = [row.get(key) for row in table]
        first, last = values[0], values[-1]
        delta = "–" if first is None or last is None else f"{100 * (last - first):+.2f}"
        lines.append(f"| {key} | " + " | ".join(cell(v) for v in values) + f" | {delta} |")
    lines += ["", "Files: " + ", ".join(str(path) for path in args.results)]
    print("\n".join(lines))
    if args.tag:
        print(f"wrote {write_result(f'compare_evaluations_{args.tag}', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
