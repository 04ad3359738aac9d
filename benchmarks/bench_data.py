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
from common import write_result
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


def rates(work, count: int, repeats: int) -> tuple[float, float]:
    """Best items/s over ``repeats`` runs of ``work`` (``count`` items each), by wall clock and by CPU time of this
    process (the CPU figure is what a quiet machine would show; the machine is shared, so wall time is noisy)."""
    work()  # warm-up: file system cache, allocator
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return count / min(walls), count / min(cpus)


def sample_rates(dataset, count: int, repeats: int) -> tuple[float, float]:
    indices = [(i % len(dataset), i) for i in range(count)]
    return rates(lambda: [dataset[index] for index in indices], count, repeats)


def generation_rates(folder: Path, sequences: int, workers: int, repeats: int) -> tuple[float, float]:
    runs = iter(range(repeats + 1))

    def work():
        generate(folder / str(next(runs)), sequences=sequences, frames=24, size=(64, 128), seed=0, val_sequences=0,
                 workers=workers)

    return rates(work, sequences * 24, repeats)


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
        png_wall, png_cpu = sample_rates(decoded, args.samples, args.repeats)

        start = time.perf_counter()
        prepare_cache(tmp / "root", tmp / "cache", WORK_SIZE, splits=["train"], num_frames=NUM_FRAMES)
        prepare_seconds = time.perf_counter() - start
        cached = CityscapesSequences(
            tmp / "root", "train", num_frames=NUM_FRAMES, transform=transform, cache=tmp / "cache"
        )
        cache_wall, cache_cpu = sample_rates(cached, args.cached_samples, args.repeats)
        rows += [
            ("5-frame window from 1024x2048 PNGs (decode, resize to 512x1024), samples/s",
             f"{png_wall:.2f}", f"{png_cpu:.2f}", "1.0x"),
            ("5-frame window from the 512x1024 cache, samples/s",
             f"{cache_wall:.2f}", f"{cache_cpu:.2f}", f"{cache_wall / png_wall:.1f}x ({cache_cpu / png_cpu:.1f}x)"),
            (f"`prepare_cache`, {args.snippets} snippets x 9 frames, 1 worker, seconds",
             f"{prepare_seconds:.1f}", "", ""),
        ]

        frames = args.synth_sequences * 24
        wall, cpu = generation_rates(tmp / "synth1", args.synth_sequences, 1, args.repeats)
        rows.append((f"SynthCity generation, 64x128, {frames} frames, 1 process, frames/s", f"{wall:.0f}",
                     f"{cpu:.0f}", ""))
        workers = min(4, os.cpu_count() or 1)
        if workers > 1:
            wall, _ = generation_rates(tmp / "synth2", args.synth_sequences, workers, args.repeats)
            rows.append((f"SynthCity generation, 64x128, {frames} frames, {workers} processes, frames/s",
                         f"{wall:.0f}", "-", ""))

    table = ["| measurement | wall clock | per CPU-second | cache vs. PNG |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    markdown = "\n".join(
        [
            "### Data loading and SynthCity generation",
            "",
            f"One thread (one DataLoader worker), best of {args.repeats} runs; {os.cpu_count()} CPU cores shared with "
            "other jobs, so wall-clock rates are noisy: 'per CPU-second' divides by this process's CPU time.",
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
