"""One prepared check of vidseg's CUDA paths on a GPU machine, with its figures as Markdown.

    python3 benchmarks/gpu_check.py --out DIR                  # on the GPU machine: under 10 minutes on one GPU
    python3 benchmarks/gpu_check.py --out DIR --device cpu --tiny   # every stage at tiny sizes on the CPU (< 1 min)

It installs nothing: it runs on the Python that holds PyTorch (``sys.executable``), with this checkout's ``src``
first on the path, and needs only vidseg's dependencies that the training and inference code import (numpy,
PIL, PyYAML, tqdm) plus pytest. Stages, each in its own process with its own time limit (a failure or a timeout
is recorded, and the next stage runs):

  * ``env``: GPU, driver, PyTorch, CUDA and cuDNN versions;
  * ``tests``: ``pytest tests/test_cuda.py tests/test_ddp.py`` (the CUDA-marked tests; DDP with gloo, and with
    NCCL where two GPUs exist), each test's outcome;
  * ``train``: training frames/s of three Table 2 rows at 512x1024, T=5, batch 1 (one optimizer step per
    window, the loss on the annotated frame, Adam), fp32 vs bf16 / fp16 autocast + channels_last, and the
    minutes per epoch (2,975 windows) this gives, against the report's 50-130 min/epoch on an RTX 2080 Ti;
  * ``memory``: ``torch.cuda.max_memory_allocated`` of one training step of vanilla-cgru-original at 512x1024,
    T=5, batch 1, without and with per-step and per-stage activation checkpointing (``bench_memory.py``);
  * ``stream``: ``Segmenter`` frames/s at 512x1024 and 1024x2048 (fp32, bf16, fp16), and per-frame latency
    over a long stream (early vs late median, trend);
  * ``compile``: the same streaming with the fused step under ``torch.compile`` (and CUDA graphs), against
    the plain fused step.

Results: ``DIR/gpu_check.md`` (the report), ``DIR/gpu_check.json`` (every record) and ``DIR/tests.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("env", "tests", "train", "memory", "stream", "compile")
# Seconds per stage on the GPU machine; together with start-up they stay inside 10 minutes.
LIMITS = {"env": 30, "tests": 150, "train": 130, "memory": 80, "stream": 100, "compile": 70}
TINY_LIMITS = {"env": 30, "tests": 60, "train": 60, "memory": 60, "stream": 60, "compile": 60}

# The report (section 4.1): on RTX 2080 Ti / GTX TITAN X GPUs, vanilla temporal models took about 50 minutes
# per epoch and ResNet-based ones about 80 to 130 minutes, over 2,975 training windows of 5 frames.
TRAIN_MODELS = {
    "vanilla-crnn-small-shallow": "about 50 (vanilla temporal)",
    "resnet-cgru-small-shallow": "80-130 (ResNet)",
    "resnet-cgru-small-deep": "80-130 (ResNet)",
}
EPOCH_WINDOWS = 2975
REPORT_GPU_GIB = 11
MEMORY_MODEL = "vanilla-cgru-original"
STREAM_MODEL = "resnet-cgru-small-deep"
GIB = 1024**3


# ------------------------------------------------------------------------------------------- the stages


class Stage:
    """What a stage process shares: the device, the sizes, and a JSON-lines file each record is appended to
    at once, so that a stage killed at its time limit still leaves what it measured."""

    def __init__(self, args: argparse.Namespace):
        import torch

        self.args = args
        self.torch = torch
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise SystemExit("--device cuda, but PyTorch sees no CUDA GPU (use --device cpu --tiny for a dry run)")
        self.tiny = args.tiny
        self.records = open(args.records, "a", encoding="utf-8")

    def emit(self, kind: str, **fields) -> None:
        self.records.write(json.dumps({"kind": kind, **fields}) + "\n")
        self.records.flush()

    @contextlib.contextmanager
    def attempt(self, kind: str, **fields):
        """Run one measurement; if it raises, record the error with ``fields`` and go on with the next."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - a failing variant is a result to report, not a crash
            self.emit(kind, **fields, error=f"{type(error).__name__}: {error}"[:400])
        finally:
            if self.cuda:
                self.torch.cuda.empty_cache()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def precisions(self) -> list[tuple[str, str, bool]]:
        """(name, amp, channels_last) of the compared variants; fp16 only on CUDA (vidseg refuses it on CPU)."""
        variants = [("fp32", "off", False), ("bf16 + channels_last", "bf16", True)]
        if self.cuda:
            variants.append(("fp16 + channels_last", "fp16", True))
        return variants


def stage_env(stage: Stage) -> None:
    torch = stage.torch
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "device_count": torch.cuda.device_count() if stage.cuda else 0,
        "cpu_count": os.cpu_count(),
    }
    if stage.cuda:
        props = torch.cuda.get_device_properties(stage.device)
        info.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=props.total_memory / GIB,
            multiprocessors=props.multi_processor_count,
            bf16=torch.cuda.is_bf16_supported(),
        )
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )
            info["nvidia_smi"] = smi.stdout.strip()
    stage.emit("env", **info)


def street_frame(height: int, width: int, t: int = 0):
    """A smooth street-like uint8 RGB frame (sky, facades, road); moves with ``t``."""
    import numpy as np

    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :] + 0.01 * t
    red = (ys < 0.35) * 0.4 + 0.5 * np.abs(np.sin(12 * xs)) * (ys > 0.35)
    green = (ys > 0.6) * 0.3 + 0.2 * np.cos(7 * xs + 3 * ys) + 0.3
    blue = (ys < 0.35) * 0.8 + 0.1 * xs
    rgb = np.stack(np.broadcast_arrays(red, green, blue), axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def stage_train(stage: Stage) -> None:
    """Training steps as vidseg's Trainer takes them (ClipForward, autocast, segmentation_loss on the annotated
    frame, GradScaler for fp16, Adam, the loss read back every step), on a synthetic batch already on the device:
    the compute of training, without data loading or evaluation."""
    torch = stage.torch
    from vidseg.models import build_model
    from vidseg.train import ClipForward, segmentation_loss

    height, width, frames, seconds = (32, 64, 2, 0.2) if stage.tiny else (512, 1024, 5, 2.5)
    generator = torch.Generator().manual_seed(0)
    clip = torch.randn(1, frames, 3, height, width, generator=generator).to(stage.device)
    labels = torch.randint(0, 20, (1, frames, height, width), generator=generator).to(stage.device)
    batch = {"labels": labels, "labelled": torch.ones(1, frames, dtype=torch.bool), "gt_index": torch.tensor([1])}
    for name in TRAIN_MODELS:
        for variant, amp, channels_last in stage.precisions():
            fields = {"model": name, "variant": variant, "size": [height, width], "frames": frames}
            with stage.attempt("train", **fields):
                torch.manual_seed(0)
                model = build_model(name, num_classes=20).to(stage.device).train()
                if channels_last:
                    model.to(memory_format=torch.channels_last)
                forward = ClipForward(model, channels_last=channels_last)
                optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
                dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
                scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
                losses: list[float] = []

                def step(forward=forward, optimizer=optimizer, dtype=dtype, scaler=scaler, losses=losses) -> None:
                    with torch.autocast(stage.device.type, dtype=dtype, enabled=dtype is not None):
                        logits = forward(clip)
                    loss = segmentation_loss(logits, batch, "annotated", None)
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(loss.item())  # the Trainer reads the loss back every step, too

                steps, elapsed = timed_steps(stage, step, warmup=1 if stage.tiny else 3, seconds=seconds)
                frames_per_s = steps * frames / elapsed
                stage.emit(
                    "train", **fields, steps=steps, seconds=elapsed, frames_per_s=frames_per_s,
                    minutes_per_epoch=EPOCH_WINDOWS * frames / frames_per_s / 60,
                    finite=all(math.isfinite(v) for v in losses), report=TRAIN_MODELS[name],
                )


def timed_steps(stage: Stage, step, warmup: int, seconds: float) -> tuple[int, float]:
    """Run ``step`` ``warmup`` times, then for at least ``seconds`` (and at least 2 steps); (steps, seconds)."""
    for _ in range(warmup):
        step()
    stage.sync()
    start = time.perf_counter()
    steps = 0
    while steps < 2 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    stage.sync()
    return steps, time.perf_counter() - start


def stage_memory(stage: Stage) -> None:
    """One training step per variant in a fresh process (``bench_memory.py --child``), so every peak is its own."""
    size, frames = ("32x64", 2) if stage.tiny else ("512x1024", 5)
    model = "vanilla-cgru-small-shallow" if stage.tiny else MEMORY_MODEL
    for variant in ("off", "step", "stage"):
        command = [sys.executable, str(REPO / "benchmarks" / "bench_memory.py"), "--child", "--variant", variant,
                   "--model", model, "--size", size, "--frames", str(frames), "--batch", "1"]
        if not stage.cuda:
            command.append("--cpu")
        completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if completed.returncode != 0:
            stage.emit("memory", variant=variant, size=size, frames=frames, model=model,
                       error=f"exit {completed.returncode}: {completed.stderr[-400:]}")
            continue
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        stage.emit("memory", size=size, frames=frames, model=model, **result)


def make_segmenter(stage: Stage, amp: str):
    torch = stage.torch
    from vidseg.models import build_model
    from vidseg.segment import Segmenter

    model_name = "vanilla-crnn-small-shallow" if stage.tiny else STREAM_MODEL
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=20)
    checkpoint = {"model_name": model_name, "num_classes": 20, "label_set": "report", "model": model.state_dict()}
    return Segmenter(checkpoint, device=stage.device, amp=amp)


def stream_latencies(
    segmenter, frames: list, min_frames: int, max_frames: int, seconds: float
) -> tuple[list[float], list]:
    """Per-frame seconds of ``segment_frame`` (which returns a label map on the host, so each call ends
    synchronised), cycling through ``frames``: at least ``min_frames``, then until ``max_frames`` or ``seconds``;
    and the labels of the first ``len(frames)`` frames."""
    latencies: list[float] = []
    first_labels = []
    start = time.perf_counter()
    while len(latencies) < min_frames or (len(latencies) < max_frames and time.perf_counter() - start < seconds):
        frame = frames[len(latencies) % len(frames)]
        begin = time.perf_counter()
        labels = segmenter.segment_frame(frame)
        latencies.append(time.perf_counter() - begin)
        if len(first_labels) < len(frames):
            first_labels.append(labels)
    return latencies, first_labels


def agreement(labels: list, reference: list) -> float:
    return sum(float((a == b).mean()) for a, b in zip(labels, reference)) / len(reference)


def stage_stream(stage: Stage) -> None:
    torch = stage.torch
    sizes = [(64, 128), (128, 256)] if stage.tiny else [(512, 1024), (1024, 2048)]
    warmup, seconds, max_frames = (2, 0.3, 10) if stage.tiny else (10, 3.0, 400)
    # fp16 is CUDA-only in vidseg; bf16 on a CPU needs AVX512/AMX for oneDNN's fused kernels, so the dry run
    # streams fp32 only.
    amps = ("off", "bf16", "fp16") if stage.cuda else ("off",)
    for height, width in sizes:
        frames = [street_frame(height, width, t) for t in range(4)]
        reference: list = []
        for amp in amps:
            with stage.attempt("stream", size=[height, width], amp=amp):
                segmenter = make_segmenter(stage, amp)
                latencies, labels = stream_latencies(segmenter, frames, warmup + 3, warmup + max_frames, seconds)
                reference = reference or labels  # fp32 comes first
                timed = latencies[warmup:] or latencies
                stage.emit("stream", size=[height, width], amp=amp, frames=len(timed),
                           median_ms=1000 * statistics.median(timed), frames_per_s=1 / statistics.median(timed),
                           agreement=agreement(labels, reference))
    # A long stream: is the per-frame latency flat, and the memory constant, with the state carried over
    # thousands of frames?
    height, width = sizes[0]
    amp = amps[-1]
    with stage.attempt("long_stream", size=[height, width], amp=amp):
        segmenter = make_segmenter(stage, amp)
        frames = [street_frame(height, width, t) for t in range(8)]
        first, total, seconds = (10, 40, 2.0) if stage.tiny else (100, 3000, 20.0)
        if stage.cuda:
            torch.cuda.reset_peak_memory_stats(stage.device)
        latencies, _ = stream_latencies(segmenter, frames, first, first, seconds)
        memory = {}
        if stage.cuda:
            memory["cuda_peak_first"] = torch.cuda.max_memory_allocated(stage.device)
        more, _ = stream_latencies(segmenter, frames, first, total - first, seconds)
        if stage.cuda:
            memory["cuda_peak"] = torch.cuda.max_memory_allocated(stage.device)
        stage.emit("long_stream", size=[height, width], amp=amp, first=first, **flatness(latencies + more),
                   **memory)


def flatness(latencies: list[float]) -> dict:
    """Early vs late median latency and the least-squares trend, after the first 10% (warm-up) of frames."""
    n = len(latencies)
    skip = max(1, n // 10)
    kept = latencies[skip:]
    third = max(1, len(kept) // 3)
    early, late = statistics.median(kept[:third]), statistics.median(kept[-third:])
    xs = list(range(skip, n))
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(kept)
    denominator = sum((x - mean_x) ** 2 for x in xs) or 1.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, kept)) / denominator
    return {
        "frames": n,
        "early_ms": 1000 * early,
        "late_ms": 1000 * late,
        "late_over_early": late / early,
        "trend_per_100_frames": 100 * slope / statistics.median(kept),
        "early_range": [skip, skip + third],
        "late_range": [n - third, n],
    }


class CompiledStep:
    """Stands in for the Segmenter's network: the same fused model, its ``step`` compiled."""

    def __init__(self, network, **options):
        import torch

        self.network = network
        self.step = torch.compile(network.step, dynamic=False, **options)


def stage_compile(stage: Stage) -> None:
    (height, width), amp = ((64, 128), "off") if stage.tiny else ((512, 1024), "fp16")
    warmup, seconds = (3, 0.3) if stage.tiny else (10, 3.0)
    frames = [street_frame(height, width, t) for t in range(4)]
    plain = make_segmenter(stage, amp)
    latencies, reference = stream_latencies(plain, frames, warmup + 3, warmup + 400, seconds)
    plain_median = statistics.median(latencies[warmup:])
    stage.emit("compile", variant="fused step, eager", size=[height, width], amp=amp,
               frames_per_s=1 / plain_median, speedup=1.0, agreement=1.0, compile_s=0.0)
    # The eager backend on the CPU exercises the wiring (graph capture, state carried) without a C++ compiler.
    options = [("torch.compile", {"backend": "eager"})] if not stage.cuda else [
        ("torch.compile (inductor)", {}),
        ("torch.compile mode=reduce-overhead (CUDA graphs)", {"mode": "reduce-overhead"}),
    ]
    for name, compile_options in options:
        segmenter = make_segmenter(stage, amp)
        segmenter.network = CompiledStep(segmenter.network, **compile_options)
        begin = time.perf_counter()
        try:
            for frame in frames[:3]:  # the first step (no state) and the next (with state) compile
                segmenter.segment_frame(frame)
        except Exception as error:  # noqa: BLE001 - a backend that fails here is a result, not a crash
            stage.emit("compile", variant=name, size=[height, width], amp=amp, error=repr(error)[:400])
            continue
        compile_seconds = time.perf_counter() - begin
        segmenter.reset()
        latencies, labels = stream_latencies(segmenter, frames, warmup + 3, warmup + 400, seconds)
        median = statistics.median(latencies[warmup:])
        stage.emit("compile", variant=name, size=[height, width], amp=amp, frames_per_s=1 / median,
                   speedup=plain_median / median, agreement=agreement(labels, reference), compile_s=compile_seconds)


def stage_main(args: argparse.Namespace) -> None:
    stage = Stage(args)
    {"env": stage_env, "train": stage_train, "memory": stage_memory, "stream": stage_stream,
     "compile": stage_compile}[args.stage](stage)


# ------------------------------------------------------------------------------------------- the runner


def stage_environment() -> dict:
    paths = [str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "PYTHONUNBUFFERED": "1"}


def run_stage(name: str, args: argparse.Namespace, work: Path, limit: float) -> dict:
    """Run one stage in a child process under ``limit`` seconds; its records, status and error."""
    records = work / f"{name}.jsonl"
    start = time.perf_counter()
    if name == "tests":
        junit = work / "junit.xml"
        tests = ["tests/test_cuda.py"] if args.tiny else ["tests/test_cuda.py", "tests/test_ddp.py"]
        command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", f"--junitxml={junit}",
                   *tests]
    else:
        command = [sys.executable, __file__, "--stage", name, "--records", str(records), "--device", args.device]
        command += ["--tiny"] if args.tiny else []
    status, output = run_command(command, limit)
    result: dict = {"stage": name, "status": status, "seconds": time.perf_counter() - start, "records": []}
    if records.exists():
        result["records"] = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    if name == "tests":
        result["command"] = "pytest " + " ".join(tests)
        result["records"] = junit_outcomes(work / "junit.xml")
        (Path(args.out) / "tests.log").write_text(output)
        if status.startswith("failed") and result["records"]:
            status = result["status"] = "tests failed"  # pytest's exit 1: the outcomes say which
    if status != "ok":
        result["error"] = output[-1500:]
    print(f"[gpu_check] {name}: {status} in {result['seconds']:.0f} s", flush=True)
    return result


def run_command(command: list[str], limit: float) -> tuple[str, str]:
    """Run ``command`` in the repository under ``limit`` seconds; ("ok" / "failed (exit N)" / "timed out after
    S s", stdout and stderr). On time-out its whole process group is killed (its own children too)."""
    process = subprocess.Popen(command, cwd=REPO, env=stage_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return f"timed out after {limit:.0f} s", output
    return ("ok" if process.returncode == 0 else f"failed (exit {process.returncode})"), output


def junit_outcomes(path: Path) -> list[dict]:
    if not path.exists():
        return []
    outcomes = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, note = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                note = (child.get("message") or "").splitlines()[0][:200] if child.get("message") else ""
        test_file = case.get("classname", "").replace(".", "/") + ".py"
        outcomes.append({"kind": "test", "test": f"{test_file}::{case.get('name')}", "outcome": outcome, "note": note})
    return outcomes


# ----------------------------------------------------------------------------------------- the report


def markdown(results: list[dict], args: argparse.Namespace, command: str, total: float) -> str:
    by_stage = {r["stage"]: r for r in results}
    env = next(iter(r for r in by_stage.get("env", {}).get("records", [])), {})
    where = env.get("gpu") or "CPU (dry run)"
    lines = [
        f"# GPU check: {where}",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {total:.0f} s in all)."
        + (" **Tiny sizes on the CPU: a dry run of the script, not figures.**" if args.tiny else ""),
        "",
    ]
    if env:
        lines += [
            f"Machine: {env.get('nvidia_smi') or where}; {env.get('device_count', 0)} GPU(s), compute capability "
            f"{env.get('capability', '-')}, {env.get('cpu_count')} CPUs; PyTorch {env.get('torch')} (CUDA "
            f"{env.get('cuda_runtime')}, cuDNN {env.get('cudnn')}), Python {env.get('python')}. fp32 convolutions "
            f"may use TF32: cuDNN allow_tf32={env.get('cudnn_tf32')} (PyTorch's default), matmul "
            f"allow_tf32={env.get('matmul_tf32')}.",
            "",
        ]
    lines += ["| stage | status | seconds |", "|---|---|---:|"]
    lines += [f"| {r['stage']} | {r['status']} | {r['seconds']:.0f} |" for r in results]
    for r in results:
        if "error" in r:
            lines += ["", f"`{r['stage']}` output (tail):", "", "```", r["error"].strip()[-1200:], "```"]
    tests_command = by_stage.get("tests", {}).get("command", "pytest")
    sections = {"tests": lambda records: _tests_section(records, tests_command), "train": _train_section,
                "memory": _memory_section, "stream": lambda records: _stream_section(records, args.tiny),
                "compile": _compile_section}
    for name, section in sections.items():
        if name in by_stage:
            lines += ["", *section(by_stage[name]["records"])]
    return "\n".join(lines) + "\n"


def _tests_section(records: list[dict], command: str) -> list[str]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
    summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items())) or "no outcome recorded"
    lines = ["## CUDA-marked tests and DDP", "", f"`{command}`: {summary}.", "",
             "| test | outcome | note |", "|---|---|---|"]
    lines += [f"| `{r['test']}` | {r['outcome']} | {r['note'].replace('|', '/')} |" for r in records]
    return lines


def _train_section(records: list[dict]) -> list[str]:
    if not records:
        return ["## Training throughput", "", "No record."]
    first = records[0]
    height, width = first["size"]
    lines = [
        "## Training throughput",
        "",
        f"{height}x{width}, T={first['frames']}, batch 1: one Adam step per window, loss on the annotated frame, "
        "through vidseg's ClipForward / segmentation_loss / GradScaler (fp16), on a synthetic batch already on "
        "the device: training compute only, no data loading or evaluation, so an epoch takes at least this long. "
        f"min/epoch = {EPOCH_WINDOWS:,} windows x {first['frames']} frames / (frames/s) / 60; the report's figures "
        "(section 4.1) are for whole epochs on an RTX 2080 Ti / GTX TITAN X.",
        "",
        "| model | precision | train frames/s | x fp32 | min/epoch | report min/epoch | loss finite |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    fp32 = {r["model"]: r["frames_per_s"] for r in records if r["variant"] == "fp32" and "error" not in r}
    for r in records:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | failed: {r['error'][:150]} | | | | |")
            continue
        ratio = r["frames_per_s"] / fp32[r["model"]] if r["model"] in fp32 else float("nan")
        lines.append(f"| {r['model']} | {r['variant']} | {r['frames_per_s']:.1f} | {ratio:.2f}x | "
                     f"{r['minutes_per_epoch']:.1f} | {r['report']} | {'yes' if r['finite'] else 'NO'} |")
    return lines


def _memory_section(records: list[dict]) -> list[str]:
    lines = ["## Peak memory of one training step", ""]
    ok = [r for r in records if "error" not in r]
    if records:
        r = records[0]
        lines += [f"{r['model']}, {r['size']}, T={r['frames']}, batch 1, one step (forward, loss on the annotated "
                  "frame, backward, Adam), fresh process per variant (`benchmarks/bench_memory.py --child`). "
                  "`torch.cuda.max_memory_allocated` counts PyTorch's tensors, not the CUDA context. The report's "
                  f"GPUs had {REPORT_GPU_GIB} GiB.", ""]
    cuda = any("cuda_peak" in r for r in ok)
    figure = "CUDA max allocated (GiB)" if cuda else "peak RSS (GiB; CPU dry run)"
    lines += [f"| activation checkpointing | {figure} | x lower than off | kept for backward (GiB) | "
              "first-step time (s) |", "|---|---:|---:|---:|---:|"]
    off = next((r for r in ok if r["variant"] == "off"), None)
    key = "cuda_peak" if cuda else "peak_rss"
    for r in records:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error'][-150:].strip()} | | | |".replace("\n", " "))
            continue
        ratio = f"{off[key] / r[key]:.2f}x" if off else "-"
        lines.append(f"| {r['variant']} | {r[key] / GIB:.2f} | {ratio} | {r['saved_bytes'] / GIB:.2f} | "
                     f"{r['seconds']:.2f} |")
    return lines


def _stream_section(records: list[dict], tiny: bool) -> list[str]:
    model = "vanilla-crnn-small-shallow" if tiny else STREAM_MODEL
    lines = ["## Streaming segmentation", "",
             f"`Segmenter` ({model}, fused inference copy) fed uint8 frames from host memory, label maps "
             "back on the host after every frame; frames/s = 1 / median per-frame latency after warm-up. "
             "Agreement: share of pixels labelled as by fp32 on the same frames (random weights).", "",
             "| size | precision | frames timed | median ms/frame | frames/s | agreement with fp32 |",
             "|---|---|---:|---:|---:|---:|"]
    for r in (r for r in records if r["kind"] == "stream"):
        if "error" in r:
            lines.append(f"| {r['size'][0]}x{r['size'][1]} | {_precision(r['amp'])} | failed: {r['error'][:150]} "
                         "| | | |")
            continue
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {_precision(r['amp'])} | {r['frames']} | "
                     f"{r['median_ms']:.2f} | {r['frames_per_s']:.1f} | {100 * r['agreement']:.2f}% |")
    for r in (r for r in records if r["kind"] == "long_stream"):
        if "error" in r:
            lines += ["", f"Long stream, {r['size'][0]}x{r['size'][1]} {_precision(r['amp'])}: failed: {r['error']}"]
            continue
        peak = ""
        if r.get("cuda_peak"):
            peak = (f"; CUDA max allocated {r['cuda_peak_first'] / GIB:.3f} GiB after frame {r['first']}, "
                    f"{r['cuda_peak'] / GIB:.3f} GiB after frame {r['frames']}")
        lines += ["", f"Long stream, {r['size'][0]}x{r['size'][1]} {_precision(r['amp'])}, {r['frames']} frames: "
                  f"median {r['early_ms']:.2f} ms over frames {r['early_range'][0]}-{r['early_range'][1] - 1}, "
                  f"{r['late_ms']:.2f} ms over frames {r['late_range'][0]}-{r['late_range'][1] - 1} "
                  f"(**{r['late_over_early']:.3f}x**); trend {r['trend_per_100_frames']:+.2%} of a frame per 100 "
                  f"frames{peak}."]
    return lines


def _compile_section(records: list[dict]) -> list[str]:
    lines = ["## torch.compile and CUDA graphs (streaming)", "",
             "| variant | size | precision | frames/s | x eager | agreement with eager | compile + first frames (s) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in records:
        size = f"{r['size'][0]}x{r['size'][1]}"
        if "error" in r:
            lines.append(f"| {r['variant']} | {size} | {_precision(r['amp'])} | failed: {r['error'][:150]} | | | |")
            continue
        lines.append(f"| {r['variant']} | {size} | {_precision(r['amp'])} | {r['frames_per_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {100 * r['agreement']:.2f}% | {r['compile_s']:.1f} |")
    return lines


def _precision(amp: str) -> str:
    return {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}[amp]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for gpu_check.md, gpu_check.json and tests.log (created)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and short time boxes (a dry run)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        stage_main(args)
        return
    if not args.out:
        parser.error("--out DIR is required")
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    limits = TINY_LIMITS if args.tiny else LIMITS
    command = "python3 " + shlex.join(["benchmarks/gpu_check.py", *sys.argv[1:]])
    start = time.perf_counter()
    results = []
    allowed = 0.0
    with tempfile.TemporaryDirectory() as work:
        for name in stages:
            # A stage may use the time the stages before it left over, so the whole stays inside their sum.
            allowed += limits[name]
            limit = max(10.0, allowed - (time.perf_counter() - start))
            results.append(run_stage(name, args, Path(work), limit))
            # Written after every stage: a run stopped from outside still leaves the stages it finished.
            total = time.perf_counter() - start
            (out / "gpu_check.json").write_text(json.dumps({"command": command, "stages": results}, indent=1))
            (out / "gpu_check.md").write_text(markdown(results, args, command, total))
    print((out / "gpu_check.md").read_text())


if __name__ == "__main__":
    main()
