"""Int8 vs float32 streaming on a trained model over one long video: argmax agreement (all frames, the first and
the last ``--window`` frames: drift), and mIoU of each against the labels the stream has.

The video is the longest sequence of a dataset split, in any layout vidseg reads (SynthCity/Cityscapes, CamVid,
VSPW, folders). A sequence shorter than ``--frames`` is played forwards, then backwards, and so on (ping-pong: no
cut in the motion) until the stream is ``--frames`` long; the table says so. E.g.

    vidseg synth --out data/synth-long --sequences 1 --val-sequences 1 --frames 1000 --seed 7
    python benchmarks/bench_int8_accuracy.py --checkpoint runs/x/last.pt --data data/synth-long --tag demo
    python benchmarks/bench_int8_accuracy.py --checkpoint runs/camvid/last.pt --data ../shared/camvid --tag camvid

Calibration: ``--calibrate`` (a dataset root, video or folder), else the checkpoint's own validation frames.
Frames are fitted into the checkpoint's working size, as ``vidseg segment`` does, and predictions mapped back to
the image's size (labels must have it). mIoU here is over every labelled frame of the stream (a frame visited
twice counts twice), with the checkpoint's label set: a drift check, not the benchmark's protocol (``vidseg
evaluate --precision int8`` gives that).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import write_result

from vidseg.checkpoint import TrainState
from vidseg.data.index import build_index
from vidseg.metrics import ConfusionMatrix
from vidseg.segment import Segmenter


def ping_pong(frames: list, length: int) -> list:
    """``frames`` forwards, backwards (without repeating the turning frame), forwards ... ``length`` long."""
    if len(frames) < 2:
        return frames * length
    cycle = frames + frames[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(length)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="dataset root whose longest sequence of --split is streamed")
    parser.add_argument("--split", default="val")
    parser.add_argument("--layout", help="dataset layout (default: detected)")
    parser.add_argument("--calibrate", help="calibration source (default: the checkpoint's validation frames)")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--window", type=int, default=100, help="frames at the start and end compared for drift")
    parser.add_argument("--tag", help="results go to benchmarks/results/bench_int8_accuracy_TAG.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    checkpoint = TrainState.load(args.checkpoint)
    label_set = checkpoint.predicted_label_set()
    index = build_index(args.data, args.split, args.layout, label_set=label_set)
    if not any(s.frames for s in index.sequences):
        raise SystemExit(f"{args.data} has no frames in split {args.split!r}")
    sequence = max(index.sequences, key=lambda s: len(s.frames))
    stream = ping_pong(list(sequence.frames), args.frames)
    fp32 = Segmenter(checkpoint)
    int8 = Segmenter(checkpoint, precision="int8", calibration=args.calibrate)
    matrices = {"fp32": ConfusionMatrix(label_set.num_classes), "int8": ConfusionMatrix(label_set.num_classes)}
    agreement = []
    for frame in stream:
        image = index.read_image(frame)
        a, b = fp32.segment_frame(image), int8.segment_frame(image)
        agreement.append(float(np.mean(a == b)))
        if frame.label is not None:
            target = torch.from_numpy(index.read_label(frame).astype(np.int64))
            if tuple(target.shape) != a.shape:  # predictions come back at the image's size
                raise SystemExit(f"label {frame.label} is {tuple(target.shape)}, its image {a.shape}: not scored here")
            matrices["fp32"].update(torch.from_numpy(a.astype(np.int64)), target)
            matrices["int8"].update(torch.from_numpy(b.astype(np.int64)), target)
    n, w = len(agreement), args.window
    looped = len(stream) > len(sequence.frames)
    labelled = sum(frame.label is not None for frame in stream)
    source = f"{index.layout} {args.split} sequence {sequence.name} ({len(sequence.frames)} frames"
    source += ", played forwards and backwards" if looped else ""
    lines = [
        f"## int8 vs fp32 streaming, {checkpoint.model_name}, a {n}-frame stream ({image.shape[1]}x{image.shape[0]})",
        "",
        f"Stream: {source}); checkpoint {args.checkpoint}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| argmax agreement, all frames | {np.mean(agreement):.2%} |",
        f"| agreement, frames 0-{w - 1} | {np.mean(agreement[:w]):.2%} |",
        f"| agreement, frames {n - w}-{n - 1} | {np.mean(agreement[-w:]):.2%} |",
        f"| lowest agreement of one frame | {np.min(agreement):.2%} |",
    ]
    if labelled:
        miou = {name: m.compute()["miou"] for name, m in matrices.items()}
        lines.append(f"| mIoU fp32 / int8 ({labelled} labelled frames of the stream) | "
                     f"{miou['fp32']:.2%} / {miou['int8']:.2%} |")
    lines.append(f"| activation bits | {int8.network.activation_bits} |")
    print("\n".join(lines))
    name = "bench_int8_accuracy" + (f"_{args.tag}" if args.tag else "")
    print(f"wrote {write_result(name, chr(10).join(lines))}")


if __name__ == "__main__":
    main()
