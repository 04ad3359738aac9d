"""`vidseg prepare`: cache the frames that training/evaluation windows touch, resized, for fast loading (any
layout: the cache reads the video index)."""

from __future__ import annotations

import argparse
import os

HELP = "cache the frames that windows can touch, resized, as memory-mappable arrays (much faster than PNGs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="dataset root (Cityscapes/SynthCity, CamVid, VSPW, folders)")
    parser.add_argument(
        "--layout", default=None, help="the root's layout: cityscapes, camvid, vspw or folders (default: detected)"
    )
    parser.add_argument("--out", required=True, help="cache folder (an existing cache of the same size is updated)")
    parser.add_argument("--size", required=True, help="HEIGHTxWIDTH of the cached frames, e.g. 512x1024")
    parser.add_argument("--split", nargs="+", default=None, help="splits to cache (default: train and val)")
    parser.add_argument(
        "--num-frames", type=int, default=None, help="longest window to serve (default: whole sequences/snippets)"
    )
    parser.add_argument("--max-stride", type=int, default=1, help="largest frame stride to serve (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="processes decoding PNGs in parallel (default 1)")


def run(args: argparse.Namespace) -> int:
    import time

    from vidseg.data.cache import prepare_cache
    from vidseg.data.transforms import parse_size
    from vidseg.errors import VidsegError

    try:
        size = parse_size(args.size)
    except ValueError as error:
        raise VidsegError(f"--size: {error}") from None
    if args.num_frames is not None and args.num_frames < 1 or args.max_stride < 1:
        raise VidsegError("--num-frames and --max-stride must be at least 1")
    from pathlib import Path

    from vidseg.config import check_frame_size
    from vidseg.fileio import check_outputs_spare_inputs, remove_dead_temporaries

    check_frame_size(size, "--size")
    # The cache may live inside the dataset root (beside the folders it caches), but it may not be or hold them.
    out, root = Path(args.out), Path(args.root)
    inputs = [("--root", root)] if not root.is_dir() else [
        ("dataset entry", entry) for entry in root.iterdir() if not _holds(entry, out)
    ]
    check_outputs_spare_inputs([("--out", out)], inputs)
    if out.is_dir():
        for folder, _, _ in os.walk(out):
            remove_dead_temporaries(folder)  # left by a killed earlier run
    start = time.perf_counter()
    try:
        manifest = prepare_cache(
            args.root,
            args.out,
            size,
            splits=args.split,
            num_frames=args.num_frames,
            max_stride=args.max_stride,
            workers=args.workers,
            progress=True,
            layout=args.layout,
        )
    except ValueError as error:
        raise VidsegError(f"--num-frames/--max-stride: {error}") from None
    seconds = time.perf_counter() - start
    for split, info in manifest["splits"].items():
        if args.split is not None and split not in args.split:
            continue
        frames = sum(len(entry["frames"]) for entry in info["entries"])
        missing = sum(len(entry["missing"]) for entry in info["entries"])
        print(
            f"{split}: {len(info['entries'])} entries, {frames} frames at {size[0]}x{size[1]}"
            + (f", {missing} missing frames recorded" if missing else "")
        )
    print(f"cache written to {args.out} in {seconds:.1f} s")
    return 0


def _holds(entry, out) -> bool:
    """Whether dataset entry ``entry`` is a folder above ``out`` (resolved)."""
    from pathlib import Path

    return Path(os.path.realpath(entry)) in Path(os.path.realpath(out)).parents
