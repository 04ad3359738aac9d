"""Peak memory of one training step with and without activation checkpointing.

One training step (forward over a T-frame window, cross-entropy on the annotated frame, backward, Adam step) of
a model at a resolution, for each variant of ``train.activation_checkpointing``:
  * ``off``: every activation of every time step is kept for the backward pass;
  * ``step``: each time step is recomputed in the backward pass (only frames and states are kept);
  * ``stage``: as ``step``, and inside a recomputed step each encoder stage, temporal unit and decoder stage is
    recomputed again, so at most one stage's activations are alive at a time.

Every variant runs in a fresh subprocess, so the CPU figure is that process's peak resident set size
(``ru_maxrss``), which includes the Python/PyTorch baseline (reported separately). With a GPU the figure is
``torch.cuda.max_memory_allocated`` of the step.

Activation memory grows linearly with the pixel count, so each variant is also measured at two smaller sizes
(``--fit-sizes``) and a line through them predicts the target size. A variant whose prediction does not fit in
the memory this machine has available is not run at the target size (it would be killed, or push other work
out of memory); its target figure is then the prediction, marked as such, and the measured variants show how
close predictions come.

    python benchmarks/bench_memory.py                       # vanilla-cgru-original, 512x1024, T=5, batch 1
    python benchmarks/bench_memory.py --size 256x512 --fit-sizes 64x128,128x256 --variants off,step

Results: a Markdown table on stdout and in ``benchmarks/results/bench_memory.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vidseg.config import parse_size

GIB = 1024**3
RESULTS = Path(__file__).resolve().parent / "results" / "bench_memory.md"


def child(args: argparse.Namespace) -> None:
    """Run one training step in this (fresh) process and print its peak memory as JSON."""
    import resource

    import torch

    from vidseg.models import build_model
    from vidseg.train import ClipForward, segmentation_loss

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    height, width = args.size
    model = build_model(args.model, num_classes=20).to(device)
    if args.variant in ("step", "stage"):
        model.set_grad_checkpointing(granularity=args.variant)
    forward = ClipForward(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    frames = torch.randn(args.batch, args.frames, 3, height, width, device=device)
    batch = {
        "labels": torch.randint(0, 20, (args.batch, args.frames, height, width), device=device),
        "labelled": torch.ones(args.batch, args.frames, dtype=torch.bool),
        "gt_index": torch.full((args.batch,), args.frames - 1),
    }
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline_cuda = torch.cuda.memory_allocated()
    started = time.perf_counter()
    saved: dict[int, int] = {}
    with torch.autograd.graph.saved_tensors_hooks(count_saved(model, saved), lambda tensor: tensor):
        logits = forward(frames)
        loss = segmentation_loss(logits, batch, "annotated", None)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    result = {
        "variant": args.variant,
        "device": device.type,
        "seconds": seconds,
        "loss": loss.item(),
        "baseline_rss": baseline_rss,
        "saved_bytes": sum(saved.values()),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if device.type == "cuda":
        result["cuda_baseline"] = baseline_cuda
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    print(json.dumps(result))


def count_saved(model, saved: dict[int, int]):
    """A pack hook that records, once per storage, the bytes of every non-parameter tensor that autograd keeps
    for the backward pass (with checkpointing only what the outer graph keeps: frames and states)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    return pack


def run_variant(args: argparse.Namespace, variant: str, size: tuple[int, int]) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--variant",
        variant,
        "--model",
        args.model,
        "--size",
        f"{size[0]}x{size[1]}",
        "--frames",
        str(args.frames),
        "--batch",
        str(args.batch),
    ] + (["--cpu"] if args.cpu else [])
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        return {"variant": variant, "size": size, "error": f"exit {completed.returncode}: {completed.stderr[-300:]}"}
    return {**json.loads(completed.stdout.strip().splitlines()[-1]), "size": size}


def available_memory() -> int:
    """MemAvailable of /proc/meminfo in bytes (Linux); total physical memory elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def predict(points: list[dict], key: str, size: tuple[int, int]) -> float | None:
    """The figure at ``size`` on the line through the two measured (pixels, figure) points."""
    usable = [p for p in points if "error" not in p and key in p]
    if len(usable) < 2:
        return None
    (p0, p1) = usable[:2]
    x0, x1 = p0["size"][0] * p0["size"][1], p1["size"][0] * p1["size"][1]
    slope = (p1[key] - p0[key]) / (x1 - x0)
    return p0[key] + slope * (size[0] * size[1] - x0)


def gib(value: float | None) -> str:
    return "–" if value is None else f"{value / GIB:.2f}"


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def markdown(args: argparse.Namespace, rows: list[dict], command: str, available: int) -> str:
    target = size_name(args.size)
    fits = [size_name(s) for s in args.fit_sizes]
    cuda = any(r.get("device") == "cuda" for row in rows for r in row["points"] + [row["target"] or {}])
    lines = [
        f"# Peak memory of one training step: {args.model}, {target}, T={args.frames}, batch {args.batch}",
        "",
        f"Command: `{command}`",
        "",
        f"Peak RSS of a fresh process per run (GiB, the ~0.3 GiB Python/PyTorch baseline included); the machine had "
        f'{available / GIB:.1f} GiB available. "predicted" is the line through the {" and ".join(fits)} '
        "measurements.",
        "",
        f"| activation checkpointing | {' | '.join(fits)} | {target} predicted | {target} measured | step time at "
        f"{target} (s) |",
        "|---|" + "---:|" * (len(fits) + 3),
    ]
    for row in rows:
        measured = row["target"]
        if measured is None:
            shown, seconds = f"not run (needs ~{gib(row['predicted'])} GiB)", "–"
        elif "error" in measured:
            shown, seconds = f"failed: {measured['error']}", "–"
        else:
            shown, seconds = gib(measured["peak_rss"]), f"{measured['seconds']:.0f}"
        points = " | ".join(gib(p.get("peak_rss")) if "error" not in p else "failed" for p in row["points"])
        lines.append(f"| {row['variant']} | {points} | {gib(row['predicted'])} | {shown} | {seconds} |")
    if cuda:
        lines += ["", "| activation checkpointing | CUDA max allocated at " + target + " (GiB) |", "|---|---:|"]
        for row in rows:
            measured = row["target"] or {}
            lines.append(f"| {row['variant']} | {gib(measured.get('cuda_peak'))} |")
    reference = next((row for row in rows if row["variant"] == "off"), None)
    if reference is None:
        return "\n".join(lines) + "\n"
    measured = reference["target"] if reference["target"] and "error" not in reference["target"] else None
    # With a GPU the comparison is of CUDA memory; the host RSS of a GPU process says little.
    key = "cuda_peak" if cuda else "peak_rss"
    lines.append("")
    if measured is not None:
        reference_peak, how = measured[key], f"{gib(measured[key])} GiB measured"
    else:
        # Without checkpointing every tensor saved for backward is alive at the end of the forward pass, and
        # each of them scales exactly with the pixel count: a lower bound of the peak that needs no run.
        reference_peak = kept_for_backward(reference, args.size)
        how = f"at least {gib(reference_peak)} GiB: the tensors it keeps for backward"
        lines.append(
            f"- `off` at {target} keeps {gib(reference_peak)} GiB of tensors for the backward pass (counted at "
            f"{size_name(reference['points'][-1]['size'])} and scaled by the pixel count, which is exact), so its "
            f"peak is at least that; the RSS line predicts {gib(reference['predicted'])} GiB."
        )
    for row in rows:
        if row is reference or row["target"] is None or "error" in row["target"]:
            continue
        peak = row["target"][key]
        lower = "" if measured is not None else "at least "
        lines.append(
            f"- `{row['variant']}` at {target}: {gib(peak)} GiB measured, {lower}{reference_peak / peak:.2f}x lower "
            f"than `off` ({how})"
        )
    return "\n".join(lines) + "\n"


def kept_for_backward(row: dict, size: tuple[int, int]) -> float | None:
    point = next((p for p in reversed(row["points"]) if "saved_bytes" in p), None)
    if point is None:
        return None
    return point["saved_bytes"] * size[0] * size[1] / (point["size"][0] * point["size"][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vanilla-cgru-original")
    parser.add_argument("--size", type=parse_size, default=(512, 1024), help="HxW")
    parser.add_argument("--fit-sizes", default="128x256,256x512", help="two smaller HxW sizes for the prediction")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", default="off,step,stage")
    parser.add_argument("--cpu", action="store_true", help="measure on the CPU even when a GPU exists")
    parser.add_argument(
        "--max-gib", type=float, help="run no variant predicted to need more (default: 80%% of available memory)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.fit_sizes = [parse_size(text) for text in args.fit_sizes.split(",")]
    command = "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])
    rows = []
    for variant in args.variants.split(","):
        points = [run_variant(args, variant, size) for size in args.fit_sizes]
        predicted = predict(points, "peak_rss", args.size)
        # Leave a margin for the rest of the machine; run it anyway when nothing could be predicted.
        limit = args.max_gib * GIB if args.max_gib else 0.8 * available_memory()
        target = None
        if predicted is None or predicted < limit:
            target = run_variant(args, variant, args.size)
        row = {"variant": variant, "points": points, "predicted": predicted, "target": target}
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    text = markdown(args, rows, command.strip(), available_memory())
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
