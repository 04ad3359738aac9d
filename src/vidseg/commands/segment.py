"""`vidseg segment INPUT --checkpoint CKPT --out OUT`: segment a video, a folder of frames or a glob."""

from __future__ import annotations

import argparse

from vidseg.choices import AMP_MODES, MASK_FORMATS, PRECISIONS

HELP = "segment a video, a folder of frames or image files, streaming with the recurrent state carried"


def parse_size(text: str) -> tuple[int, int] | str:
    """``"512x1024"`` -> (512, 1024): height x width; ``checkpoint`` and ``input`` pass through."""
    if text in ("checkpoint", "input"):
        return text
    from vidseg.config import check_frame_size, parse_size
    from vidseg.errors import VidsegError

    try:
        height, width = parse_size(text)
        check_frame_size((height, width), "--size")
    except (ValueError, VidsegError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", nargs="+",
                        help="video file (mp4, mov, avi, mkv, ...), folder of frames, quoted glob such as "
                        "'frames/*.png', or image files (frames are read in natural order)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by vidseg train (.pt)")
    parser.add_argument("--out", help="output video with the prediction blended in (.mp4, .mov, .mkv or .avi); "
                        "it keeps the input's frame rate and frame count")
    parser.add_argument("--masks", metavar="DIR", help="write one mask PNG per frame into DIR (with or without --out)")
    parser.add_argument("--mask-format", choices=MASK_FORMATS, default="trainids",
                        help="trainids: class indices (255 = none); labelids: official Cityscapes ids; "
                        "color: palette RGB (default: trainids)")
    parser.add_argument("--size", type=parse_size, metavar="HxW", default="checkpoint",
                        help="working resolution: 'checkpoint' (default) fits each frame, aspect ratio kept, into the "
                        "size the model was trained at; 'input' infers at the frame's own size; HxW (e.g. 512x1024) "
                        "at exactly that size. Predictions are mapped back to the input size (bilinear on logits)")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours (default 0.5)")
    parser.add_argument("--side-by-side", action="store_true", help="output video shows input | prediction")
    parser.add_argument("--fps", type=float, help="frame rate of the output (default: the input video's; 17 for "
                        "frame folders, the Cityscapes rate)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--amp", choices=AMP_MODES, default="off",
                        help="compute precision: off (float32), bf16, or fp16 on CUDA (default: off); "
                        "the older spelling of --precision")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="fp32, bf16, fp16 (CUDA) or int8 (CPU, calibrated on --calibrate; default: from --amp)")
    parser.add_argument("--calibrate", metavar="PATH",
                        help="int8 calibration frames: a video, a folder of frames or a dataset root (default: "
                        "the checkpoint's own validation frames, where they exist)")
    parser.add_argument("--state-stride", type=int, metavar="N",
                        help="carry a temporal model's state N frames apart (each frame continues the state of the "
                        "frame N before it): the video's frame rate over the training video's, e.g. 15 for 15 Hz "
                        "video after 1 Hz training (default: the checkpoint's eval.state_stride, else 1)")
    parser.add_argument("--no-optimize", action="store_true",
                        help="run the plain model instead of its fused inference copy (for debugging)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from vidseg.data.video import check_output_file, check_output_folder, open_frames
    from vidseg.segment import Segmenter, segment_to_files

    if args.out is None and args.masks is None:
        from vidseg.errors import VidsegError

        raise VidsegError("nothing to write: give an output video (--out) and/or a masks folder (--masks)")
    from vidseg.fileio import check_outputs_spare_inputs, remove_dead_temporaries_of

    inputs = [("the input", path) for path in _input_paths(args.input)] + [("--checkpoint", args.checkpoint)]
    if args.calibrate is not None:
        inputs.append(("--calibrate", args.calibrate))
    check_outputs_spare_inputs([("--out", args.out), ("--masks", args.masks)], inputs)
    for output in (args.out, args.masks):
        if output is not None:
            remove_dead_temporaries_of(output)  # left by a killed earlier run
    # Refuse existing outputs before the (slower) model load.
    if args.out is not None:
        check_output_file(args.out, args.overwrite)
    if args.masks is not None:
        check_output_folder(args.masks, args.overwrite)
    source = open_frames(args.input, frame_rate=args.fps)
    if args.calibrate is not None and args.precision != "int8":
        from vidseg.errors import VidsegError

        raise VidsegError("--calibrate is for --precision int8")
    segmenter = Segmenter(
        args.checkpoint, device=args.device, amp=args.amp, size=args.size, optimize=not args.no_optimize,
        precision=args.precision, calibration=args.calibrate, state_stride=args.state_stride,
    )
    summary = segment_to_files(
        source,
        segmenter,
        out=args.out,
        masks=args.masks,
        mask_format=args.mask_format,
        alpha=args.alpha,
        side_by_side=args.side_by_side,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    written = " and ".join(str(p) for p in (args.out, args.masks) if p is not None)
    # Every frame source raises on an input without frames, so at least one frame was segmented.
    assert summary.size is not None
    height, width = summary.size
    print(
        f"segmented {summary.num_frames} frames of {width}x{height} in {summary.seconds:.1f} s "
        f"({summary.frames_per_second:.1f} frames/s) -> {written}"
    )
    return 0


def _input_paths(inputs: list[str]) -> list[str]:
    """The files and folders that INPUT names: each argument, or the files its glob pattern matches."""
    import glob
    import os

    paths = []
    for text in inputs:
        matches = [] if os.path.lexists(text) else sorted(glob.glob(text))
        paths += matches or [text]
    return paths
