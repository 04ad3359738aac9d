"""benchmarks/gpu_check.py runs end to end (its CPU dry run), time-boxes its stages, and reports what it got."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_script()


@pytest.mark.slow
def test_dry_run_runs_every_stage_on_the_cpu_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--device", "cpu", "--tiny"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.md", "tests.log"]
    stages = {s["stage"]: s for s in json.loads((out / "gpu_check.json").read_text())["stages"]}
    assert list(stages) == list(gpu_check.STAGES)
    assert {name: s["status"] for name, s in stages.items()} == dict.fromkeys(gpu_check.STAGES, "ok")

    env = stages["env"]["records"][0]
    assert env["device_count"] == 0 and env["torch"]

    # Without CUDA every CUDA test is skipped, saying why; the device-selection test runs everywhere.
    tests = {r["test"].split("::")[1]: r for r in stages["tests"]["records"]}
    assert tests["test_a_cuda_index_beyond_the_gpus_is_explained"]["outcome"] == "passed"
    skipped = [r for r in tests.values() if r["outcome"] == "skipped"]
    assert len(skipped) == len(tests) - 1 and all("CUDA GPU" in r["note"] for r in skipped)

    train = stages["train"]["records"]
    assert {(r["model"], r["variant"]) for r in train} == {
        (model, variant) for model in gpu_check.TRAIN_MODELS for variant in ("fp32", "bf16 + channels_last")
    }
    for record in train:
        assert record["finite"] and record["steps"] >= 2 and record["frames_per_s"] > 0
        assert record["minutes_per_epoch"] == pytest.approx(2975 * 2 / record["frames_per_s"] / 60)

    memory = {r["variant"]: r for r in stages["memory"]["records"]}
    assert sorted(memory) == ["off", "stage", "step"]
    assert all(r["device"] == "cpu" and r["peak_rss"] > 0 for r in memory.values())
    assert memory["off"]["saved_bytes"] > memory["step"]["saved_bytes"]  # checkpointing keeps less for backward

    stream = [r for r in stages["stream"]["records"] if r["kind"] == "stream"]
    assert [(r["size"], r["amp"]) for r in stream] == [([64, 128], "off"), ([128, 256], "off")]
    assert all(r["frames"] >= 3 and r["agreement"] == 1.0 for r in stream)
    (long_stream,) = [r for r in stages["stream"]["records"] if r["kind"] == "long_stream"]
    assert long_stream["frames"] >= 20 and long_stream["early_ms"] > 0 and long_stream["late_ms"] > 0

    compiled = stages["compile"]["records"]
    assert [r["variant"] for r in compiled] == ["fused step, eager", "torch.compile"]
    assert "error" not in compiled[1] and compiled[1]["agreement"] == 1.0  # the compiled step gives the same labels

    report = (out / "gpu_check.md").read_text()
    for heading in ("## CUDA-marked tests and DDP", "## Training throughput", "## Peak memory of one training step",
                    "## Streaming segmentation", "## torch.compile and CUDA graphs"):
        assert heading in report
    assert "a dry run of the script, not figures" in report


def test_a_stage_past_its_limit_is_killed_with_its_children_and_recorded():
    start = time.perf_counter()
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    status, _ = gpu_check.run_command([sys.executable, "-c", child + "print('started', flush=True); time.sleep(60)"], 2)
    assert status == "timed out after 2 s" and time.perf_counter() - start < 20
    status, output = gpu_check.run_command([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 30)
    assert status == "failed (exit 3)" and "boom" in output


def test_report_shows_failed_and_timed_out_stages_with_their_output():
    args = argparse.Namespace(tiny=False)
    results = [
        {"stage": "train", "status": "timed out after 130 s", "seconds": 130.2, "error": "step 7 ...",
         "records": [{"kind": "train", "model": "vanilla-crnn-small-shallow", "variant": "fp32", "size": [512, 1024],
                      "frames": 5, "steps": 40, "seconds": 2.5, "frames_per_s": 80.0,
                      "minutes_per_epoch": 2975 * 5 / 80 / 60, "finite": True, "report": "about 50"},
                     {"kind": "train", "model": "vanilla-crnn-small-shallow", "variant": "fp16 + channels_last",
                      "size": [512, 1024], "frames": 5, "error": "RuntimeError: CUDA out of memory"}]},
        {"stage": "memory", "status": "failed (exit 1)", "seconds": 3.0, "error": "Traceback: boom", "records": []},
    ]
    report = gpu_check.markdown(results, args, "python3 benchmarks/gpu_check.py --out x", 133.0)
    assert "| train | timed out after 130 s | 130 |" in report and "| memory | failed (exit 1) | 3 |" in report
    assert "step 7 ..." in report and "Traceback: boom" in report
    assert "| vanilla-crnn-small-shallow | fp32 | 80.0 | 1.00x | 3.1 | about 50 | yes |" in report
    assert "| vanilla-crnn-small-shallow | fp16 + channels_last | failed: RuntimeError: CUDA out of memory" in report


def test_latency_flatness_separates_a_flat_stream_from_a_growing_one():
    flat = gpu_check.flatness([0.5] + [0.010] * 299)  # a slow first frame is warm-up, not a trend
    assert flat["late_over_early"] == pytest.approx(1.0) and flat["trend_per_100_frames"] == pytest.approx(0.0)
    growing = gpu_check.flatness([0.010 * (1 + i / 100) for i in range(300)])
    assert growing["late_over_early"] > 1.4 and growing["trend_per_100_frames"] > 0.3


def test_memory_benchmark_compares_cuda_peaks_when_it_ran_on_a_gpu():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_memory", REPO / "benchmarks" / "bench_memory.py")
        assert spec is not None and spec.loader is not None
        bench_memory = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench_memory)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    gib = 1024**3

    def row(variant: str, cuda_peak: float) -> dict:
        # A GPU process's host RSS barely moves with the variant; its CUDA peak is the figure.
        target = {"variant": variant, "device": "cuda", "peak_rss": 2 * gib, "cuda_peak": cuda_peak * gib,
                  "seconds": 1.0, "saved_bytes": 0, "size": (512, 1024)}
        return {"variant": variant, "points": [], "predicted": None, "target": target}

    args = argparse.Namespace(model="vanilla-cgru-original", size=(512, 1024), frames=5, batch=1,
                              fit_sizes=[(128, 256), (256, 512)])
    text = bench_memory.markdown(args, [row("off", 24.0), row("stage", 4.0)], "python benchmarks/bench_memory.py", gib)
    assert "| stage | 4.00 |" in text  # the CUDA table
    assert "- `stage` at 512x1024: 4.00 GiB measured, 6.00x lower than `off` (24.00 GiB measured)" in text
