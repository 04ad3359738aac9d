"""Cost of the evaluation extras relative to a plain evaluation (model steps + confusion matrices).

Extras: flow-based temporal consistency (two OpenCV DIS flows per pair of consecutive frames, on the CPU) and
per-position "context" figures (the annotated frame segmented again after 1, 2, ..., T frames). All variants
run ``vidseg.evaluate.evaluate_model`` on the same in-memory windows of a camera panning over a textured
scene, in one process, so the ratios compare like with like.

    python benchmarks/bench_evaluate.py                  # resnet-cgru-small-deep, 128x256, T = 12
    python benchmarks/bench_evaluate.py --size 512x1024  # the Cityscapes evaluation size (slow on a CPU)
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from common import best_time, write_result

from vidseg.data.labels import cityscapes_label_set_name
from vidseg.data.transforms import normalize
from vidseg.evaluate import evaluate_model
from vidseg.models import build_model


class PanningWindows(torch.utils.data.Dataset):
    """Windows of a camera panning 4 px per frame over a smooth random texture; last frame annotated."""

    def __init__(self, count: int, num_frames: int, size: tuple[int, int], num_classes: int):
        height, width = size
        rng = np.random.default_rng(0)
        self.samples = []
        for index in range(count):
            wide = width + 4 * num_frames
            texture = cv2.GaussianBlur((rng.random((height, wide, 3)) * 255).astype(np.float32), (0, 0), 2)
            canvas = torch.from_numpy(texture.clip(0, 255).astype(np.uint8)).permute(2, 0, 1)
            frames = torch.stack([canvas[:, :, 4 * t : 4 * t + width] for t in range(num_frames)])
            labels = torch.full((num_frames, height, width), 255, dtype=torch.int64)
            labels[-1] = torch.from_numpy(rng.integers(0, num_classes - 1, (height, width)))
            self.samples.append(
                {
                    "frames": normalize(frames),
                    "labels": labels,
                    "labelled": torch.arange(num_frames) == num_frames - 1,
                    "corruption": torch.zeros(num_frames, dtype=torch.int64),
                    "gt_index": num_frames - 1,
                    "name": f"bench_{index:06d}_000000",
                }
            )
        self.label_set = cityscapes_label_set_name(num_classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="resnet-cgru-small-deep")
    parser.add_argument("--size", default="128x256", help="HxW of the frames")
    parser.add_argument("--frames", type=int, default=12, help="frames per window (T)")
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the variants; the best counts")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))

    torch.manual_seed(0)
    model = build_model(args.model, num_classes=20).eval()
    dataset = PanningWindows(args.windows, args.frames, (height, width), num_classes=20)
    variants = {
        "plain (model steps + metrics)": dict(tc=False, per_position="labelled"),
        "+ flow-based TC": dict(tc=True, per_position="labelled"),
        "+ per-position context": dict(tc=False, per_position="context"),
        "+ TC + context": dict(tc=True, per_position="context"),
    }
    runs = {
        name: (lambda options=options: evaluate_model(model, dataset, progress=False, **options))
        for name, options in variants.items()
    }
    for run in runs.values():  # warm-up: oneDNN picks its kernels for each new shape
        run()
    # Rounds over all variants, best per variant: load from other processes hits every variant alike.
    seconds = {name: float("inf") for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            seconds[name] = min(seconds[name], best_time(run, 1, warmup=0) / len(dataset))
            print(f"  {name}: {seconds[name]:.3f} s per window so far", flush=True)
    reference = seconds["plain (model steps + metrics)"]
    lines = [
        f"Evaluation cost per window: {args.model}, {height}x{width}, T = {args.frames}, "
        f"{args.windows} windows, best of {args.repeats}, CPU.",
        "",
        "| variant | s / window | vs. plain |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {value:.3f} | {value / reference:.2f}x |" for name, value in seconds.items()]
    table = "\n".join(lines)
    print()
    print(table)
    print(f"\nwrote {write_result('bench_evaluate', table)}")


if __name__ == "__main__":
    main()
