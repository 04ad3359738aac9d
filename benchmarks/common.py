"""Helpers shared by the benchmark scripts: timing, matmul peak, result files.

torch is imported inside the functions that need it: the memory and streaming benchmarks measure the resident
memory of child processes and keep their parent process free of it.
"""

from __future__ import annotations

import platform
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# Issue 15's SynthCity bar: the smallest margin in points of the temporal model over the per-frame baseline, on every
# seed (all-frames IoU for the classes); TC must be higher, not equal.
ISSUE15_BARS = {
    "mIoU all": 6.0,
    "mIoU clean": 0.0,
    "mIoU corrupted": 20.0,
    "TC": 0.0,
    "pole": 0.0,
    "traffic sign": 0.0,
    "person": 0.0,
}


def meets_issue15_bar(figure: str, margins: list[float]) -> bool:
    """Whether every seed's margin on ``figure`` (a key of ``ISSUE15_BARS``) clears the issue's bar."""
    bar = ISSUE15_BARS[figure]
    return all(m > bar if figure == "TC" else m >= bar for m in margins)


def best_time(fn, repeats: int, warmup: int = 1) -> float:
    """Best wall time of ``repeats`` calls after ``warmup`` calls (the minimum is the least disturbed run)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak_gflops(dtype, sizes=(2048, 4096), repeats: int = 5) -> float:
    """Best achieved GFLOP/s of square matrix products on this machine, in ``dtype`` (a torch dtype)."""
    import torch

    best = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        seconds = best_time(lambda a=a, b=b: torch.mm(a, b), repeats, warmup=2)
        best = max(best, 2 * n**3 / seconds / 1e9)
    return best


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, Python {platform.python_version()}"


def write_result(name: str, markdown: str) -> Path:
    """Write ``benchmarks/results/<name>.md`` with the command that produced it."""
    RESULTS.mkdir(exist_ok=True)
    command = "python " + shlex.join(["benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]])
    text = f"{markdown}\n\nMachine: {machine_line()}\n\nReproduce: `{command}`\n"
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    return path
