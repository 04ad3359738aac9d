"""Int8 vs float32 streaming on a trained model over one long labelled video: argmax agreement (all frames,
frames 0-99 and the last 100: drift), and mIoU of each against the labels.

The video is a SynthCity sequence rendered long (every frame labelled), e.g.

    vidseg synth --out data/synth-long --sequences 1 --val-sequences 1 --frames 1000 --seed 7
    python benchmarks/bench_int8_accuracy.py --checkpoint runs/x/best.pt --video data/synth-long

Calibration: ``--calibrate`` (a dataset root, video or folder), else the checkpoint's own validation frames.
mIoU here is over every frame of the one video, with the checkpoint's label set (not an official protocol).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import write_result

from vidseg.checkpoint import load_checkpoint
from vidseg.data.files import read_image, read_label_ids
from vidseg.data.labels import get_label_set
from vidseg.metrics import ConfusionMatrix
from vidseg.segment import Segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--video", required=True, help="SynthCity root whose first val sequence is streamed")
    parser.add_argument("--calibrate", help="calibration source (default: the checkpoint's validation frames)")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--window", type=int, default=100, help="frames at the start and end compared for drift")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from pathlib import Path

    root = Path(args.video)
    files = sorted((root / "leftImg8bit_sequence" / "val").glob("*/*_leftImg8bit.png"))[: args.frames]
    checkpoint = load_checkpoint(args.checkpoint)
    label_set = get_label_set(checkpoint.get("label_set") or "cityscapes")
    fp32 = Segmenter(checkpoint)
    int8 = Segmenter(checkpoint, precision="int8", calibration=args.calibrate)
    matrices = {"fp32": ConfusionMatrix(label_set.num_classes), "int8": ConfusionMatrix(label_set.num_classes)}
    agreement = []
    for path in files:
        frame = read_image(path)
        label_path = (root / "gtFine" / "val" / path.parent.name / path.name).with_name(
            path.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        )
        target = torch.from_numpy(label_set.map_label_ids(read_label_ids(label_path)).astype(np.int64))
        a, b = fp32.segment_frame(frame), int8.segment_frame(frame)
        agreement.append(float(np.mean(a == b)))
        matrices["fp32"].update(torch.from_numpy(a.astype(np.int64)), target)
        matrices["int8"].update(torch.from_numpy(b.astype(np.int64)), target)
    n, w = len(agreement), args.window
    miou = {name: m.compute()["miou"] for name, m in matrices.items()}
    lines = [
        f"## int8 vs fp32 streaming, {checkpoint['model_name']}, one {n}-frame video "
        f"({frame.shape[1]}x{frame.shape[0]})",
        "",
        "| figure | value |",
        "|---|---|",
        f"| argmax agreement, all frames | {np.mean(agreement):.2%} |",
        f"| agreement, frames 0-{w - 1} | {np.mean(agreement[:w]):.2%} |",
        f"| agreement, frames {n - w}-{n - 1} | {np.mean(agreement[-w:]):.2%} |",
        f"| lowest agreement of one frame | {np.min(agreement):.2%} |",
        f"| mIoU fp32 / int8 (this video's labels) | {miou['fp32']:.2%} / {miou['int8']:.2%} |",
        f"| activation bits | {int8.network.activation_bits} |",
    ]
    print("\n".join(lines))
    print(f"wrote {write_result('bench_int8_accuracy', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
