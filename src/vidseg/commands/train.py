"""`vidseg train`: train a model from a YAML config (also under `torchrun` for DDP)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a model from a YAML config (DDP under torchrun); --resume continues a run exactly"

EXIT_PREEMPTED = 143  # 128 + SIGTERM: a checkpoint was written, the run can be resumed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config, e.g. configs/synthcity/vanilla-crnn-small-shallow.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=100 --set data.size=[64,128] (repeatable)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest loadable checkpoint (CONFIG defaults to the run's own)",
    )
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<config name>)")
    parser.add_argument(
        "--layout", help="dataset layout of data.root: cityscapes, camvid, vspw or folders (same as --set data.layout=)"
    )


def run(args: argparse.Namespace) -> int:
    from vidseg.config import config_to_dict, load_config
    from vidseg.errors import VidsegError
    from vidseg.fileio import check_outputs_spare_inputs
    from vidseg.train import RUN_FILES, resume_config, train

    if args.layout:
        args.overrides = [*args.overrides, f"data.layout={args.layout}"]

    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise VidsegError(f"--resume {args.resume} continues that run in place; drop --out {args.out}")
        run_dir = Path(args.resume)
        stored = resume_config(run_dir)
        config = load_config(args.config, args.overrides) if args.config else resume_config(run_dir, args.overrides)
        changed = _changed_keys(config_to_dict(stored), config_to_dict(config))
        if changed:  # applied from here on, or refused by train() with the reason
            print("resuming with changed settings: " + ", ".join(changed))
    else:
        if not args.config:
            raise VidsegError("give a CONFIG file to train, or --resume RUN_DIR to continue a run")
        config = load_config(args.config, args.overrides)
        run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        # A resumed run rewrites its own config.yaml with the resolved config; a new run must not replace CONFIG.
        outputs = [(f"run directory file {name}", run_dir / name) for name in RUN_FILES]
        check_outputs_spare_inputs(outputs, [("CONFIG", args.config)])
    result = train(config, run_dir, resume=bool(args.resume))
    return EXIT_PREEMPTED if result.stopped_by == "sigterm" else 0


def _changed_keys(before: dict, after: dict, prefix: str = "") -> list[str]:
    changed = []
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            changed += _changed_keys(old, value, f"{prefix}{key}.")
        elif old != value:
            changed.append(f"{prefix}{key} {old!r} -> {value!r}")
    return changed
