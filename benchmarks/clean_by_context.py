"""Clean-frame mIoU of a demo's models split by how long ago the last corrupted frame was (issue 15).

If a temporal model's loss on clean frames came from memory of corrupted frames, it would be largest on the clean
frames right after one and vanish where no frame was corrupted yet. Each model streams every held-out sequence of a
finished ``vidseg demo`` from the zero state (24-frame windows at the demo's 64x128, as the demo evaluates them);
its clean frames are split into: no corrupted frame before them in the sequence, 1 frame after one, 2-3 frames
after, more than 3 after. mIoU as the demo's evaluation computes it (``vidseg.metrics.ConfusionMatrix``), so the
"all clean" column equals the clean-frame mIoU of the model's ``evaluation.json``.

    python benchmarks/clean_by_context.py --demo runs/demo4-0 baseline=runs/demo4-0/runs/baseline/last.pt \
        temporal=runs/demo4-0/runs/finetune/last.pt
"""

from __future__ import annotations

import argparse

import torch
from common import write_result

from vidseg.checkpoint import TrainState
from vidseg.data.cityscapes import CityscapesSequences
from vidseg.data.transforms import ClipTransform
from vidseg.metrics import ConfusionMatrix

BUCKETS = ("all clean", "no corrupted frame yet", "1 frame after one", "2-3 frames after", "more than 3 after")


def bucket(corruption: list[int], t: int) -> str | None:
    """The context bucket of frame ``t``, or None where the frame itself is corrupted."""
    if corruption[t] != 0:
        return None
    before = [i for i in range(t) if corruption[i] != 0]
    if not before:
        return BUCKETS[1]
    distance = t - before[-1]
    return BUCKETS[2] if distance == 1 else BUCKETS[3] if distance <= 3 else BUCKETS[4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", required=True, help="output folder of a finished `vidseg demo`")
    parser.add_argument("--frames", type=int, default=24, help="window length (the demo's sequences: 24)")
    parser.add_argument("--size", default="64x128", help="working size HxW (the demo's: 64x128)")
    parser.add_argument("models", nargs="+", metavar="NAME=CHECKPOINT")
    args = parser.parse_args()
    torch.set_num_threads(1)
    height, width = (int(v) for v in args.size.split("x"))
    val = CityscapesSequences(
        f"{args.demo}/synthcity", "val", num_frames=args.frames, gt_position="last",
        transform=ClipTransform(size=(height, width)),
    )
    models = {}
    for item in args.models:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"expected NAME=CHECKPOINT, got {item!r}")
        models[name] = TrainState.load(path).build_model().eval()
    num_classes = next(iter(models.values())).num_classes
    counts = {name: {b: ConfusionMatrix(num_classes) for b in BUCKETS} for name in models}
    frames_in = dict.fromkeys(BUCKETS, 0)
    for index in range(len(val)):
        sample = val[index]
        corruption = sample["corruption"].tolist()
        buckets = [bucket(corruption, t) for t in range(len(corruption))]
        for b in buckets:
            if b is not None:
                frames_in[b] += 1
                frames_in[BUCKETS[0]] += 1
        for name, model in models.items():
            with torch.no_grad():
                logits, _ = model(sample["frames"][None])
            predictions = logits[0].argmax(1)
            for t, b in enumerate(buckets):
                if b is not None:
                    for key in (BUCKETS[0], b):
                        counts[name][key].update(predictions[t], sample["labels"][t].long())

    lines = [
        f"### Clean-frame mIoU by frames since the last corrupted frame ({args.demo}, held-out sequences)",
        "",
        "| model | " + " | ".join(f"{b} ({frames_in[b]} frames)" for b in BUCKETS) + " |",
        "|---|" + "---:|" * len(BUCKETS),
    ]
    for name in models:
        values = [100 * counts[name][b].compute()["miou"] for b in BUCKETS]
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    markdown = "\n".join(lines)
    print(markdown)
    print(f"written to {write_result('clean_by_context', markdown)}")


if __name__ == "__main__":
    main()
