"""What plain memory is worth on CamVid's 15 Hz val video: a per-frame model's class probabilities averaged over time.

Issue 15's CamVid bar asks a temporal model for +10 mIoU over its per-frame twin on corrupted frames (CamVid-C val),
while its units train on the 1 Hz labelled train video. This script measures what the 15 Hz val video itself
offers to a memory that needs no training: each frame's softmax is blended with the running average of the earlier
frames', ``p_t = a * p_{t-1} + (1 - a) * softmax(logits_t)`` (a = 0: the model alone), and the blend is scored
like any model (``vidseg.evaluate.evaluate_model``: the val stream, every frame, at the label files' resolution;
corrupted frames as ``vidseg evaluate --corrupt 0.3`` makes them, keyed by frame name).

    python benchmarks/camvid_logit_ema.py runs/start/last.pt ../shared/camvid --alphas 0 0.5 0.8
"""

from __future__ import annotations

import argparse

import torch

from vidseg.checkpoint import TrainState
from vidseg.config import CorruptConfig
from vidseg.data.clips import open_dataset
from vidseg.data.corrupt import CorruptedClips, Corruption
from vidseg.data.transforms import ClipTransform
from vidseg.evaluate import evaluate_model


class ProbabilityAverage:
    """A ``step(frame, state)`` model whose output is the log of the running average of ``network``'s softmax;
    the state is the network's own state and the average so far."""

    def __init__(self, network, alpha: float):
        self.network = network
        self.alpha = alpha
        self.num_classes = network.num_classes

    def __getattr__(self, name: str):
        return getattr(self.network, name)

    def step(self, frame: torch.Tensor, state=None):
        inner, average = (None, None) if not state else (state[:-1], state[-1])
        logits, inner = self.network.step(frame, inner)
        probabilities = logits.float().softmax(dim=1)
        if average is not None:
            probabilities = self.alpha * average + (1 - self.alpha) * probabilities
        return probabilities.clamp_min(1e-12).log(), (*inner, probabilities)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("root", help="CamVid root (SegNet layout)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 0.8])
    parser.add_argument("--rate", type=float, default=0.3, help="share of corrupted frames (default 0.3)")
    args = parser.parse_args()

    checkpoint = TrainState.load(args.checkpoint)
    model = checkpoint.build_model(args.checkpoint).eval()
    size = checkpoint.trained_size()
    dataset = open_dataset(args.root, "val", num_frames=12, gt_position="last", layout="camvid", label_set="camvid11",
                           transform=ClipTransform(size, resize_labels=False))  # fmt: skip
    defaults = CorruptConfig()
    corrupted = CorruptedClips(dataset, Corruption(args.rate, tuple(defaults.kinds), defaults.seed), deterministic=True)
    print(f"{checkpoint.model_name} ({args.checkpoint}), CamVid val at {size[0]}x{size[1]}, scored at label size")
    print("| a | val mIoU | CamVid-C all | clean frames | corrupted frames |")
    print("|---:|---:|---:|---:|---:|")
    for alpha in args.alphas:
        network = ProbabilityAverage(model, alpha)
        options = {"mode": "stream", "tc": False, "per_position": "off", "progress": False}
        clean = evaluate_model(network, dataset, **options)
        noisy = evaluate_model(network, corrupted, **options)
        assert noisy.corruption is not None
        figures = [clean.miou, noisy.miou, noisy.corruption.clean.miou, noisy.corruption.corrupted.miou]
        print(f"| {alpha:g} | " + " | ".join(f"{100 * value:.2f}" for value in figures) + " |")


if __name__ == "__main__":
    main()
