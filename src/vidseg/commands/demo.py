"""`vidseg demo`: the main job, on the embedded SynthCity dataset."""

from __future__ import annotations

import argparse

HELP = "generate SynthCity, train a per-frame UNet and its temporal twin, compare them, write a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--minutes", type=float, default=10.0,
        help="training budget of both models together, turned into fixed step counts (default 10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of training (default 0)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run in seconds on tiny data (its numbers mean nothing)"
    )


def run(args: argparse.Namespace) -> int:
    from vidseg.demo import DemoPlan, run_demo

    run_demo(DemoPlan.create(args.out, seed=args.seed, minutes=args.minutes, quick=args.quick))
    return 0
