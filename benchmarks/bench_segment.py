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

from vidseg.config import parse_size

MODEL = "resnet-cgru-small-deep"
MEMORY_CHECKPOINT = 100  # frame after which the first peak-memory reading is taken
FLAT_FROM = 10  # first frame of the flatness figures (frames before it warm up caches and kernels)


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


class Clock:
    """Wall time and this thread's CPU time of timed blocks. With one torch thread the model runs in the
    calling thread, so its CPU time is the work done, barely affected by other processes on a shared machine."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def time(self, fn, *args):
        wall, cpu = time.perf_counter(), time.thread_time()
        result = fn(*args)
        self.cpu.append(time.thread_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        return result


class TimedSegmenter:
    """A Segmenter that times each frame and reads the peak memory after frame ``memory_checkpoint``."""

    def __init__(self, segmenter, memory_checkpoint: int):
        self.segmenter = segmenter
        self.memory_checkpoint = memory_checkpoint
        self.clock = Clock()
        self.peak_at_checkpoint: float | None = None

    def __getattr__(self, name):
        return getattr(self.segmenter, name)

    def segment_frame(self, frame, probabilities=False):
        result = self.clock.time(self.segmenter.segment_frame, frame, probabilities)
        count = len(self.clock.wall)
        if count == self.memory_checkpoint:
            self.peak_at_checkpoint = peak_rss_mib()
        if count % 100 == 0:
            print(
                f"  frames {count - 100}-{count - 1}: median {median_ms(self.clock.wall[-100:]):.0f} ms wall, "
                f"{median_ms(self.clock.cpu[-100:]):.0f} ms CPU; peak RSS {peak_rss_mib():.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
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
    wall, cpu = time.perf_counter(), time.process_time()
    summary = segment_to_files(source, segmenter, out=out, overwrite=True, progress=False)
    return {
        "wall": segmenter.clock.wall,
        "cpu": segmenter.clock.cpu,
        "frames": summary.num_frames,
        "seconds": time.perf_counter() - wall,
        "process_cpu_seconds": time.process_time() - cpu,
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

    def run_window(end: int) -> None:
        windowed.reset()
        for past in frames[end - args.window + 1 : end + 1]:
            windowed.segment_frame(past)

    stream_clock, window_clock = Clock(), Clock()
    for end, frame in enumerate(frames):
        if end < args.window:
            streaming.segment_frame(frame)
            continue
        stream_clock.time(streaming.segment_frame, frame)
        window_clock.time(run_window, end)
        print(f"  window {end - args.window + 1}/{args.window_frames}", file=sys.stderr, flush=True)
    return {"stream": vars(stream_clock), "window": vars(window_clock)}


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


def trend_per_100_frames(values: list[float]) -> float:
    """Least-squares slope of ``values`` over their index, per 100 frames."""
    xs = range(len(values))
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(values)
    return 100 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values)) / sum((x - mean_x) ** 2 for x in xs)


def report(args, streamed: dict, windowed: dict) -> str:
    frames = len(streamed["wall"])
    buckets = [(FLAT_FROM, min(100, frames)), (100, min(500, frames)), (500, frames)]
    buckets = [(lo, hi) for lo, hi in buckets if hi - lo >= 5]
    precision = {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}[args.amp]

    def row(label: str, figure, fmt) -> str:
        """A table row with ``figure(clock)`` for the wall clock and for the CPU clock."""
        return f"| {label} | {fmt(figure('wall'))} | {fmt(figure('cpu'))} |"

    def trend(clock: str) -> float:
        values = streamed[clock][FLAT_FROM:]
        return trend_per_100_frames(values) / statistics.median(values) * 100

    lines = [
        f"### Streaming `{args.model}` over {frames} frames at {args.size.replace('x', ' x ')} "
        f"(CPU, {precision}, fused inference copy, torch threads: {streamed['threads']})",
        "",
        "| figure | wall time | CPU time of the inference thread |",
        "|---|---|---|",
    ]
    for lo, hi in buckets:
        lines.append(row(f"streaming, per frame, median of frames {lo}-{hi - 1}",
                         lambda c, lo=lo, hi=hi: median_ms(streamed[c][lo:hi]), "{:.0f} ms".format))
    first, last = buckets[0], buckets[-1]
    lines.append(row(f"**median of frames {last[0]}-{last[1] - 1} / median of frames {first[0]}-{first[1] - 1}**",
                     lambda c: median_ms(streamed[c][last[0]:last[1]]) / median_ms(streamed[c][first[0]:first[1]]),
                     "**{:.3f}x**".format))
    lines.append(row(f"trend from frame {FLAT_FROM} (least squares), per 100 frames, share of a frame",
                     trend, "{:+.2f}%".format))
    count = len(windowed["window"]["wall"])
    lines.append(row(f"{args.window}-frame window, per output frame, median of {count}",
                     lambda c: median_ms(windowed["window"][c]), "{:.0f} ms".format))
    lines.append(row(f"streaming, per frame, the same {count} frames interleaved with the windows",
                     lambda c: median_ms(windowed["stream"][c]), "{:.0f} ms".format))
    lines.append(row("**window / streaming, cost per output frame**",
                     lambda c: median_ms(windowed["window"][c]) / median_ms(windowed["stream"][c]),
                     "**{:.1f}x**".format))
    peak_100, peak_end = streamed["peak_at_checkpoint_mib"], streamed["peak_at_end_mib"]
    end_to_end = streamed["frames"] / streamed["seconds"]
    lines += [
        "",
        "| memory and throughput | value |",
        "|---|---|",
        f"| peak RSS after frame {MEMORY_CHECKPOINT} | {peak_100:.0f} MiB |",
        f"| peak RSS after frame {frames} | {peak_end:.0f} MiB |",
        f"| **peak RSS growth, frame {MEMORY_CHECKPOINT} -> {frames}** | **{(peak_end / peak_100 - 1) * 100:+.1f}%** |",
        f"| end-to-end frames/s, wall (decode + segment + overlay + encode) | {end_to_end:.2f} |",
        f"| end-to-end CPU seconds per frame, all threads of the process | "
        f"{streamed['process_cpu_seconds'] / streamed['frames']:.2f} s |",
        f"| segmentation alone, frames/s, wall (1 / median latency) | "
        f"{1000 / median_ms(streamed['wall'][FLAT_FROM:]):.2f} |",
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
