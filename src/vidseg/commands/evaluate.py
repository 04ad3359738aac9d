"""``vidseg evaluate``: figures of a checkpoint on a dataset split, as JSON and a Markdown table."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vidseg.choices import AMP_MODES, PRECISIONS
from vidseg.config import DataConfig, EvalConfig

if TYPE_CHECKING:
    from vidseg.checkpoint import TrainState

HELP = "evaluate a checkpoint: mIoU/mAcc/aAcc, per-position mIoU, temporal consistency; JSON and Markdown"
DEFAULT_CORRUPT_RATE = 0.3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a .pt file written by `vidseg train`")
    parser.add_argument("--data", help="dataset root (default: data.root of the checkpoint's config)")
    parser.add_argument(
        "--split", help=f"split folder (default: data.val_split of the config, else {DataConfig().val_split})"
    )
    parser.add_argument(
        "--layout", help="dataset layout: auto, cityscapes, camvid, vspw or folders (default: data.layout)"
    )
    parser.add_argument(
        "--mode",
        choices=["auto", "stream", "windows"],
        help="stream: every labelled frame once, each sequence from its start; windows: one window per annotated "
        "frame (sparse Cityscapes); auto (default): windows when no sequence has more than one labelled frame",
    )
    parser.add_argument(
        "--score-at",
        choices=["labels", "working"],
        help="labels (default): at the label files' resolution, logits upsampled, as the benchmarks score; "
        "working: at the evaluation size, labels resized (nearest)",
    )
    parser.add_argument(
        "--corrupt",
        nargs="?",
        type=float,
        const=-1.0,
        metavar="RATE",
        help="evaluate on corrupted frames (the '-C' variant): RATE of the frames, each deterministically by "
        "frame name (default rate: the checkpoint's data.corrupt.rate, else "
        f"{DEFAULT_CORRUPT_RATE})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="data.corrupt.KEY=VALUE",
        help="override a data.corrupt key (rate, kinds, seed), e.g. --set data.corrupt.kinds=[dark,blur]",
    )
    parser.add_argument(
        "--num-frames",
        type=int,
        help="frames per window; in stream mode the context depth of the per-position figures "
        f"(default: eval.num_frames, else {EvalConfig().num_frames})",
    )
    parser.add_argument(
        "--gt-position",
        help="annotated frame position in the window: last or an index (default: eval.gt_position)",
    )
    parser.add_argument(
        "--size", help="evaluation size HxW, e.g. 512x1024 (default: data.size of the config)"
    )
    parser.add_argument(
        "--protocol",
        choices=["standard", "report"],
        default="standard",
        help="standard: 19 classes, void ignored (default); report: the report's 20 labels, "
        "mAcc = pixel accuracy",
    )
    parser.add_argument(
        "--per-position",
        choices=["auto", "labelled", "context", "off"],
        default="auto",
        help="context: frames segmented again after seeing only their last 1, 2, ... frames (the annotated "
        "frame of each window; in stream mode every K-th frame); labelled (windows only): the labelled frames at "
        "each window position; auto (default): context, except labelled for windows with several labelled "
        "frames; off",
    )
    parser.add_argument(
        "--state-stride", type=int, metavar="N",
        help="carry a temporal model's state N frames apart: each frame continues the state of the frame N "
        "before it (every frame still segmented once, causally). N = the evaluated video's frame rate over the "
        "training video's, e.g. 15 for CamVid val (15 Hz) after its 1 Hz train split (default: the checkpoint's "
        "eval.state_stride, else 1)",
    )
    parser.add_argument(
        "--save-predictions",
        metavar="DIR",
        help="write <frame>_pred.png of every scored frame: labelIds for Cityscapes label sets, else class indices",
    )
    parser.add_argument(
        "--prediction-size",
        default="original",
        help="size of the saved PNGs: original (that of the label files, as the official script needs), "
        "evaluated (the scored size), or HxW",
    )
    parser.add_argument(
        "--out", help="results JSON (default: <checkpoint>-<split>-<protocol>.json beside it)"
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing --out JSON or its .md sibling that `vidseg evaluate` did not write "
        "(its own results are always replaced)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto; cpu for --precision int8)"
    )
    parser.add_argument(
        "--amp", choices=AMP_MODES, default="off",
        help="autocast (fp16: CUDA only); the older spelling of --precision",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS,
        help="fp32, bf16 (autocast), fp16 (CUDA) or int8: the int8 streaming copy that `vidseg segment "
        "--precision int8` runs (CPU), calibrated on --calibrate (default: from --amp)",
    )
    parser.add_argument(
        "--calibrate", metavar="PATH",
        help="int8 calibration frames: a video, a folder of frames or a dataset root (default: the dataset "
        "evaluated, its val split first)",
    )
    parser.add_argument(
        "--no-tc", action="store_true", help="skip flow-based temporal consistency (the slow part)"
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--max-samples", type=int, help="evaluate the first N windows (stream mode: sequences) only"
    )
    parser.add_argument("--skip-missing", action="store_true", help="leave out windows with missing frames")


def run(args: argparse.Namespace) -> int:
    from vidseg.checkpoint import TrainState
    from vidseg.errors import VidsegError
    from vidseg.evaluate import evaluate_model, results_markdown
    from vidseg.fileio import atomic_write_text, check_writable
    from vidseg.models.stride import check_stride

    started = time.monotonic()
    checkpoint_path = Path(args.checkpoint)
    checkpoint = TrainState.load(checkpoint_path)
    _check_label_set(checkpoint, checkpoint_path)
    _check_normalization(checkpoint, checkpoint_path)
    model = checkpoint.build_model(checkpoint_path)

    config = checkpoint.config or {}
    data_config, eval_config = config.get("data", {}), config.get("eval", {})
    root = args.data or data_config.get("root")
    if root is None:
        raise VidsegError(f"checkpoint {checkpoint_path} stores no data root in its config; pass --data ROOT")
    # What the checkpoint's config does not state (an older vidseg wrote fewer keys) takes the config defaults.
    data_defaults, eval_defaults = DataConfig(), EvalConfig()
    split = args.split or data_config.get("val_split", data_defaults.val_split)
    num_frames = args.num_frames or eval_config.get("num_frames", eval_defaults.num_frames)
    gt_position = _parse_gt_position(
        args.gt_position if args.gt_position is not None else eval_config.get("gt_position", eval_defaults.gt_position)
    )
    size = _parse_size(args.size, "--size") if args.size else _config_size(data_config.get("size"))
    mode = args.mode or eval_config.get("mode", eval_defaults.mode)
    score_at = args.score_at or eval_config.get("score_at", eval_defaults.score_at)
    corruption = _corruption(args, data_config)
    if size is not None:
        from vidseg.config import check_frame_size

        check_frame_size(size, "--size" if args.size else f"data.size of checkpoint {checkpoint_path}")
    state_stride = args.state_stride if args.state_stride is not None else eval_config.get(
        "state_stride", eval_defaults.state_stride
    )
    try:
        state_stride = check_stride(state_stride)
    except ValueError as error:
        where = "--state-stride" if args.state_stride is not None else f"eval.state_stride of {checkpoint_path}"
        raise VidsegError(f"{where}: {error}") from None
    if args.batch_size < 1 or args.num_workers < 0 or (args.max_samples is not None and args.max_samples < 1):
        raise VidsegError("--batch-size and --max-samples must be >= 1 and --num-workers >= 0")
    precision, amp = _precision(args)
    if precision == "int8":
        if args.device not in ("auto", "cpu"):
            raise VidsegError(
                f"--precision int8 runs the CPU's int8 convolutions; pass --device cpu, not {args.device}"
            )
        args.device = "cpu"
    suffix = ("-C" if corruption is not None else "") + ("" if precision == "fp32" else f"-{precision}")
    out = (
        Path(args.out)
        if args.out
        else checkpoint_path.with_name(f"{checkpoint_path.stem}-{split}-{args.protocol}{suffix}.json")
    )
    inputs = [("--checkpoint", checkpoint_path), ("the dataset root", root)]
    if args.calibrate is not None:
        inputs.append(("--calibrate", args.calibrate))
    _check_outputs(out, args, inputs)
    check_writable(out)  # fail now, not after the evaluation

    rank, world_size, device = _start_processes(args.device)
    layout = args.layout or data_config.get("layout")
    dataset = _build_dataset(root, split, num_frames, gt_position, size, score_at, layout, checkpoint, args)
    evaluated = dataset
    if corruption is not None:
        from vidseg.data.corrupt import CorruptedClips

        evaluated = CorruptedClips(dataset, corruption, deterministic=True)
    if precision == "int8":
        model = _int8_model(checkpoint, args.calibrate or root, size)

    results = evaluate_model(
        model,
        evaluated,
        device=device,
        amp=amp,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        protocol=args.protocol,
        num_classes=int(checkpoint.num_classes),
        tc=not args.no_tc,
        per_position=args.per_position,
        mode=mode,
        score_at=score_at,
        limit=args.max_samples,
        save_predictions=args.save_predictions,
        prediction_size=_prediction_size(args.prediction_size, dataset),
        label_set=dataset.label_set,
        progress=True,
        state_stride=state_stride,
    )
    results.run = {
        "checkpoint": str(checkpoint_path),
        "model_name": checkpoint.model_name,
        "model_label_set": checkpoint.label_set,
        "data": str(root),
        "layout": getattr(getattr(dataset, "index", None), "layout", None),
        "split": split,
        "num_frames": num_frames,
        "gt_position": gt_position,
        "size": list(size) if size else None,
        "corrupt": None
        if corruption is None
        else {"rate": corruption.rate, "kinds": list(corruption.kinds), "seed": corruption.seed},
        "device": str(device),
        "amp": amp,
        "precision": precision,
        "processes": world_size,
        "state_stride": state_stride,
        "seconds": round(time.monotonic() - started, 2),
    }
    if rank != 0:
        return 0
    what = f"{root} ({split}{', corrupted' if corruption is not None else ''})"
    table = results_markdown(results, title=f"{checkpoint.model_name} on {what}")
    atomic_write_text(out, json.dumps(results.to_dict(), indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    if args.save_predictions:
        print(f"wrote {results.frames_scored} prediction PNGs to {args.save_predictions}")
    return 0


def _corruption(args: argparse.Namespace, data_config: dict):
    """The Corruption that ``--corrupt`` / ``--set data.corrupt.*`` ask for, or None for clean frames."""
    from vidseg.config import Config, CorruptConfig, apply_override
    from vidseg.data.corrupt import Corruption
    from vidseg.errors import VidsegError

    if args.corrupt is None and not args.set:
        return None
    config = Config()
    stored = data_config.get("corrupt")
    if isinstance(stored, dict):
        config.data.corrupt = CorruptConfig(
            **{key: value for key, value in stored.items() if key in ("rate", "kinds", "seed")}
        )
    if config.data.corrupt.rate <= 0:
        config.data.corrupt.rate = DEFAULT_CORRUPT_RATE
    for override in args.set:
        if not override.strip().startswith("data.corrupt."):
            raise VidsegError(
                f"--set {override}: vidseg evaluate takes data.corrupt.rate, .kinds and .seed only; other settings "
                "have their own options"
            )
        apply_override(config, override)
    settings = config.data.corrupt
    if args.corrupt is not None and args.corrupt >= 0:
        settings.rate = args.corrupt
    try:
        return Corruption(float(settings.rate), tuple(settings.kinds), int(settings.seed))
    except ValueError as error:
        raise VidsegError(f"--corrupt / --set data.corrupt: {error}") from None


def _precision(args: argparse.Namespace) -> tuple[str, str]:
    """(precision, autocast mode) from --precision and its older spelling --amp."""
    from vidseg.choices import autocast_mode, resolve_precision
    from vidseg.errors import VidsegError

    try:
        precision = resolve_precision(args.amp, args.precision, "--amp", "--precision")
    except ValueError as error:
        raise VidsegError(str(error)) from None
    if args.calibrate is not None and precision != "int8":
        raise VidsegError("--calibrate is for --precision int8")
    return precision, autocast_mode(precision)


def _int8_model(checkpoint: TrainState, calibration: str | os.PathLike, size: tuple[int, int] | None):
    """The int8 streaming copy that ``vidseg segment --precision int8`` runs, calibrated at the evaluation size."""
    from vidseg.segment import Segmenter

    # state_stride=1: the evaluation wraps the network in its own stride.
    segmenter = Segmenter(checkpoint, precision="int8", calibration=calibration, size=size or "input", state_stride=1)
    return segmenter.network


def _check_outputs(out: Path, args: argparse.Namespace, inputs: list) -> None:
    """Refuse outputs that are inputs, and existing files that this command did not write (unless --overwrite);
    remove what a killed earlier run left beside them."""
    from vidseg.errors import VidsegError
    from vidseg.fileio import check_outputs_spare_inputs, remove_dead_temporaries, remove_dead_temporaries_of

    markdown = out.with_suffix(".md")
    if markdown == out:
        raise VidsegError(f"--out {out}: the results are JSON and the table goes beside them as .md; pass FILE.json")
    outputs = [("--out", out), ("its Markdown table", markdown), ("--save-predictions", args.save_predictions)]
    check_outputs_spare_inputs(outputs, inputs)
    for path, ours in [(out, _is_results_json), (markdown, _is_results_markdown)]:
        if path.is_dir():
            raise VidsegError(f"output {path} is a folder; pass --out FILE.json")
        if path.exists() and not args.overwrite and not ours(path):
            raise VidsegError(
                f"{path} exists and was not written by `vidseg evaluate` (the results go to --out {out} and the "
                f"table to {markdown}); choose another --out, or pass --overwrite to replace it"
            )
        remove_dead_temporaries_of(path)
    if args.save_predictions:
        remove_dead_temporaries(args.save_predictions)


def _is_results_json(path: Path) -> bool:
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(results, dict) and isinstance(results.get("run"), dict) and "headline" in results


def _is_results_markdown(path: Path) -> bool:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return False
    # The header of the summary table, as written now and before stream mode (its "windows" column).
    return any(line.startswith(("| protocol | frames | mIoU |", "| protocol | windows | mIoU |")) for line in lines)


def _check_label_set(checkpoint: TrainState, path: Path) -> None:
    from vidseg.data.labels import get_label_set
    from vidseg.errors import VidsegError

    name = checkpoint.label_set
    if name is None or checkpoint.label_set_spec is not None:
        # Older checkpoints: resolve_protocol checks the class count alone; a recorded spec is checked when the
        # dataset is built (TrainState.predicted_label_set).
        return
    try:
        label_set = get_label_set(name)
    except ValueError as error:
        raise VidsegError(f"checkpoint {path}: {error}") from None
    if label_set.num_classes != int(checkpoint.num_classes):
        raise VidsegError(
            f"checkpoint {path} has a {checkpoint.num_classes}-class model but names label set {name!r}, "
            f"which has {label_set.num_classes} classes; the checkpoint is inconsistent: re-export it "
            "with the label set it was trained on"
        )


def _check_normalization(checkpoint: TrainState, path: Path) -> None:
    from vidseg.data.transforms import MEAN, STD
    from vidseg.errors import VidsegError

    if not checkpoint.normalization:
        return
    # The data pipeline normalises with MEAN / STD only; a model trained otherwise would see shifted inputs.
    for key, found, expected in zip(("mean", "std"), checkpoint.mean_std(), (MEAN, STD)):
        if any(abs(a - b) > 1e-6 for a, b in zip(found, expected)):
            raise VidsegError(
                f"checkpoint {path} was trained on frames normalised with {key} {found}, but the data "
                f"pipeline uses {list(expected)}; evaluate it with the vidseg version that trained it"
            )


def _parse_gt_position(value) -> str | int:
    from vidseg.errors import VidsegError

    if isinstance(value, int) or value == "last":
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise VidsegError(f"--gt-position expects 'last' or a frame index, found {value!r}")


def _parse_size(text: str, option: str) -> tuple[int, int]:
    from vidseg.config import parse_size
    from vidseg.errors import VidsegError

    try:
        return parse_size(text)
    except ValueError as error:
        raise VidsegError(f"{option}: {error}") from None


def _config_size(value) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _start_processes(device_arg: str):
    """Rank, world size and device; joins the process group when started by torchrun."""
    from vidseg import distributed

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        preference = "cuda" if device_arg.startswith("cuda") else device_arg
        context = distributed.init(preference, option="--device")
        return context.rank, context.world_size, context.device
    return 0, 1, distributed.resolve_device(device_arg, option="--device")


def _build_dataset(root, split, num_frames, gt_position, size, score_at, layout, checkpoint: TrainState, args):
    from vidseg.data.clips import open_dataset
    from vidseg.data.labels import get_label_set
    from vidseg.data.transforms import ClipTransform
    from vidseg.errors import VidsegError

    # The model's own label set (a recorded spec covers a classes.yaml); the class count of an older checkpoint
    # without one is checked against the protocol by evaluate_model.
    named = checkpoint.label_set
    if checkpoint.label_set_spec is not None:
        label_set = checkpoint.predicted_label_set()
    else:
        label_set = get_label_set(named if named not in (None, "cityscapes", "report") else "cityscapes")
    if label_set.name in ("cityscapes", "report"):
        # Each Cityscapes protocol reads the labels in the set that describes its ground truth exactly.
        label_set = get_label_set("report" if args.protocol == "report" else "cityscapes")
    try:
        return open_dataset(
            root,
            split,
            num_frames=num_frames,
            gt_position=gt_position,
            layout=None if layout in (None, "auto") else layout,
            label_set=label_set,
            transform=ClipTransform(size, resize_labels=score_at == "working"),
            skip_missing=args.skip_missing,
        )
    except ValueError as error:
        raise VidsegError(f"--num-frames / --gt-position do not fit the data in {root}: {error}") from None


def _prediction_size(choice: str, dataset) -> tuple[int, int] | None:
    """``evaluated`` -> None (the scored size); ``original`` -> the size of the first label file; ``HxW``."""
    if choice == "evaluated":
        return None
    if choice != "original":
        return _parse_size(choice, "--prediction-size")
    index = dataset.index
    first = next(frame for frame in index.frames if frame.label is not None)
    height, width = index.read_label(first).shape[:2]
    return int(height), int(width)
