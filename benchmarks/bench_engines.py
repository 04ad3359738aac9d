"""Streaming speed of one model in every engine, in one run: the plain fp32 model (reference), vidseg's fp32 /
bf16 / int8 paths, ONNX Runtime fp32 / int8 (the stock ``quantize_static``, QDQ per-channel, on vidseg's
export) and OpenVINO fp32 / bf16 / int8 (NNCF) when installed, at several sizes and thread counts.

Every path streams the same frames from the zero state; repeats are interleaved across paths (round-robin) and
the median per-frame time is reported, so a machine that is busy with other work disturbs all paths alike.
Achieved GOP/s (the plain model's multiply-adds x 2, torch.utils.flop_counter) is compared with the measured
matmul peak of the path's arithmetic (fp32 ``torch.mm``, bf16 ``torch.mm``, int8 ``torch._int_mm``).

    python benchmarks/bench_engines.py                              # 256x512 and 512x1024, 1 and 2 threads
    python benchmarks/bench_engines.py --sizes 64x128 --threads 1 --repeats 1 --frames 2   # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from bench_models import count_flops, street_like_frames
from common import matmul_peak_gflops, write_result

from vidseg.allocator import keep_freed_memory
from vidseg.config import parse_size
from vidseg.export import export_onnx, initial_states
from vidseg.models import build_model, optimize_for_inference
from vidseg.models.quantized import QuantizedUNet, has_vnni
from vidseg.quantize import quantize_onnx

Run = Callable[[], None]


def conv_peak_gops(kind: str, channels: int = 256, pixels: int = 96, repeats: int = 5) -> float | None:
    """Best GOP/s of a large 1x1 convolution (a matrix product through oneDNN, the library the convolutions use)
    in fp32, bf16 or int8; None where oneDNN cannot run it on this CPU. (``torch.mm`` in bf16 and
    ``torch._int_mm`` fall back to slow reference code on CPUs without AVX512, so they do not measure a peak.)"""
    x = torch.randn(1, channels, pixels, pixels).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 1, 1) * 0.05
    bias = torch.zeros(channels)
    geometry = ([1, 1], [0, 0], [1, 1], 1)  # stride, padding, dilation, groups
    if kind == "int8":
        qx = torch.randint(0, 127, x.shape, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        scales = torch.full((channels,), 0.01)
        qw = torch.randint(-127, 127, w.shape, dtype=torch.int8)
        packed = torch.ops.onednn.qconv_prepack(qw, scales, 0.02, 0, *geometry, None)
        zero = torch.zeros(channels, dtype=torch.int32)

        def run() -> None:
            torch.ops.onednn.qconv2d_pointwise(qx, 0.02, 0, packed, scales, zero, bias, *geometry, 0.05, 0, None,
                                               "none", [], "")
    else:
        dtype = torch.bfloat16 if kind == "bf16" else torch.float32
        x, w, bias = x.to(dtype), w.to(dtype), bias.to(dtype)

        def run() -> None:  # this operator takes padding before stride
            torch.ops.mkldnn._convolution_pointwise(x, w, bias, [0, 0], [1, 1], [1, 1], 1, "none", [], "")
    try:
        run()
    except RuntimeError:
        return None
    best = min(_seconds(run) for _ in range(repeats))
    return 2 * channels * channels * pixels * pixels / best / 1e9


def _seconds(fn: Run) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _gops(value: float | None) -> str:
    return f"{value:.0f} GOP/s" if value else "n/a (oneDNN cannot run it on this CPU)"


def torch_path(step, frames: list[torch.Tensor]) -> Run:
    def run() -> None:
        with torch.inference_mode():
            state = None
            for frame in frames:
                _, state = step(frame, state)

    return run


def onnx_feeds(frames: list[torch.Tensor]) -> list[np.ndarray]:
    return [np.ascontiguousarray(f.numpy()) for f in frames]


def ort_path(path: Path, frames: list[torch.Tensor], threads: int) -> Run:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    arrays = onnx_feeds(frames)

    def run() -> None:
        states = initial_states(metadata, *arrays[0].shape[-2:])
        for x in arrays:
            _, *states = session.run(None, {"frame": x, **{f"state{k}": s for k, s in enumerate(states)}})

    return run


def fused_path(model, dtype: torch.dtype, frames: list[torch.Tensor]) -> Run:
    run = torch_path(optimize_for_inference(model, dtype).step, frames)
    run()  # oneDNN refuses bf16 on CPUs without AVX512 or AVX-NE-CONVERT: find out here
    return run


def openvino_path(
    onnx_path: Path, feeds: list[dict] | None, shapes: dict[str, list[int]], frames: list[torch.Tensor],
    threads: int, precision: str,
) -> Run:
    import openvino as ov

    model = openvino_model(onnx_path, feeds, shapes)
    arrays = onnx_feeds(frames)
    compiled = ov.Core().compile_model(
        model, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
                       "PERFORMANCE_HINT": "LATENCY"},
    )
    request = compiled.create_infer_request()
    count = len(compiled.outputs)

    def run() -> None:
        states = None
        for x in arrays:
            feed = {"frame": x}
            if states is not None:
                feed.update({f"state{k}": s for k, s in enumerate(states)})
            else:
                shapes = [tuple(compiled.input(f"state{k}").get_partial_shape().to_shape()) for k in range(count - 1)]
                feed.update({f"state{k}": np.zeros(shape, np.float32) for k, shape in enumerate(shapes)})
            results = request.infer(feed)
            states = [results[compiled.output(k)].copy() for k in range(1, count)]

    return run


def openvino_model(onnx_path: Path, feeds: list[dict] | None, shapes: dict[str, list[int]]):
    """OpenVINO's model of the ONNX file with static shapes, or its NNCF int8 version calibrated on ``feeds``."""
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    model.reshape(shapes)
    if feeds is None:
        return model
    import nncf

    return nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds))


def calibration_feeds(model, frames: list[torch.Tensor]) -> list[dict]:
    """(frame, state) inputs of the float step while it streams ``frames`` (for ONNX Runtime and NNCF)."""
    feeds, state = [], None
    with torch.no_grad():
        for frame in frames:
            _, new_state = model.step(frame, state)
            zeros = [torch.zeros_like(s) for s in new_state]
            states = state if state is not None else zeros
            feeds.append({"frame": frame.numpy(), **{f"state{k}": s.numpy() for k, s in enumerate(states)}})
            state = new_state
    return feeds


def profile_shares(run: Run, top: int = 4) -> str:
    """The ops that take most of ``run``'s time (torch.profiler self time), as 'op 61%, ...'."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        run()
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return ", ".join(f"`{e.key}` {100 * e.self_cpu_time_total / total:.0f}%" for e in events[:top])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet-cgru-small-deep")
    parser.add_argument("--sizes", default="256x512,512x1024", help="comma-separated HxW")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--frames", type=int, default=4, help="frames per timed stream")
    parser.add_argument("--repeats", type=int, default=3, help="timed streams per path (interleaved)")
    parser.add_argument("--calibration-frames", type=int, default=8)
    parser.add_argument("--skip", default="", help="comma-separated path names to leave out")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    # What vidseg.Segmenter sets on the CPU; process-wide, so the reference and every PyTorch path run with it.
    kept = keep_freed_memory()
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    have_ort = importlib.util.find_spec("onnxruntime") is not None
    have_openvino = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None

    torch.manual_seed(0)
    model = build_model(args.model, num_classes=19)
    with torch.no_grad():  # settle BatchNorm statistics away from their init on street-like input
        model(street_like_frames(2, 128, 256))
    model.eval()
    folder = Path(tempfile.mkdtemp(prefix="bench_engines_"))
    fp32_onnx = export_onnx(model, folder / "fp32.onnx") if have_ort else None

    sections = []
    for size in args.sizes.split(","):
        height, width = parse_size(size)
        clip = street_like_frames(args.frames + args.calibration_frames, height, width)[0]
        frames = [clip[t][None].contiguous() for t in range(args.frames)]
        calibration = [clip[t][None].contiguous() for t in range(args.frames, len(clip))]
        flops = count_flops(lambda frames=frames: model.step(frames[0]))
        feeds = calibration_feeds(model, calibration)
        # vidseg int8: calibrated by streaming (the Segmenter does this from frames; here from tensors).
        int8 = QuantizedUNet(model)
        torch_path(int8.step, calibration)()
        int8.freeze()
        stock_onnx = vidseg_onnx = None
        if have_ort:
            assert fp32_onnx is not None
            stock_onnx = quantize_onnx(fp32_onnx, folder / f"stock-{size}.onnx", feeds, stock=True)
            vidseg_onnx = quantize_onnx(fp32_onnx, folder / f"vidseg-{size}.onnx", feeds)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            peaks = {kind: conv_peak_gops(kind) for kind in ("fp32", "bf16", "int8")}
            peaks["fp32 mm"] = matmul_peak_gflops(torch.float32, sizes=(1024, 2048), repeats=3)
            paths: dict[str, tuple[str, Run | str]] = {}
            candidates: list[tuple[str, str, Callable[[], Run]]] = [
                ("plain fp32 (reference)", "fp32", partial(torch_path, model.step, frames)),
                ("vidseg fp32 (fused)", "fp32", partial(fused_path, model, torch.float32, frames)),
                ("vidseg bf16 (fused)", "bf16", partial(fused_path, model, torch.bfloat16, frames)),
                ("vidseg int8 (oneDNN)", "int8", partial(torch_path, int8.step, frames)),
            ]
            if have_ort:
                assert fp32_onnx and stock_onnx and vidseg_onnx
                candidates += [
                    ("vidseg int8 ONNX in ONNX Runtime", "int8", partial(ort_path, vidseg_onnx, frames, threads)),
                    ("ONNX Runtime fp32", "fp32", partial(ort_path, fp32_onnx, frames, threads)),
                    ("ONNX Runtime int8 (stock quantize_static)", "int8",
                     partial(ort_path, stock_onnx, frames, threads)),
                ]
            if have_openvino and fp32_onnx is not None:
                shapes = {"frame": [1, 3, height, width]}
                shapes.update({k: list(v.shape) for k, v in feeds[0].items() if k != "frame"})
                candidates += [
                    ("OpenVINO fp32", "fp32", partial(openvino_path, fp32_onnx, None, shapes, frames, threads, "f32")),
                    ("OpenVINO bf16", "bf16", partial(openvino_path, fp32_onnx, None, shapes, frames, threads, "bf16")),
                    ("OpenVINO int8 (NNCF)", "int8",
                     partial(openvino_path, fp32_onnx, feeds, shapes, frames, threads, "f32")),
                ]
            for name, kind, make in candidates:
                if name in skip:
                    continue
                try:
                    paths[name] = (kind, make())
                except Exception as error:  # an engine that cannot run here is reported, not fatal
                    paths[name] = (kind, f"unavailable: {type(error).__name__}: {str(error).splitlines()[0][:90]}")

            times: dict[str, list[float]] = {name: [] for name, (_, run) in paths.items() if callable(run)}
            for name in times:
                paths[name][1]()  # warm-up  # type: ignore[operator]
            for _ in range(args.repeats):
                for name in times:
                    times[name].append(_seconds(paths[name][1]) / args.frames)  # type: ignore[arg-type]
            per_frame = {name: statistics.median(values) for name, values in times.items()}
            reference = per_frame.get("plain fp32 (reference)")
            vidseg_best = min((t for n, t in per_frame.items() if n.startswith("vidseg")), default=None)
            peer_best = min((t for n, t in per_frame.items() if not n.startswith(("vidseg", "plain"))), default=None)
            lines = [
                f"### `{args.model}` streaming at {height}x{width}, {threads} thread{'s' if threads > 1 else ''}",
                "",
                f"{flops / 1e9:.2f} GOP per frame (2 x multiply-adds). Measured peaks (oneDNN 1x1 convolution, "
                f"256 channels): fp32 {_gops(peaks['fp32'])}, bf16 {_gops(peaks['bf16'])}, int8 "
                f"{_gops(peaks['int8'])}; fp32 torch.mm {_gops(peaks['fp32 mm'])}.",
                "",
                "| path | ms/frame | frames/s | x reference | GOP/s | % of its peak |",
                "|---|---|---|---|---|---|",
            ]
            for name, (kind, run) in paths.items():
                if not callable(run):
                    lines.append(f"| {name} | {run} | | | | |")
                    continue
                seconds = per_frame[name]
                gops = flops / seconds / 1e9
                ratio = f"{reference / seconds:.2f}x" if reference else "-"
                peak = peaks[kind]
                share = f"{100 * gops / peak:.0f}% ({kind})" if peak else f"- ({kind}: no peak)"
                lines.append(f"| {name} | {1000 * seconds:.0f} | {1 / seconds:.2f} | {ratio} | {gops:.0f} | {share} |")
            if vidseg_best and peer_best and reference:
                lines += ["", f"vidseg's fastest path: {reference / vidseg_best:.2f}x the reference, "
                          f"{peer_best / vidseg_best:.2f}x the fastest peer path."]
            if "vidseg int8 (oneDNN)" in times:
                lines += ["", f"Where vidseg int8's time goes (torch.profiler, self time): "
                          f"{profile_shares(torch_path(int8.step, frames))}."]
            section = "\n".join(lines)
            print(section, flush=True)
            sections.append(section)
    cpu_note = (
        f"int8 activations: {int8.activation_bits} bits ({'VNNI' if has_vnni() else 'no VNNI on this CPU'}). "
        f"glibc keeps freed memory (`vidseg.allocator`, as `vidseg.Segmenter` sets it) for every PyTorch path, "
        f"the reference included: {'yes' if kept else 'no (not glibc)'}."
    )
    path = write_result("bench_engines", "\n\n".join([*sections, cpu_note]))
    print(f"written to {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
