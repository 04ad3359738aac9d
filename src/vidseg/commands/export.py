"""`vidseg export --checkpoint CKPT --out model.onnx`: the single-frame step as ONNX, for any runtime."""

from __future__ import annotations

import argparse
import json
import sys

from vidseg.commands.segment import parse_size

# float32 rounding in a different runtime stays far below this; anything above is a wrong graph.
TOLERANCE = 1e-3

HELP = "export a checkpoint's single-frame step (frame, states) -> (logits, states) to ONNX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by vidseg train (.pt)")
    parser.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                        help="fp32, or int8: statically quantized convolutions for ONNX Runtime (default: fp32)")
    parser.add_argument("--calibrate", metavar="PATH",
                        help="int8 calibration frames: a video, a folder of frames or a dataset root (default: "
                        "the checkpoint's own validation frames, where they exist)")
    parser.add_argument("--size", type=parse_size, metavar="HxW",
                        help="int8: resize the calibration frames to this size (the size you will stream at)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the exported file in onnxruntime against PyTorch")


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from vidseg.checkpoint import TrainState
    from vidseg.data.video import check_output_file
    from vidseg.export import export_onnx, max_difference_to_model, read_metadata
    from vidseg.fileio import check_outputs_spare_inputs, remove_dead_temporaries_of

    check_outputs_spare_inputs([("--out", args.out)], [("--checkpoint", args.checkpoint)])
    remove_dead_temporaries_of(args.out)  # left by a killed earlier run
    out = check_output_file(args.out, args.overwrite)
    if args.precision != "int8" and (args.calibrate is not None or args.size is not None):
        from vidseg.errors import VidsegError

        raise VidsegError("--calibrate and --size are for --precision int8")
    checkpoint = TrainState.load(args.checkpoint)
    model = checkpoint.build_model(args.checkpoint)
    if args.precision == "int8":
        from vidseg.export import export_int8_onnx

        export_int8_onnx(
            model, out, checkpoint=checkpoint, calibration=args.calibrate, size=args.size, opset=args.opset
        )
        return _report_int8(args, out, checkpoint, model)
    export_onnx(model, out, checkpoint=checkpoint, opset=args.opset)
    metadata = read_metadata(out)
    states = metadata["vidseg.state_channels"]
    print(f"wrote {out}: {checkpoint.model_name}, inputs frame + {len(json.loads(states))} states (channels "
          f"{states}), dynamic batch, height and width")
    if args.no_check:
        return 0
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is not installed, so the file was not checked (pip install onnxruntime)")
        return 0
    size = (50, 70)
    difference = max_difference_to_model(out, model, size=size, num_frames=3)
    print(f"onnxruntime vs PyTorch over 3 frames of {size[1]}x{size[0]}: max |logit difference| = {difference:.2e}")
    if not difference < TOLERANCE:
        print(f"vidseg export: the ONNX file disagrees with PyTorch by more than {TOLERANCE}; please report this "
              "with the versions of torch, onnx and onnxruntime", file=sys.stderr)
        return 1
    return 0


def _report_int8(args: argparse.Namespace, out, checkpoint, model) -> int:
    """Print what was written and, unless --no-check, how often the int8 file's argmax agrees with PyTorch's."""
    from vidseg.export import read_metadata, run_onnx_sequence

    states = read_metadata(out)["vidseg.state_channels"]
    print(f"wrote {out}: {checkpoint.model_name} in int8, inputs frame + states (channels {states}), "
          "dynamic batch, height and width")
    if args.no_check:
        return 0
    import torch

    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(1, 3, 3, 64, 96, generator=generator) * 2 - 1
    with torch.no_grad():
        expected, _ = model.eval()(frames)
    logits, _ = run_onnx_sequence(out, frames.numpy())
    agreement = float((logits.argmax(axis=2) == expected.numpy().argmax(axis=2)).mean())
    print(f"onnxruntime int8 vs PyTorch fp32 over 3 random frames of 96x64: argmax agreement {agreement:.1%} "
          "(random frames are harder than real ones)")
    return 0
