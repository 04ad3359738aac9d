"""``vidseg evaluate``: figures of a checkpoint on a dataset split, as JSON and a Markdown table."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

HELP = "evaluate a checkpoint: mIoU/mAcc/aAcc, per-position mIoU, temporal consistency; JSON and Markdown"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a .pt file written by `vidseg train`")
    parser.add_argument("--data", help="dataset root (default: data.root of the checkpoint's config)")
    parser.add_argument("--split", help="split folder (default: data.val_split of the config, else val)")
    parser.add_argument(
        "--num-frames", type=int, help="frames per window (default: eval.num_frames, else 12)"
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
        choices=["auto", "labelled", "context"],
        default="auto",
        help="labelled: mIoU of the labelled frames at each window position; context: the annotated frame "
        "segmented after 1, 2, ... frames; auto (default): context when windows carry one labelled frame",
    )
    parser.add_argument(
        "--save-predictions", metavar="DIR", help="write <city>_<seq>_<frame>_pred.png labelIds"
    )
    parser.add_argument(
        "--prediction-size",
        default="original",
        help="size of the saved PNGs: original (that of the label files, as the official script needs), "
        "evaluated, or HxW",
    )
    parser.add_argument(
        "--out", help="results JSON (default: <checkpoint>-<split>-<protocol>.json beside it)"
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing --out JSON or its .md sibling that `vidseg evaluate` did not write "
        "(its own results are always replaced)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--amp", choices=["off", "bf16", "fp16"], default="off", help="autocast (fp16: CUDA only)"
    )
    parser.add_argument(
        "--no-tc", action="store_true", help="skip flow-based temporal consistency (the slow part)"
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--max-samples", type=int, help="evaluate the first N windows only")
    parser.add_argument("--skip-missing", action="store_true", help="leave out windows with missing frames")


def run(args: argparse.Namespace) -> int:
    import torch

    from vidseg.checkpoint import load_checkpoint, model_from_checkpoint
    from vidseg.errors import VidsegError
    from vidseg.evaluate import evaluate_model, results_markdown
    from vidseg.fileio import atomic_write_text, check_writable

    started = time.monotonic()
    checkpoint_path = Path(args.checkpoint)
    checkpoint = load_checkpoint(checkpoint_path)
    _check_label_set(checkpoint, checkpoint_path)
    _check_normalization(checkpoint, checkpoint_path)
    model = model_from_checkpoint(checkpoint, checkpoint_path)

    config = checkpoint.get("config") or {}
    data_config, eval_config = config.get("data", {}), config.get("eval", {})
    root = args.data or data_config.get("root")
    if root is None:
        raise VidsegError(f"checkpoint {checkpoint_path} stores no data root in its config; pass --data ROOT")
    split = args.split or data_config.get("val_split", "val")
    num_frames = args.num_frames or eval_config.get("num_frames", 12)
    gt_position = _parse_gt_position(
        args.gt_position if args.gt_position is not None else eval_config.get("gt_position", "last")
    )
    size = _parse_size(args.size, "--size") if args.size else _config_size(data_config.get("size"))
    if size is not None:
        from vidseg.config import check_frame_size

        check_frame_size(size, "--size" if args.size else f"data.size of checkpoint {checkpoint_path}")
    if args.batch_size < 1 or args.num_workers < 0 or (args.max_samples is not None and args.max_samples < 1):
        raise VidsegError("--batch-size and --max-samples must be >= 1 and --num-workers >= 0")
    out = (
        Path(args.out)
        if args.out
        else checkpoint_path.with_name(f"{checkpoint_path.stem}-{split}-{args.protocol}.json")
    )
    _check_outputs(out, args, [("--checkpoint", checkpoint_path), ("the dataset root", root)])
    check_writable(out)  # fail now, not after the evaluation

    rank, world_size, device = _start_processes(args.device)
    # Each protocol reads the labels in the set that describes its ground truth exactly.
    dataset = _build_dataset(root, split, num_frames, gt_position, size, args)
    prediction_size = _prediction_size(args.prediction_size, dataset)
    evaluated = dataset
    if args.max_samples is not None and args.max_samples < len(dataset):
        evaluated = torch.utils.data.Subset(dataset, range(args.max_samples))

    results = evaluate_model(
        model,
        evaluated,
        device=device,
        amp=args.amp,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        protocol=args.protocol,
        num_classes=int(checkpoint["num_classes"]),
        tc=not args.no_tc,
        per_position=args.per_position,
        save_predictions=args.save_predictions,
        prediction_size=prediction_size,
        label_set=dataset.label_set,
        progress=True,
    )
    results["run"] = {
        "checkpoint": str(checkpoint_path),
        "model_name": checkpoint["model_name"],
        "model_label_set": checkpoint.get("label_set"),
        "data": str(root),
        "split": split,
        "num_frames": num_frames,
        "gt_position": gt_position,
        "size": list(size) if size else None,
        "device": str(device),
        "amp": args.amp,
        "processes": world_size,
        "seconds": round(time.monotonic() - started, 2),
    }
    if rank != 0:
        return 0
    table = results_markdown(results, title=f"{checkpoint['model_name']} on {root} ({split})")
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    if args.save_predictions:
        print(f"wrote {len(evaluated)} labelId PNGs to {args.save_predictions}")
    return 0


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
    return any(line.startswith("| protocol | windows | mIoU |") for line in lines)


def _check_label_set(checkpoint: dict, path: Path) -> None:
    from vidseg.data.labels import get_label_set
    from vidseg.errors import VidsegError

    name = checkpoint.get("label_set")
    if name is None:  # older checkpoints: resolve_protocol checks the class count alone
        return
    try:
        label_set = get_label_set(name)
    except ValueError as error:
        raise VidsegError(f"checkpoint {path}: {error}") from None
    if label_set.num_classes != int(checkpoint["num_classes"]):
        raise VidsegError(
            f"checkpoint {path} has a {checkpoint['num_classes']}-class model but names label set {name!r}, "
            f"which has {label_set.num_classes} classes; the checkpoint is inconsistent: re-export it "
            "with the label set it was trained on"
        )


def _check_normalization(checkpoint: dict, path: Path) -> None:
    from vidseg.data.transforms import MEAN, STD
    from vidseg.errors import VidsegError

    stored = checkpoint.get("normalization")
    if not stored:
        return
    expected = {"mean": list(MEAN), "std": list(STD)}
    for key in ("mean", "std"):
        found = [float(v) for v in stored.get(key, [])]
        if len(found) != 3 or any(abs(a - b) > 1e-6 for a, b in zip(found, expected[key])):
            raise VidsegError(
                f"checkpoint {path} was trained on frames normalised with {key} {found}, but the data "
                f"pipeline uses {expected[key]}; evaluate it with the vidseg version that trained it"
            )


def _parse_gt_position(value) -> str | int:
    from vidseg.errors import VidsegError

    if isinstance(value, int) or value == "last":
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise VidsegError(f"--gt-position expects 'last' or a frame index, found {value!r}")


def _parse_size(text: str, option: str) -> tuple[int, int]:
    from vidseg.errors import VidsegError

    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise VidsegError(f"{option} expects HEIGHTxWIDTH such as 512x1024, found {text!r}")
    return int(match[1]), int(match[2])


def _config_size(value) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _start_processes(device_arg: str):
    """Rank, world size and device; joins the process group when started by torchrun."""
    import torch

    from vidseg.errors import VidsegError

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from vidseg import distributed

        preference = "cuda" if device_arg.startswith("cuda") else device_arg
        context = distributed.init(preference)
        return context.rank, context.world_size, context.device
    if device_arg == "auto":
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device_arg)
    except RuntimeError as error:
        raise VidsegError(
            f"--device {device_arg!r} is not a device: {error}; use auto, cpu or cuda"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VidsegError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return 0, 1, device


def _build_dataset(root, split, num_frames, gt_position, size, args):
    from vidseg.data.cityscapes import CityscapesSequences
    from vidseg.data.transforms import ClipTransform
    from vidseg.errors import VidsegError

    try:
        return CityscapesSequences(
            root,
            split,
            num_frames=num_frames,
            gt_position=gt_position,
            label_set="report" if args.protocol == "report" else "cityscapes",
            transform=ClipTransform(size),
            skip_missing=args.skip_missing,
        )
    except ValueError as error:
        raise VidsegError(f"--num-frames / --gt-position do not fit the data in {root}: {error}") from None


def _prediction_size(choice: str, dataset) -> tuple[int, int] | None:
    """``evaluated`` -> None; ``original`` -> the size of the first label file; ``HxW`` -> that size."""
    from vidseg.data.cityscapes import LABEL_FOLDER, LABEL_SUFFIX, read_label_ids

    if choice == "evaluated":
        return None
    if choice != "original":
        return _parse_size(choice, "--prediction-size")
    name = dataset.names[0]
    city = name.rsplit("_", 2)[0]
    path = Path(dataset.root) / LABEL_FOLDER / dataset.split / city / (name + LABEL_SUFFIX)
    # read_label_ids explains an unreadable file (VidsegError naming it) instead of a bare PIL error.
    height, width = read_label_ids(path).shape
    return height, width
