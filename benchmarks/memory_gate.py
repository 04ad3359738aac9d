"""What an output memory's gate does on a corrupted val stream: the median gate (the weight of the current frame)
per corruption type, over the frames that have a memory.

It runs ``vidseg evaluate --corrupt RATE --per-position off`` in this process (the same frames, corrupted the same
way, one worker so that frames arrive in order) and records, for every streamed frame, its corruption code (read
where the evaluation's stream loads it) and the median of its gate (a forward hook on the gate's last convolution).

    python benchmarks/memory_gate.py runs/d1/memory/last.pt ../shared/camvid --out /tmp/gate.json
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

import vidseg.evaluate as evaluation
from vidseg.cli import main as vidseg_main
from vidseg.data.corrupt import CORRUPTIONS
from vidseg.models.memory import OutputMemory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint of a model with model.output_memory")
    parser.add_argument("data", help="the dataset root (e.g. ../shared/camvid)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--rate", default="0.3", help="the share of corrupted frames (vidseg evaluate --corrupt)")
    parser.add_argument("--out", required=True, help="where vidseg evaluate writes its results (not an input)")
    args = parser.parse_args()

    codes: list[tuple[int, int]] = []  # (corruption code, position in its sequence) of each streamed frame
    gates: list[float] = []
    load = evaluation._SequenceFrames.__getitem__

    def load_and_record(frames, item):
        sample = load(frames, item)
        codes.append((int(sample["corruption"]), int(sample["position"])))
        return sample

    forward = OutputMemory.forward

    def forward_and_record(memory, *inputs):
        if not getattr(memory, "recording", False):
            memory.gate.register_forward_hook(lambda _, __, out: gates.append(out.float().sigmoid().median().item()))
            memory.recording = True
        return forward(memory, *inputs)

    evaluation._SequenceFrames.__getitem__ = load_and_record  # type: ignore[method-assign]
    OutputMemory.forward = forward_and_record  # type: ignore[method-assign]
    argv = ["evaluate", "--checkpoint", args.checkpoint, "--data", args.data, "--split", args.split,
            "--corrupt", args.rate, "--per-position", "off", "--num-workers", "0", "--out", args.out]  # fmt: skip
    status = vidseg_main(argv)
    if status:
        raise SystemExit(status)
    if not gates:
        raise SystemExit(f"{args.checkpoint}: no gate ran (the model has no output memory)")
    if len(gates) != len(codes):
        raise SystemExit(f"{len(gates)} gates for {len(codes)} frames: the stream did not run one frame at a time")
    by_code: dict[int, list[float]] = defaultdict(list)
    for (code, position), gate in zip(codes, gates):
        if position > 0:  # a sequence's first frame has no memory: its gate weighs nothing
            by_code[code].append(gate)
    print("| frames | count | median gate | lowest | highest |")
    print("|---|---:|---:|---:|---:|")
    for code in sorted(by_code):
        values = by_code[code]
        print(f"| {CORRUPTIONS[code]} | {len(values)} | {statistics.median(values):.3f} | {min(values):.3f} | "
              f"{max(values):.3f} |")


if __name__ == "__main__":
    main()
