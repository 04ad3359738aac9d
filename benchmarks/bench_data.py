"""Data-loading throughput: 5-frame training windows from 1024x2048 PNGs vs. from the frame cache, and SynthCity
generation speed.

A Cityscapes-layout tree is generated in a temporary folder: snippets whose frames are SynthCity street scenes
rendered at 1024x2048 (with sensor noise, written at PNG compression level 6), so that decoding costs what real
frames cost. The same training dataset (random window position, resize to 512x1024, flip) is then read from the
PNGs and from a cache made by ``prepare_cache``, in one process with one thread (one DataLoader worker).

    .venv/bin/python benchmarks/bench_data.py [--samples 6] [--cached-samples 60] [--repeats 3] [--snippets 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import best_time, write_result
from PIL import Image

from vidseg.data import CityscapesSequences, ClipTransform
from vidseg.data.cache import prepare_cache
from vidseg.data.synthcity import generate, render_sequence, sequence_seed

FULL_SIZE = (1024, 2048)
WORK_SIZE = (512, 1024)
NUM_FRAMES = 5
ANNOTATED = 313


def write_full_resolution_tree(root: Path, snippets: int) -> float:
    """Snippets of 9 frames (all a 5-frame window can touch) at 1024x2048; returns the mean PNG size in MB."""
    reach = NUM_FRAMES - 1
    images, labels, _ = render_sequence(sequence_seed(11, "train", 0), 2 * reach + 1, FULL_SIZE, "downtown")
    first = None
    for snippet in range(snippets):
        city = f"city{snippet}"
        image_dir = root / "leftImg8bit_sequence/train" / city
        label_dir = root / "gtFine/train" / city
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        for t in range(2 * reach + 1):
            frame = ANNOTATED - reach + t
            path = image_dir / f"{city}_000000_{frame:06d}_leftImg8bit.png"
            if first is None:
                Image.fromarray(images[t]).save(path, compress_level=6)
            else:  # same pixels, same decoding cost: copy instead of encoding again
                shutil.copyfile(first / f"city0_000000_{frame:06d}_leftImg8bit.png", path)
        Image.fromarray(labels[reach]).save(label_dir / f"{city}_000000_{ANNOTATED:06d}_gtFine_labelIds.png")
        first = first or image_dir
    sizes = [p.stat().st_size for p in first.iterdir()]
    return float(np.mean(sizes)) / 1e6


def samples_per_second(dataset, count: int, repeats: int) -> float:
    """Best rate over ``repeats`` runs of ``count`` seeded samples (the least disturbed run of a shared machine)."""
    indices = [(i % len(dataset), i) for i in range(count)]
    seconds = best_time(lambda: [dataset[index] for index in indices], repeats)
    return count / seconds


def generation_fps(folder: Path, sequences: int, frames: int, workers: int) -> float:
    start = time.perf_counter()
    generate(folder, sequences=sequences, frames=frames, size=(64, 128), seed=0, val_sequences=0, workers=workers)
    return sequences * frames / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6, help="samples per timed run from PNGs")
    parser.add_argument("--cached-samples", type=int, default=60, help="samples per timed run from the cache")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (the best is reported)")
    parser.add_argument("--snippets", type=int, default=4, help="annotated frames in the generated tree")
    parser.add_argument("--synth-sequences", type=int, default=20, help="SynthCity sequences (24 frames, 64x128)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        png_mb = write_full_resolution_tree(tmp / "root", args.snippets)
        print(f"generated the 1024x2048 tree in {time.perf_counter() - start:.1f} s ({png_mb:.2f} MB per PNG)")
        transform = ClipTransform(WORK_SIZE, hflip=True)
        decoded = CityscapesSequences(tmp / "root", "train", num_frames=NUM_FRAMES, transform=transform)
        png_rate = samples_per_second(decoded, args.samples, args.repeats)

        start = time.perf_counter()
        prepare_cache(tmp / "root", tmp / "cache", WORK_SIZE, splits=["train"], num_frames=NUM_FRAMES)
        prepare_seconds = time.perf_counter() - start
        cached = CityscapesSequences(
            tmp / "root", "train", num_frames=NUM_FRAMES, transform=transform, cache=tmp / "cache"
        )
        cache_rate = samples_per_second(cached, args.cached_samples, args.repeats)
        rows += [
            ("5-frame window from 1024x2048 PNGs (decode, resize to 512x1024)", f"{png_rate:.2f} samples/s", "1.0x"),
            ("5-frame window from the 512x1024 cache", f"{cache_rate:.2f} samples/s", f"{cache_rate / png_rate:.1f}x"),
            (f"`prepare_cache`, {args.snippets} snippets x 9 frames, 1 worker", f"{prepare_seconds:.1f} s", ""),
        ]

        frames = args.synth_sequences * 24
        single = generation_fps(tmp / "synth1", args.synth_sequences, 24, workers=1)
        rows.append((f"SynthCity generation, 64x128, {frames} frames, 1 process", f"{single:.0f} frames/s", ""))
        workers = min(4, os.cpu_count() or 1)
        if workers > 1:
            parallel = generation_fps(tmp / "synth2", args.synth_sequences, 24, workers=workers)
            rows.append(
                (f"SynthCity generation, 64x128, {frames} frames, {workers} processes", f"{parallel:.0f} frames/s", "")
            )

    table = ["| measurement | result | vs. PNG |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    markdown = "\n".join(
        [
            "### Data loading and SynthCity generation",
            "",
            f"One thread (one DataLoader worker); {os.cpu_count()} CPU cores, shared with other jobs, so noisy.",
            f"Full-resolution input: SynthCity frames rendered at 1024x2048, {png_mb:.2f} MB per PNG (level 6).",
            "",
            *table,
        ]
    )
    print("\n" + markdown)
    print(f"written to {write_result('bench_data', markdown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
