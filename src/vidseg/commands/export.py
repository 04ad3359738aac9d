"""`vidseg export --checkpoint CKPT --out model.onnx`: the single-frame step as ONNX, for any runtime."""

from __future__ import annotations

import argparse
import sys

# float32 rounding in a different runtime stays far below this; anything above is a wrong graph.
TOLERANCE = 1e-3

HELP = "export a checkpoint's single-frame step (frame, states) -> (logits, states) to ONNX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by vidseg train (.pt)")
    parser.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the exported file in onnxruntime against PyTorch")


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from vidseg.checkpoint import load_checkpoint, model_from_checkpoint
    from vidseg.data.video import check_output_file
    from vidseg.export import export_onnx, max_difference_to_model, read_metadata
    from vidseg.fileio import check_outputs_spare_inputs, remove_dead_temporaries_of

    check_outputs_spare_inputs([("--out", args.out)], [("--checkpoint", args.checkpoint)])
    remove_dead_temporaries_of(args.out)  # left by a killed earlier run
    out = check_output_file(args.out, args.overwrite)
    checkpoint = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(checkpoint, args.checkpoint)
    export_onnx(model, out, checkpoint=checkpoint, opset=args.opset)
    metadata = read_metadata(out)
    states = metadata["vidseg.state_channels"]
    print(f"wrote {out}: {checkpoint['model_name']}, inputs frame + {len(model.channels) if model.is_temporal else 0}"
          f" states (channels {states}), dynamic batch, height and width")
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
