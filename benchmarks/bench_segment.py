"""Streaming video segmentation: per-frame latency over a long video, the 12-frame-window alternative, peak
memory, and end-to-end frames/s including decoding and encoding.

A street-like video is generated and encoded (not timed), then segmented three ways, each in a fresh process so
that its peak resident set size (``ru_maxrss``) is its own:

  * streaming: ``vidseg.segment.segment_to_files`` (decode, ``Segmenter.segment_frame`` with the state
    carried, overlay, encode), as ``vidseg segment`` runs it; the latency of every ``segment_frame`` call and
    the peak RSS after frame 100 and after the last frame are recorded;
  * 12-frame window: the naive way to give a per-frame pipeline temporal context: for every output frame,
    reset the Segmenter and feed it the last 12 frames, keeping the last prediction (same model, same fused
    inference path, same precision); measured on ``--window-frames`` output frames, each interleaved with one
    streaming step on the same frame so that their ratio does not drift with the load of a shared machine.

    python benchmarks/bench_segment.py                                   # 1,000 frames at 512x1024
    python benchmarks/bench_segment.py --size 128x256 --frames 150 --window-frames 5   # quick check

Results: a Markdown table on stdout and in ``benchmarks/results/bench_segment.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "resnet-cgru-small-deep"
MEMORY_CHECKPOINT = 100  # frame after which the first peak-memory reading is taken
FLAT_FROM = 10  # first frame of the flatness figures (frames before it warm up caches and kernels)


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_checkpoint(model_name: str) -> dict:
    import torch

    from vidseg.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, num_classes=19)
    return {"model_name": model_name, "num_classes": 19, "label_set": "cityscapes", "model": model.state_dict()}


def generate(args) -> dict:
    """Encode a street-like video: sky, facades and road with a slow pan and a car crossing."""
    from fractions import Fraction

    import numpy as np

    from vidseg.data.video import VideoWriter

    height, width = parse_size(args.size)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs /= width
    ys /= height
    with VideoWriter(args.video, Fraction(args.fps), overwrite=True) as writer:
        for t in range(args.frames):
            shift = 0.002 * t
            red = 0.4 * (ys < 0.35) + 0.5 * np.abs(np.sin(12 * (xs + shift))) * (ys > 0.35)
            green = 0.3 * (ys > 0.6) + 0.2 * np.cos(7 * (xs - shift) + 3 * ys)
            blue = 0.8 * (ys < 0.35) + 0.1 * xs
            frame = np.stack([red, green, blue], axis=-1)
            car_left = int((0.005 * t % 1.2 - 0.2) * width)
            frame[int(0.65 * height) : int(0.8 * height), max(car_left, 0) : max(car_left + width // 6, 0)] = (
                0.1, 0.1, 0.6,
            )
            writer.write((np.clip(frame, 0, 1) * 255).astype(np.uint8))
    return {"frames": args.frames}


class TimedSegmenter:
    """A Segmenter that records how long each frame takes and the peak memory at two points."""

    def __init__(self, segmenter, memory_checkpoint: int):
        self.segmenter = segmenter
        self.memory_checkpoint = memory_checkpoint
        self.latencies: list[float] = []
        self.peak_at_checkpoint: float | None = None

    def __getattr__(self, name):
        return getattr(self.segmenter, name)

    def segment_frame(self, frame, probabilities=False):
        start = time.perf_counter()
        result = self.segmenter.segment_frame(frame, probabilities)
        self.latencies.append(time.perf_counter() - start)
        count = len(self.latencies)
        if count == self.memory_checkpoint:
            self.peak_at_checkpoint = peak_rss_mib()
        if count % 100 == 0:
            print(f"  streamed {count} frames, last {self.latencies[-1] * 1000:.0f} ms", file=sys.stderr, flush=True)
        return result


def stream(args) -> dict:
    import torch

    from vidseg.data.video import open_frames
    from vidseg.segment import Segmenter, segment_to_files

    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = TimedSegmenter(Segmenter(make_checkpoint(args.model), amp=args.amp), MEMORY_CHECKPOINT)
    source = open_frames(args.video)
    out = Path(args.video).with_name("segmented.mp4")
    summary = segment_to_files(source, segmenter, out=out, overwrite=True, progress=False)
    return {
        "latencies": segmenter.latencies,
        "seconds": summary.seconds,
        "frames": summary.num_frames,
        "peak_at_checkpoint_mib": segmenter.peak_at_checkpoint,
        "peak_at_end_mib": peak_rss_mib(),
        "threads": torch.get_num_threads(),
    }


def window(args) -> dict:
    """Time the window approach and, interleaved frame by frame in the same process, streaming: the ratio of
    the two is then immune to load that changes over time on a shared machine."""
    import itertools

    import torch

    from vidseg.data.video import open_frames
    from vidseg.segment import Segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = make_checkpoint(args.model)
    streaming, windowed = Segmenter(checkpoint, amp=args.amp), Segmenter(checkpoint, amp=args.amp)
    frames = list(itertools.islice(open_frames(args.video), args.window + args.window_frames))
    stream_latencies, window_latencies = [], []
    for end, frame in enumerate(frames):
        start = time.perf_counter()
        streaming.segment_frame(frame)
        if end < args.window:
            continue
        stream_latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        windowed.reset()
        for past in frames[end - args.window + 1 : end + 1]:
            windowed.segment_frame(past)
        window_latencies.append(time.perf_counter() - start)
    return {"latencies": window_latencies, "stream_latencies": stream_latencies}


def run_phase(phase: str, args) -> dict:
    """Run one phase in a fresh interpreter and return its JSON result."""
    command = [sys.executable, __file__, "--phase", phase, "--result", args.result_file]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("phase", "result")]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    result = json.loads(Path(args.result_file).read_text())
    print(f"{phase}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return result


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def report(args, streamed: dict, windowed: dict) -> str:
    latencies = streamed["latencies"]
    frames = len(latencies)
    buckets = [(FLAT_FROM, min(100, frames)), (100, min(500, frames)), (500, frames)]
    buckets = [(lo, hi) for lo, hi in buckets if hi - lo >= 5]
    first = median_ms(latencies[buckets[0][0] : buckets[0][1]])
    last_lo, last_hi = buckets[-1]
    last = median_ms(latencies[last_lo:last_hi])
    steady = median_ms(latencies[FLAT_FROM:])
    window_ms = median_ms(windowed["latencies"])
    paired_ms = median_ms(windowed["stream_latencies"])
    # Least-squares slope of latency over frame index, from FLAT_FROM on: growth per 100 frames.
    xs = range(FLAT_FROM, frames)
    ys = latencies[FLAT_FROM:]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    peak_100, peak_end = streamed["peak_at_checkpoint_mib"], streamed["peak_at_end_mib"]
    end_to_end = streamed["frames"] / streamed["seconds"]

    precision = {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}[args.amp]
    lines = [
        f"### Streaming `{args.model}` over {frames} frames at {args.size.replace('x', ' x ')} "
        f"(CPU, {precision}, fused inference copy, torch threads: {streamed['threads']})",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for lo, hi in buckets:
        lines.append(f"| streaming latency per frame, median of frames {lo}-{hi - 1} | "
                     f"{median_ms(latencies[lo:hi]):.0f} ms |")
    lines += [
        f"| last bucket / first bucket | {last / first:.3f}x |",
        f"| latency trend from frame {FLAT_FROM} (least squares) | {slope * 100 * 1000:+.2f} ms per 100 frames "
        f"({slope * 100 / (steady / 1000) * 100:+.2f}% of a frame) |",
        f"| 12-frame window per output frame, median of {len(windowed['latencies'])} | {window_ms:.0f} ms |",
        f"| streaming per frame, same frames, interleaved with the window runs | {paired_ms:.0f} ms |",
        f"| **window / streaming cost per frame (interleaved)** | **{window_ms / paired_ms:.1f}x** |",
        f"| peak RSS after frame {MEMORY_CHECKPOINT} | {peak_100:.0f} MiB |",
        f"| peak RSS after frame {frames} | {peak_end:.0f} MiB |",
        f"| **peak RSS growth, frame {MEMORY_CHECKPOINT} -> {frames}** | **{(peak_end / peak_100 - 1) * 100:+.1f}%** |",
        f"| end-to-end frames/s (decode + segment + overlay + encode) | {end_to_end:.2f} |",
        f"| segmentation alone, frames/s (1 / median latency) | {1000 / steady:.2f} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--size", default="512x1024", help="HEIGHTxWIDTH of the video")
    parser.add_argument("--frames", type=int, default=1000, help="length of the video")
    parser.add_argument("--fps", type=float, default=17.0)
    parser.add_argument("--window", type=int, default=12, help="frames per window for the naive approach")
    parser.add_argument("--window-frames", type=int, default=20, help="output frames timed for the window approach")
    parser.add_argument("--amp", default="off", choices=["off", "bf16"], help="Segmenter precision (default: "
                        "off, the Segmenter's default)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--phase", choices=["generate", "stream", "window"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        result = {"generate": generate, "stream": stream, "window": window}[args.phase](args)
        Path(args.result).write_text(json.dumps(result))
        return

    if args.frames < MEMORY_CHECKPOINT + 10:
        parser.error(f"--frames must be at least {MEMORY_CHECKPOINT + 10} (memory is read after frame 100)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import write_result

    with tempfile.TemporaryDirectory(prefix="bench_segment.") as folder:
        args.video = os.path.join(folder, "input.mp4")
        args.result_file = os.path.join(folder, "result.json")
        run_phase("generate", args)
        streamed = run_phase("stream", args)
        windowed = run_phase("window", args)
    markdown = report(args, streamed, windowed)
    print(markdown)
    path = write_result("bench_segment", markdown)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
