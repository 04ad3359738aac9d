"""`vidseg synth`: write SynthCity, the procedural street-video dataset, in the Cityscapes layout."""

from __future__ import annotations

import argparse

MAX_SEQUENCES = 1_000_000

HELP = "write SynthCity, a procedural street-video dataset (Cityscapes layout, every frame labelled)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="dataset root to create (must not exist, or be empty)")
    parser.add_argument("--sequences", type=int, default=40, help="training sequences (default 40)")
    parser.add_argument(
        "--val-sequences", type=int, default=None, help="validation sequences (default: sequences // 4, at least 1)"
    )
    parser.add_argument("--frames", type=int, default=24, help="frames per sequence (default 24)")
    parser.add_argument("--size", default="64x128", help="HEIGHTxWIDTH of the frames (default 64x128)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes (default 0)")
    parser.add_argument("--colour", action="store_true", help="also write _gtFine_color.png files")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing SynthCity dataset at --out")


def run(args: argparse.Namespace) -> int:
    import time

    from vidseg.data.synthcity import generate
    from vidseg.data.transforms import parse_size
    from vidseg.errors import VidsegError

    try:
        size = parse_size(args.size)
    except ValueError as error:
        raise VidsegError(f"--size: {error}") from None
    if args.sequences < 1 or args.frames < 1 or (args.val_sequences is not None and args.val_sequences < 0):
        raise VidsegError("--sequences and --frames must be at least 1, --val-sequences at least 0")
    if min(size) < 8:
        raise VidsegError(f"--size {args.size} is too small; use at least 8x8 (the demo uses 64x128)")
    from vidseg.config import check_frame_size

    # A sequence is rendered in memory, all its frames at once.
    check_frame_size(size, "--size", frames=args.frames)
    total = args.sequences + (args.val_sequences or 0)
    if total > MAX_SEQUENCES:
        raise VidsegError(f"--sequences/--val-sequences ask for {total:,} sequences; the limit is {MAX_SEQUENCES:,}")
    start = time.perf_counter()
    meta = generate(
        args.out,
        sequences=args.sequences,
        frames=args.frames,
        size=size,
        seed=args.seed,
        val_sequences=args.val_sequences,
        colour=args.colour,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    total = sum(meta["splits"].values()) * args.frames
    print(
        f"wrote {args.out}: {meta['splits']['train']} train + {meta['splits']['val']} val sequences of "
        f"{args.frames} frames at {size[0]}x{size[1]} ({total} frames in {seconds:.1f} s, "
        f"{total / seconds:.0f} frames/s)"
    )
    for split, shares in meta["rates"]["measured"].items():
        print(f"  {split}: " + ", ".join(f"{name} {share:.1%}" for name, share in shares.items()))
    return 0
