"""`vidseg params [NAME...]`: parameter count of every model against the report's Table 3."""

from __future__ import annotations

import argparse

HELP = "Parameter counts of every model, against the report's Table 3 (20 classes)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="model names (default: all 27)")
    parser.add_argument("--num-classes", type=int, default=20, help="output classes (Table 3 uses 20)")


def run(args: argparse.Namespace) -> int:
    from vidseg.errors import VidsegError
    from vidseg.models import MODEL_NAMES, REPORT_PARAMS, build_model, count_parameters

    names = args.names or MODEL_NAMES
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise VidsegError(f"unknown model name(s) {', '.join(unknown)}; valid names are: {', '.join(MODEL_NAMES)}")
    compare = args.num_classes == 20
    rows = []
    for name in names:
        ours = count_parameters(build_model(name, num_classes=args.num_classes))
        published = REPORT_PARAMS.get(name)
        if published is None:
            status = "not published"
        elif not compare:
            status = "n/a (Table 3 uses 20 classes)"
        else:
            status = "yes" if ours == published else f"NO ({ours - published:+,})"
        rows.append((name, f"{ours:,}", f"{published:,}" if published else "-", status))

    header = ("model", "parameters", "report (Table 3)", "match")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    matched = sum(1 for r in rows if r[3] == "yes")
    published_rows = sum(1 for r in rows if r[2] != "-")
    if compare:
        print(f"\n{matched} of {published_rows} published counts match exactly (num_classes={args.num_classes}).")
    return 0
