"""Evaluation of a model over a dataset of windows: standard and report figures, per-position mIoU, temporal
consistency, and official Cityscapes result PNGs.

Protocols (the ``protocol`` argument):

- ``"standard"``: the 19 Cityscapes classes, as the official cityscapesScripts count them. Ground-truth void
  (255 in the ``cityscapes`` label set, class 19 in the ``report`` set) is ignored. A 20-class model's void
  prediction on a non-void pixel is a miss for the true class and a false positive for none of the 19
  classes: exactly what the official script does with a labelId-0 ("unlabeled") prediction.
- ``"report"``: the report's way: 20 labels, void included as a class in every figure, and its "mAcc" is pixel
  accuracy (``aacc``). On data loaded with the ``cityscapes`` label set, ground-truth 255 on a labelled frame
  is read as void.

All figures are fractions in [0, 1]; a figure that is undefined (no pixels, no pairs, windows too short) is
None in the returned dict.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from vidseg.consistency import TemporalConsistency, VideoConsistency
from vidseg.errors import VidsegError
from vidseg.fileio import atomic_path, make_folder
from vidseg.metrics import IGNORE_INDEX, ConfusionMatrix, all_reduce_max, all_reduce_sum, nan_to_none

if TYPE_CHECKING:
    from vidseg.models import RecurrentUNet

PROTOCOLS = ("standard", "report")
PER_POSITION_MODES = ("labelled", "context", "auto")
VC_RUN_LENGTHS = (8, 16)
AMP_MODES = ("off", "bf16", "fp16")
# ITU-R BT.601 luma, the weights OpenCV uses for RGB -> grey.
GREY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Protocol:
    """How dataset labels and model outputs meet: the evaluated classes and the label remapping.

    Attributes:
        name: ``"standard"`` or ``"report"``.
        class_names: the evaluated classes.
        num_pred_classes: model outputs; those past ``len(class_names)`` count as misses.
        target_lut: 256 entries, dataset label value -> evaluated class (255 = ignored).
    """

    name: str
    class_names: tuple[str, ...]
    num_pred_classes: int
    target_lut: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def resolve_protocol(protocol: str, label_set, num_model_classes: int) -> Protocol:
    """The Protocol for a dataset in ``label_set`` (a name or LabelSet) and a model with that many outputs."""
    from vidseg.data.labels import NUM_TRAIN_CLASSES, TRAIN_CLASS_NAMES, get_label_set

    if protocol not in PROTOCOLS:
        raise VidsegError(f"unknown protocol {protocol!r}; valid protocols are: {', '.join(PROTOCOLS)}")
    try:
        label_set = get_label_set(label_set)
    except ValueError as error:
        raise VidsegError(str(error)) from error
    if label_set.name not in ("cityscapes", "report"):
        # Any other label set (CamVid, VSPW, a classes.yaml): its own classes, 255 ignored.
        if num_model_classes != label_set.num_classes or protocol != "standard":
            raise VidsegError(
                f"label set {label_set.name!r} has {label_set.num_classes} classes: evaluation needs a model with "
                f"that many outputs (this one has {num_model_classes}) and the standard protocol"
            )
        lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
        lut[: label_set.num_classes] = torch.arange(label_set.num_classes)
        return Protocol("standard", label_set.class_names, num_model_classes, lut)
    void = NUM_TRAIN_CLASSES
    if num_model_classes not in (NUM_TRAIN_CLASSES, NUM_TRAIN_CLASSES + 1):
        raise VidsegError(
            f"the model predicts {num_model_classes} classes but label set {label_set.name!r} has "
            f"{label_set.num_classes}; evaluation needs a model with {NUM_TRAIN_CLASSES} (cityscapes) or "
            f"{NUM_TRAIN_CLASSES + 1} (report, with void) outputs"
        )
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
    lut[:void] = torch.arange(void)
    if protocol == "standard":
        return Protocol("standard", TRAIN_CLASS_NAMES, num_model_classes, lut)
    # The report set marks void as class 19 and padding as 255; the cityscapes set marks both as 255.
    lut[void] = void
    if label_set.num_classes == NUM_TRAIN_CLASSES:
        lut[IGNORE_INDEX] = void
    return Protocol("report", (*TRAIN_CLASS_NAMES, "void"), void + 1, lut)


def evaluate_model(
    model: torch.nn.Module,
    dataset,
    *,
    device: str | torch.device = "cpu",
    amp: str = "off",
    batch_size: int = 1,
    num_workers: int = 0,
    protocol: str = "standard",
    num_classes: int | None = None,
    tc: bool = True,
    per_position: str = "labelled",
    save_predictions: str | os.PathLike | None = None,
    prediction_size: tuple[int, int] | None = None,
    label_set=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on every window of ``dataset`` and return JSON-serialisable results.

    Under torch.distributed each rank evaluates the windows ``rank, rank + world, ...`` (none padded or
    repeated) and all counts are summed over ranks, so every rank returns the same figures.

    Args:
        model: a RecurrentUNet-like module with ``step(frame, state)`` (a DDP wrapper is unwrapped).
        dataset: samples as documented for ``vidseg.data.CityscapesSequences``, all windows of one length.
        device, amp: where the model runs and its autocast mode (``off``, ``bf16``; ``fp16`` on CUDA only).
        protocol: ``standard`` or ``report`` (see the module docstring).
        num_classes: model outputs; defaults to ``model.num_classes``.
        tc: also compute flow-based temporal consistency (CPU optical flow; slow on large frames).
        per_position: ``labelled``: the mIoU at window position p pools the labelled frames at p;
            ``context``: the annotated frame is segmented again after seeing only its last 1, 2, ... frames
            (shows what the temporal units add on data annotated at one frame); ``auto``: ``context`` when
            windows carry a single labelled frame, else ``labelled``.
        save_predictions: a folder for ``<city>_<seq>_<frame>_pred.png`` labelId images of the annotated
            frames.
        prediction_size: ``(height, width)`` the saved PNGs are resized to (nearest), e.g. the 1024 x 2048 of
            the official ground truth; None keeps the evaluated size.
        label_set: the dataset's label set; defaults to ``dataset.label_set``, else the one with as many
            classes as the model.
        progress: show a progress bar (rank 0 only).

    Returns:
        ``miou``, ``macc``, ``aacc``, ``iou`` / ``acc`` (per class name) on the annotated frame; ``headline``
        (``mIoU``, and ``mAcc`` as the protocol defines it); ``all_frames`` (every labelled frame) and
        ``corruption`` (clean / corrupted / per type) where samples carry more than the annotated label;
        ``per_position``; ``tc``; ``mvc_8`` and ``mvc_16``; and counts.
    """
    # Unwrap a DDP wrapper; the module is duck-typed as a RecurrentUNet (step, num_classes), which no type states.
    net = cast("RecurrentUNet", model.module if hasattr(model, "module") else model)
    num_classes = int(num_classes if num_classes is not None else net.num_classes)
    if label_set is None:
        label_set = getattr(dataset, "label_set", None) or getattr(
            getattr(dataset, "dataset", None), "label_set", None
        )
        label_set = label_set or ("report" if num_classes == 20 else "cityscapes")
    spec = resolve_protocol(protocol, label_set, num_classes)
    if per_position not in PER_POSITION_MODES:
        raise VidsegError(
            f"unknown per_position {per_position!r}; valid values: {', '.join(PER_POSITION_MODES)}"
        )
    if amp not in AMP_MODES:
        raise VidsegError(f"unknown amp mode {amp!r}; valid modes are: {', '.join(AMP_MODES)}")
    device = torch.device(device)
    if amp == "fp16" and device.type != "cuda":
        raise VidsegError("amp 'fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    if len(dataset) == 0:
        raise VidsegError("the evaluation dataset has no windows; check the data root and split")

    first = dataset[0]
    num_frames = int(first["frames"].shape[0])
    if per_position == "auto":
        per_position = "context" if int(torch.as_tensor(first["labelled"]).sum()) == 1 else "labelled"
    meters = _Meters(spec, num_frames, num_classes, device, tc, _corruption_names(dataset))

    rank, world = _rank_and_world()
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    save_dir = Path(save_predictions) if save_predictions is not None else None
    if save_dir is not None:
        make_folder(save_dir)

    from tqdm import tqdm

    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(), _autocast(device, amp):
            batches = tqdm(loader, desc="evaluate", unit="window", disable=not progress or rank != 0)
            for batch in batches:
                frames = batch["frames"].to(device)
                if frames.shape[1] != num_frames:
                    raise VidsegError(
                        f"window {batch['name'][0]} has {frames.shape[1]} frames, the first window has "
                        f"{num_frames}; evaluate windows of one length"
                    )
                preds = _predict_clip(net, frames)
                targets = spec.target_lut.to(device)[batch["labels"].to(device).long()]
                labelled = batch["labelled"].to(device).bool()
                gt_index = batch["gt_index"].to(device).long()
                corruption = batch["corruption"].to(device).long()
                meters.update(batch["name"], frames, preds, targets, labelled, corruption, gt_index)
                if per_position == "context":
                    meters.update_context(net, frames, preds, targets, labelled, gt_index)
                if save_dir is not None:
                    _save_predictions(save_dir, batch["name"], preds, gt_index, prediction_size)
    finally:
        net.train(was_training)

    meters.all_reduce()
    return meters.results(label_set, per_position, num_windows=len(dataset))


# ----------------------------------------------------------------------------------------------- internals


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _corruption_names(dataset) -> tuple[str, ...]:
    """Names of the corruption codes: those stored with the data (``synthcity.json``), else today's."""
    base = getattr(dataset, "dataset", dataset)  # a Subset of the dataset
    meta = getattr(base, "meta", None)
    if isinstance(meta, dict) and isinstance(meta.get("corruptions"), list):
        return tuple(str(name) for name in meta["corruptions"])
    from vidseg.data.synthcity import CORRUPTIONS

    return tuple(CORRUPTIONS)


def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _predict_clip(net, frames: torch.Tensor) -> torch.Tensor:
    """Class maps ``[B, T, H, W]``; one step at a time so that only one frame's logits are alive."""
    state = None
    preds = []
    for t in range(frames.shape[1]):
        logits, state = net.step(frames[:, t], state)
        preds.append(logits.argmax(dim=1))
    return torch.stack(preds, dim=1)


def _predict_with_context(net, clip: torch.Tensor, gt_index: int) -> torch.Tensor:
    """Frame ``gt_index`` predicted after seeing 1, 2, ..., gt_index + 1 frames: ``[gt_index + 1, H, W]``.

    Run j starts (from the zero state) at frame j; all runs advance together as one growing batch, so this
    costs as many frame steps as the runs separately but with fewer, larger calls.
    """
    state = None
    for t in range(gt_index + 1):
        batch = clip[t].unsqueeze(0).expand(t + 1, *clip.shape[1:])
        if state:
            state = tuple(torch.cat([h, torch.zeros_like(h[:1])]) for h in state)
        logits, state = net.step(batch, state)
    # Run j has seen gt_index + 1 - j frames; reverse so that entry k has seen k + 1 frames.
    return logits.argmax(dim=1).flip(0)


def _to_grey_uint8(frames: torch.Tensor) -> np.ndarray:
    """Normalised frames ``[..., 3, H, W]`` -> 8-bit luma ``[..., H, W]`` for optical flow."""
    from vidseg.data.transforms import denormalize

    rgb = denormalize(frames).float()
    weights = torch.tensor(GREY_WEIGHTS, dtype=torch.float32, device=rgb.device).view(3, 1, 1)
    return (rgb * weights).sum(dim=-3).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def _save_predictions(save_dir: Path, names, preds: torch.Tensor, gt_index: torch.Tensor, size) -> None:
    from PIL import Image

    from vidseg.data.labels import train_id_to_label_id

    for name, clip_preds, index in zip(names, preds, gt_index.tolist()):
        pred = clip_preds[index]
        if size is not None and tuple(pred.shape) != tuple(size):
            pred = torch.nn.functional.interpolate(
                pred[None, None].float(), size=tuple(size), mode="nearest-exact"
            )
            pred = pred[0, 0]
        label_ids = train_id_to_label_id(pred.to(torch.int64).cpu().numpy())
        with atomic_path(save_dir / f"{name}_pred.png") as tmp:
            Image.fromarray(label_ids).save(tmp, format="PNG")


class _Meters:
    """Every count of one evaluation, kept so that one all-reduce per meter gives global figures."""

    def __init__(
        self,
        spec: Protocol,
        num_frames: int,
        num_model_classes: int,
        device: torch.device,
        tc: bool,
        corruption_names: tuple[str, ...],
    ):
        self.spec = spec
        self.num_frames = num_frames
        self.device = device
        self.corruption_names = corruption_names
        self.annotated = self._matrix()
        self.all_frames = self._matrix()
        self.by_position = [self._matrix() for _ in range(num_frames)]
        self.by_context = [self._matrix() for _ in range(num_frames)]
        # One matrix per corruption index seen; grown on demand and agreed on across ranks in all_reduce.
        self.by_corruption: list[ConfusionMatrix] = []
        # annotated frames, labelled frames, windows, frames per position, frames per context length
        self.counts = torch.zeros(3 + 2 * num_frames, dtype=torch.int64)
        self.tc = TemporalConsistency(num_model_classes) if tc else None
        self.vc = VideoConsistency(VC_RUN_LENGTHS)

    def update(self, names, frames, preds, targets, labelled, corruption, gt_index) -> None:
        batch_size, num_frames = preds.shape[:2]
        if bool((corruption < 0).any()):
            clip = int((corruption < 0).any(dim=1).nonzero()[0])
            raise VidsegError(
                f"window {names[clip]}: negative corruption index in {corruption[clip].tolist()}; corruption "
                "codes index vidseg.data.synthcity.CORRUPTIONS (0 = clean): regenerate the data"
            )
        self._grow_corruption(int(corruption.max()) + 1)
        rows = torch.arange(batch_size, device=preds.device)
        annotated_ok = labelled[rows, gt_index]
        self.annotated.update(preds[rows, gt_index][annotated_ok], targets[rows, gt_index][annotated_ok])
        self.all_frames.update(preds[labelled], targets[labelled])
        for position in range(num_frames):
            here = labelled[:, position]
            self.by_position[position].update(preds[here, position], targets[here, position])
        for index, matrix in enumerate(self.by_corruption):
            chosen = labelled & (corruption == index)
            matrix.update(preds[chosen], targets[chosen])
        self.counts[0] += int(annotated_ok.sum())
        self.counts[1] += int(labelled.sum())
        self.counts[2] += batch_size
        self.counts[3 : 3 + num_frames] += labelled.sum(dim=0).cpu()
        fully_labelled = labelled.all(dim=1)
        for clip in range(batch_size):
            if fully_labelled[clip]:
                self.vc.update(targets[clip], preds[clip])
        if self.tc is not None:
            grey = _to_grey_uint8(frames)
            class_maps = preds.to(torch.uint8 if self.tc.num_classes <= 256 else torch.int64).cpu().numpy()
            for clip in range(batch_size):
                self.tc.update(grey[clip], class_maps[clip])

    def update_context(self, net, frames, preds, targets, labelled, gt_index) -> None:
        for clip, index in enumerate(gt_index.tolist()):
            if not labelled[clip, index]:
                continue
            if getattr(net, "is_temporal", True):
                seen = _predict_with_context(net, frames[clip], index)
            else:  # a per-frame model gives the same answer whatever it saw before
                seen = preds[clip, index].expand(index + 1, *preds.shape[2:])
            for frames_seen_minus_one in range(index + 1):
                self.by_context[frames_seen_minus_one].update(
                    seen[frames_seen_minus_one], targets[clip, index]
                )
                self.counts[3 + self.num_frames + frames_seen_minus_one] += 1

    def _matrix(self) -> ConfusionMatrix:
        spec = self.spec
        return ConfusionMatrix(spec.num_classes, num_pred_classes=spec.num_pred_classes, device=self.device)

    def _grow_corruption(self, count: int) -> None:
        while len(self.by_corruption) < count:
            self.by_corruption.append(self._matrix())

    def all_reduce(self) -> None:
        self._grow_corruption(int(all_reduce_max(torch.tensor([max(len(self.by_corruption), 1)]))[0]))
        for matrix in [
            self.annotated,
            self.all_frames,
            *self.by_position,
            *self.by_context,
            *self.by_corruption,
        ]:
            matrix.all_reduce()
        self.counts = all_reduce_sum(self.counts)
        self.vc.all_reduce()
        if self.tc is not None:
            self.tc.all_reduce()

    def _corruption_name(self, index: int) -> str:
        return self.corruption_names[index] if index < len(self.corruption_names) else f"corruption {index}"

    def _figures(self, matrix: ConfusionMatrix) -> dict[str, Any]:
        figures = matrix.compute()
        names = self.spec.class_names
        return {
            "miou": figures["miou"],
            "macc": figures["macc"],
            "aacc": figures["aacc"],
            "iou": dict(zip(names, figures["iou"])),
            "acc": dict(zip(names, figures["acc"])),
            "pixels": figures["pixels"],
        }

    def results(self, label_set, per_position: str, num_windows: int) -> dict[str, Any]:
        counts = self.counts.tolist()
        annotated_frames, labelled_frames, windows = counts[:3]
        if windows != num_windows:
            raise RuntimeError(
                f"evaluated {windows} windows of {num_windows}: ranks lost or repeated windows"
            )
        annotated = self._figures(self.annotated)
        results: dict[str, Any] = {
            "protocol": self.spec.name,
            "label_set": getattr(label_set, "name", label_set),
            "classes": list(self.spec.class_names),
            "windows": windows,
            "frames_per_window": self.num_frames,
            "annotated_frames": annotated_frames,
            **annotated,
            "headline": {
                "mIoU": annotated["miou"],
                # The report's "mAcc" is pixel accuracy; the standard one is the mean of per-class recalls.
                "mAcc": annotated["aacc"] if self.spec.name == "report" else annotated["macc"],
            },
        }
        if labelled_frames > annotated_frames:
            results["all_frames"] = {"frames": labelled_frames, **self._figures(self.all_frames)}
            if any(matrix.total > 0 for matrix in self.by_corruption[1:]):
                types = {
                    self._corruption_name(index): self._figures(matrix)
                    for index, matrix in enumerate(self.by_corruption)
                    if index > 0 and matrix.total > 0
                }
                corrupted = ConfusionMatrix(
                    self.spec.num_classes, num_pred_classes=self.spec.num_pred_classes
                )
                for matrix in self.by_corruption[1:]:
                    corrupted.merge(matrix)
                results["corruption"] = {
                    "clean": self._figures(self.by_corruption[0]),
                    "corrupted": self._figures(corrupted),
                    "types": types,
                }
        if per_position == "context":
            matrices, frames = self.by_context, counts[3 + self.num_frames :]
        else:
            matrices, frames = self.by_position, counts[3 : 3 + self.num_frames]
        results["per_position"] = {
            "mode": per_position,
            "frames_seen": list(range(1, self.num_frames + 1)),
            "miou": [matrix.compute()["miou"] for matrix in matrices],
            "frames": frames,
        }
        results["tc"] = self.tc.compute() if self.tc is not None else math.nan
        results["tc_pairs"] = self.tc.pairs if self.tc is not None else 0
        vc = self.vc.compute()
        for run_length in VC_RUN_LENGTHS:
            results[f"mvc_{run_length}"] = vc[run_length]
        results["mvc_runs"] = {str(n): count for n, count in self.vc.runs().items()}
        return nan_to_none(results)


# ------------------------------------------------------------------------------------------------ reports


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def results_markdown(results: dict[str, Any], title: str | None = None) -> str:
    """Render ``evaluate_model`` results as Markdown tables (figures in percent, "–" where undefined)."""
    lines = [f"## {title}", ""] if title else []
    report = results["protocol"] == "report"
    macc_header = "mAcc (report: pixel acc.)" if report else "mAcc"
    lines += [
        f"| protocol | windows | mIoU | {macc_header} | mean class acc. | aAcc | TC | mVC_8 | mVC_16 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {results['protocol']} ({len(results['classes'])} classes) | {results['windows']} "
        f"| {_percent(results['headline']['mIoU'])} | {_percent(results['headline']['mAcc'])} "
        f"| {_percent(results['macc'])} | {_percent(results['aacc'])} | {_percent(results['tc'])} "
        f"| {_percent(results['mvc_8'])} | {_percent(results['mvc_16'])} |",
        "",
    ]
    position = results["per_position"]
    what = (
        "annotated frame after seeing only the last k frames"
        if position["mode"] == "context"
        else "labelled frames at window position k"
    )
    lines += [
        f"Per position (mIoU of the {what}):",
        "",
        "| frames seen k | " + " | ".join(str(k) for k in position["frames_seen"]) + " |",
        "|---|" + "---:|" * len(position["frames_seen"]),
        "| mIoU | " + " | ".join(_percent(v) for v in position["miou"]) + " |",
        "| frames | " + " | ".join(str(n) for n in position["frames"]) + " |",
        "",
    ]
    groups = []
    if "all_frames" in results:
        groups.append(("all labelled frames", results["all_frames"]))
    if "corruption" in results:
        corruption = results["corruption"]
        groups += [("clean frames", corruption["clean"]), ("corrupted frames", corruption["corrupted"])]
        groups += [(f"corruption: {name}", figures) for name, figures in corruption["types"].items()]
    if groups:
        lines += ["| frames | pixels | mIoU | mean class acc. | aAcc |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {name} | {g['pixels']} | {_percent(g['miou'])} | {_percent(g['macc'])} "
            f"| {_percent(g['aacc'])} |"
            for name, g in groups
        ]
        lines.append("")
    lines += ["| class | IoU | acc. |", "|---|---:|---:|"]
    lines += [
        f"| {name} | {_percent(results['iou'][name])} | {_percent(results['acc'][name])} |"
        for name in results["classes"]
    ]
    return "\n".join(lines) + "\n"
