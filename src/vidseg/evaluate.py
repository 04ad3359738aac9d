"""Evaluation of a model on a dataset split: the benchmark figures, per-position mIoU, temporal consistency, and
prediction PNGs.

What is scored (the ``mode`` argument):

- ``"stream"``: every labelled frame of every sequence exactly once. Each sequence is segmented from its first
  frame to its last, one step at a time, carrying the model's state, so early frames get the context that
  exists and per-frame and temporal models are scored on the same frames. Needs a dataset with a video index
  (``vidseg.data.open_dataset``). mVC runs over whole sequences, TC over every pair of consecutive frames.
- ``"windows"``: the dataset's windows (one per annotated frame), scored on their annotated frame: the protocol
  of sparse Cityscapes, where one frame of each 30-frame snippet is labelled.
- ``"auto"``: ``windows`` when no sequence has more than one labelled frame (or the dataset has no video index,
  or is a subset of windows), else ``stream``.

Where (``score_at``): ``"labels"``, at the label files' resolution: the logits are upsampled bilinearly to the
label size and then the argmax is taken, as the official Cityscapes and CamVid evaluations score full-resolution
predictions; ``"working"``: at the working size, labels resized with nearest neighbour. In window mode the
dataset's transform decides (``ClipTransform(size, resize_labels=False)`` keeps the label resolution), and the
results say which was used.

Protocols (the ``protocol`` argument):

- ``"standard"``: the classes of the dataset's label set; ground-truth 255 is ignored. For the Cityscapes sets,
  the 19 classes as the official cityscapesScripts count them: ground-truth void (255 in the ``cityscapes``
  label set, class 19 in the ``report`` set) is ignored, and a 20-class model's void prediction on a non-void
  pixel is a miss for the true class and a false positive for none of the 19 classes: exactly what the official
  script does with a labelId-0 ("unlabeled") prediction.
- ``"report"`` (Cityscapes label sets only): the report's way: 20 labels, void included as a class in every
  figure, and its "mAcc" is pixel accuracy (``aacc``). On data loaded with the ``cityscapes`` label set,
  ground-truth 255 on a labelled frame is read as void.

All figures are fractions in [0, 1]; a figure that is undefined (no pixels, no pairs, sequences too short) is
None in the returned results.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from vidseg.choices import AMP_MODES
from vidseg.consistency import TemporalConsistency, VideoConsistency, grey_frames
from vidseg.data.corrupt import CORRUPTIONS, CorruptedClips
from vidseg.data.labels import (
    IGNORE_INDEX,
    NUM_TRAIN_CLASSES,
    TRAIN_CLASS_NAMES,
    cityscapes_label_set_name,
    get_label_set,
    train_id_to_label_id,
)
from vidseg.data.transforms import normalize, resize_frames, resize_labels
from vidseg.errors import VidsegError
from vidseg.fileio import atomic_path, make_folder
from vidseg.metrics import ConfusionMatrix, all_reduce_max, all_reduce_sum, nan_to_none
from vidseg.models.stride import StridedState
from vidseg.models.unet import State, run_clip
from vidseg.results import CorruptionFigures, EvaluationResults, Figures, PerPosition

if TYPE_CHECKING:
    from vidseg.models import RecurrentUNet

PROTOCOLS = ("standard", "report")
MODES = ("auto", "stream", "windows")
SCORE_AT = ("labels", "working")
PER_POSITION_MODES = ("auto", "context", "labelled", "off")
VC_RUN_LENGTHS = (8, 16)
CITYSCAPES_SETS = ("cityscapes", "report")
# ITU-R BT.601 luma, the weights OpenCV uses for RGB -> grey.
@dataclass(frozen=True)
class ScoringProtocol:
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


def _label_set_name(label_set) -> str:
    return str(getattr(label_set, "name", label_set))


def resolve_protocol(protocol: str, label_set, num_model_classes: int) -> ScoringProtocol:
    """The ScoringProtocol for a dataset in ``label_set`` (a name or LabelSet) and a model with that many outputs."""
    if protocol not in PROTOCOLS:
        raise VidsegError(f"unknown protocol {protocol!r}; valid protocols are: {', '.join(PROTOCOLS)}")
    try:
        label_set = get_label_set(label_set)
    except ValueError as error:
        raise VidsegError(str(error)) from error
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
    if label_set.name not in CITYSCAPES_SETS:
        if protocol == "report":
            raise VidsegError(
                f"the report protocol is defined for the Cityscapes label sets only, not {label_set.name!r}; "
                "use the standard protocol"
            )
        if num_model_classes != label_set.num_classes:
            raise VidsegError(
                f"the model predicts {num_model_classes} classes but label set {label_set.name!r} has "
                f"{label_set.num_classes}; evaluate a model trained on this label set"
            )
        lut[: label_set.num_classes] = torch.arange(label_set.num_classes)
        return ScoringProtocol("standard", tuple(label_set.class_names), num_model_classes, lut)
    void = NUM_TRAIN_CLASSES
    if num_model_classes not in (NUM_TRAIN_CLASSES, NUM_TRAIN_CLASSES + 1):
        raise VidsegError(
            f"the model predicts {num_model_classes} classes but label set {label_set.name!r} has "
            f"{label_set.num_classes}; evaluation needs a model with {NUM_TRAIN_CLASSES} (cityscapes) or "
            f"{NUM_TRAIN_CLASSES + 1} (report, with void) outputs"
        )
    lut[:void] = torch.arange(void)
    if protocol == "standard":
        return ScoringProtocol("standard", TRAIN_CLASS_NAMES, num_model_classes, lut)
    # The report set marks void as class 19 and padding as 255; the cityscapes set marks both as 255.
    lut[void] = void
    if label_set.num_classes == NUM_TRAIN_CLASSES:
        lut[IGNORE_INDEX] = void
    return ScoringProtocol("report", (*TRAIN_CLASS_NAMES, "void"), void + 1, lut)


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
    per_position: str = "auto",
    mode: str = "auto",
    score_at: str = "labels",
    limit: int | None = None,
    save_predictions: str | os.PathLike | None = None,
    prediction_size: tuple[int, int] | None = None,
    label_set=None,
    progress: bool = True,
    state_stride: int = 1,
) -> EvaluationResults:
    """Evaluate ``model`` on ``dataset`` (see the module docstring for modes) and return its results
    (``vidseg.results.EvaluationResults``; ``to_dict()`` is the JSON form).

    Under torch.distributed each rank evaluates the windows (or whole sequences) ``rank, rank + world, ...``
    (none padded or repeated) and all counts are summed over ranks, so every rank returns the same figures.

    Args:
        model: a RecurrentUNet-like module with ``step(frame, state)`` (a DDP wrapper is unwrapped).
        dataset: a clip dataset as ``vidseg.data`` documents it, all windows of one length; stream mode reads
            its ``index`` (the video index) and the working size of its ``transform``. A ``CorruptedClips``
            wrapper corrupts the streamed frames the same way, keyed by frame name.
        device, amp: where the model runs and its autocast mode (``off``, ``bf16``; ``fp16`` on CUDA only).
        protocol: ``standard`` or ``report`` (see the module docstring).
        num_classes: model outputs; defaults to ``model.num_classes``.
        tc: also compute flow-based temporal consistency (CPU optical flow; slow on large frames).
        per_position: ``context``: frames segmented again after seeing only their last k = 1 ... K frames,
            the same frames for every k (windows: the annotated frame, K the window length; stream: every K-th
            frame of a sequence from frame K on, K = the dataset's window length); ``labelled`` (windows only):
            the labelled frames at each window position (different frames at each position); ``auto``:
            ``context`` when windows carry a single labelled frame or when streaming, else ``labelled``;
            ``off``.
        mode: ``auto``, ``stream`` or ``windows`` (``auto`` with ``per_position="labelled"`` means windows).
        score_at: ``labels`` or ``working`` (stream mode; windows follow the dataset's transform).
        limit: evaluate the first ``limit`` windows, or in stream mode sequences, only.
        save_predictions: a folder for ``<name>_pred.png`` images of the scored frames, at the scored
            resolution: Cityscapes labelIds for the Cityscapes label sets, class indices otherwise.
        prediction_size: ``(height, width)`` the saved PNGs are resized to (nearest); None keeps the scored size.
        label_set: the dataset's label set; defaults to ``dataset.label_set``, else the one with as many
            classes as the model.
        progress: show a progress bar (rank 0 only).
        state_stride: carry the state ``state_stride`` frames apart (``vidseg.models.stride.StridedState``):
            the ratio of the evaluated video's frame rate to the training video's; 1 (default) carries it from
            each frame to the next. The per-position context runs consecutive frames either way.

    Returns:
        as attributes: ``mode``, ``score_at``, ``frames_scored``; ``miou``, ``macc``, ``aacc``, ``iou`` / ``acc``
        (per class name) and ``scored.pixels`` over the scored frames (stream: every labelled frame; windows: the
        annotated frames); ``headline`` (``mIoU``, and ``mAcc`` as the protocol defines it); ``corruption`` (clean /
        corrupted / per type) where frames are corrupted; ``per_position`` (unless off); ``tc``; ``mvc_8`` and
        ``mvc_16``; counts. Windows also give ``windows``, ``annotated_frames`` and ``all_frames`` (every
        labelled frame of every window) where windows carry more than the annotated label; stream gives
        ``sequences``.
    """
    # Unwrap a DDP wrapper; the module is duck-typed as a RecurrentUNet (step, num_classes), which no type states.
    net = cast("RecurrentUNet", model.module if hasattr(model, "module") else model)
    num_classes = int(num_classes if num_classes is not None else net.num_classes)
    stepper = StridedState(net, state_stride) if state_stride != 1 else net
    base, corruption = _unwrap(dataset)
    if label_set is None:
        label_set = getattr(base, "label_set", None) or cityscapes_label_set_name(num_classes)
    spec = resolve_protocol(protocol, label_set, num_classes)
    for value, valid, what in (
        (per_position, PER_POSITION_MODES, "per_position"),
        (mode, MODES, "mode"),
        (score_at, SCORE_AT, "score_at"),
        (amp, AMP_MODES, "amp"),
    ):
        if value not in valid:
            raise VidsegError(f"unknown {what} {value!r}; valid values are: {', '.join(valid)}")
    device = torch.device(device)
    if amp == "fp16" and device.type != "cuda":
        raise VidsegError("amp 'fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    if len(dataset) == 0:
        raise VidsegError("the evaluation dataset has no windows; check the data root and split")
    # Window positions exist in window mode only: asking for them picks it.
    mode = _resolve_mode("windows" if mode == "auto" and per_position == "labelled" else mode, dataset, base)
    if limit is not None and limit < 1:
        raise VidsegError(f"limit must be a positive count, got {limit}")
    if mode == "windows" and limit is not None and limit < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(limit))
    num_sequences = len(base.index.sequences) if mode == "stream" else 0
    if limit is not None:
        num_sequences = min(num_sequences, limit)
    num_frames = int(getattr(base, "num_frames", 0) or dataset[0]["frames"].shape[0])
    if mode == "stream" and per_position == "labelled":
        raise VidsegError(
            "per_position 'labelled' pools window positions, which stream mode has none of; use 'context' "
            "(every K-th frame segmented after its last 1 ... K frames) or 'off'"
        )
    save_dir = Path(save_predictions) if save_predictions is not None else None
    if save_dir is not None:
        make_folder(save_dir)
    saver = _PredictionSaver(save_dir, prediction_size, _label_set_name(label_set)) if save_dir else None

    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(), _autocast(device, amp):
            if mode == "stream":
                per_position = "off" if per_position == "off" else "context"
                meters = _Meters(spec, num_frames, num_classes, device, tc, _corruption_names(base))
                _evaluate_stream(
                    net,
                    stepper,
                    base,
                    num_sequences,
                    corruption,
                    meters,
                    device,
                    num_workers,
                    score_at,
                    per_position,
                    saver,
                    progress,
                )
                scored_at = score_at
            else:
                first = dataset[0]
                num_frames = int(first["frames"].shape[0])
                if per_position == "auto":
                    per_position = "context" if int(torch.as_tensor(first["labelled"]).sum()) == 1 else "labelled"
                meters = _Meters(spec, num_frames, num_classes, device, tc, _corruption_names(base))
                _evaluate_windows(
                    net, stepper, dataset, meters, device, batch_size, num_workers, num_frames, per_position, saver,
                    progress,
                )
                scored_at = "working" if _resizes_labels(base) else "labels"
    finally:
        net.train(was_training)

    meters.all_reduce()
    expected = num_sequences if mode == "stream" else len(dataset)
    return meters.results(label_set, per_position, mode, expected, scored_at)


# ----------------------------------------------------------------------------------------------- internals


def _unwrap(dataset):
    """(the underlying dataset, its Corruption or None): looks through CorruptedClips and Subset wrappers."""
    corruption = None
    base = dataset
    while True:
        if isinstance(base, CorruptedClips):
            corruption = base.corruption
            base = base.dataset
        elif isinstance(base, torch.utils.data.Subset):
            base = base.dataset
        else:
            return base, corruption


def _resolve_mode(mode: str, dataset, base) -> str:
    index = getattr(base, "index", None)
    is_subset = any(isinstance(d, torch.utils.data.Subset) for d in _wrappers(dataset))
    if mode == "stream":
        if index is None or not hasattr(index, "sequences"):
            raise VidsegError(
                "stream mode needs a dataset with a video index (vidseg.data.open_dataset); this one has none: "
                "evaluate its windows (mode 'windows')"
            )
        if is_subset:
            raise VidsegError("stream mode scores whole sequences; it cannot evaluate a subset of windows")
        return mode
    if mode == "windows" or index is None or not hasattr(index, "sequences") or is_subset:
        return "windows"
    dense = any(sum(frame.label is not None for frame in seq.frames) > 1 for seq in index.sequences)
    return "stream" if dense else "windows"


def _wrappers(dataset):
    while True:
        yield dataset
        inner = dataset.__dict__.get("dataset") if hasattr(dataset, "__dict__") else None
        if inner is None:
            return
        dataset = inner


def _resizes_labels(base) -> bool:
    transform = getattr(base, "transform", None)
    return getattr(transform, "size", None) is not None and getattr(transform, "resize_labels", True)


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _corruption_names(dataset) -> tuple[str, ...]:
    """Names of the corruption codes: those stored with the data (``synthcity.json``), else vidseg's."""
    meta = getattr(dataset, "meta", None)
    if isinstance(meta, dict) and isinstance(meta.get("corruptions"), list):
        return tuple(str(name) for name in meta["corruptions"])
    return tuple(CORRUPTIONS)


def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _classes_at(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class maps ``[N, H, W]`` of logits ``[N, C, h, w]`` upsampled bilinearly to ``size`` (one at a time)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits.argmax(dim=1)
    return torch.stack(
        [
            F.interpolate(one[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0].argmax(0)
            for one in logits
        ]
    )


def _predict_clip(net, frames: torch.Tensor, label_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Class maps ``[B, T, h, w]`` at the working size and ``[B, T, H, W]`` at ``label_size``; one step at a
    time so that only one frame's logits are alive."""

    def predict(frame: torch.Tensor, state: State | None) -> tuple[tuple[torch.Tensor, torch.Tensor], State]:
        logits, state = net.step(frame, state)
        working = logits.argmax(dim=1)
        scored = _classes_at(logits, label_size) if tuple(logits.shape[-2:]) != label_size else working
        return (working, scored), state

    (working, scored), _ = run_clip(predict, frames, None, frames.shape[2])
    return working, scored


def _predict_with_context(net, clip: torch.Tensor, gt_index: int) -> torch.Tensor:
    """Logits of frame ``gt_index`` after seeing 1, 2, ..., gt_index + 1 frames: ``[gt_index + 1, C, h, w]``.

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
    return logits.flip(0)


class _PredictionSaver:
    """Writes ``<name>_pred.png``: Cityscapes labelIds for the Cityscapes label sets, class indices otherwise."""

    def __init__(self, folder: Path, size: tuple[int, int] | None, label_set_name: str):
        self.folder = folder
        self.size = size
        self.label_ids = label_set_name in CITYSCAPES_SETS

    def save(self, name: str, pred: torch.Tensor) -> None:
        if self.size is not None and tuple(pred.shape) != tuple(self.size):
            pred = F.interpolate(pred[None, None].float(), size=tuple(self.size), mode="nearest-exact")[0, 0]
        classes = pred.to(torch.int64).cpu().numpy()
        image = train_id_to_label_id(classes) if self.label_ids else classes.clip(0, 255).astype(np.uint8)
        with atomic_path(self.folder / f"{name}_pred.png") as tmp:
            Image.fromarray(image).save(tmp, format="PNG")


def _evaluate_windows(
    net, stepper, dataset, meters: _Meters, device, batch_size, num_workers, num_frames, per_position, saver,
    progress,
) -> None:
    rank, world = _rank_and_world()
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in tqdm(loader, desc="evaluate", unit="window", disable=not progress or rank != 0):
        frames = batch["frames"].to(device)
        if frames.shape[1] != num_frames:
            raise VidsegError(
                f"window {batch['name'][0]} has {frames.shape[1]} frames, the first window has "
                f"{num_frames}; evaluate windows of one length"
            )
        labels = batch["labels"].to(device).long()
        label_size = (int(labels.shape[-2]), int(labels.shape[-1]))
        working, preds = _predict_clip(stepper, frames, label_size)
        targets = meters.spec.target_lut.to(device)[labels]
        labelled = batch["labelled"].to(device).bool()
        gt_index = batch["gt_index"].to(device).long()
        corruption = batch["corruption"].to(device).long()
        meters.update_windows(batch["name"], frames, working, preds, targets, labelled, corruption, gt_index)
        if per_position == "context":
            meters.update_context_windows(net, frames, preds, targets, labelled, gt_index)
        if saver is not None:
            for name, clip_preds, index in zip(batch["name"], preds, gt_index.tolist()):
                saver.save(name, clip_preds[index])


class _SequenceFrames(torch.utils.data.Dataset):
    """The frames of some sequences of a video index, in order, one item per frame, as stream mode reads them:
    the frame resized to the working size (then corrupted, if asked) and normalised, the label at the scoring
    resolution."""

    def __init__(self, index, sequences: list[int], size, score_at: str, corruption, map_labels=None):
        self.index = index
        # The clip dataset's mapping of raw label codes, which reports unknown codes once; else the index's.
        self.map_labels = map_labels
        self.items = [(s, t) for s in sequences for t in range(len(index.sequences[s].frames))]
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.score_at = score_at
        self.corruption = corruption

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int) -> dict[str, Any]:
        sequence, position = self.items[item]
        frame = self.index.sequences[sequence].frames[position]
        image = torch.from_numpy(np.ascontiguousarray(self.index.read_image(frame))).permute(2, 0, 1)[None]
        if self.size is not None:
            image = resize_frames(image, self.size)
        code = int((frame.facts or {}).get("corruption", 0))
        if self.corruption is not None and code == 0:
            corrupted, code = self.corruption.apply(image[0].contiguous(), key=frame.name)
            image = corrupted[None]
        label = torch.zeros((0, 0), dtype=torch.int64)
        if frame.label is not None:
            if self.map_labels is not None:
                classes = self.map_labels(self.index.read_raw_label(frame), frame)
            else:
                classes = self.index.read_label(frame)
            label = torch.from_numpy(np.asarray(classes).astype(np.int64))
            if self.score_at == "working" and tuple(label.shape) != tuple(image.shape[-2:]):
                label = resize_labels(label[None], (int(image.shape[-2]), int(image.shape[-1])))[0]
        return {
            "frame": normalize(image.contiguous())[0],
            "label": label,
            "labelled": frame.label is not None,
            "corruption": code,
            "sequence": sequence,
            "position": position,
            "name": frame.name,
        }


def _evaluate_stream(
    net, stepper, base, num_sequences, corruption, meters: _Meters, device, num_workers, score_at, per_position,
    saver, progress,
) -> None:
    rank, world = _rank_and_world()
    index = base.index
    size = getattr(getattr(base, "transform", None), "size", None)
    sequences = list(range(rank, num_sequences, world))
    frames = _SequenceFrames(index, sequences, size, score_at, corruption, getattr(base, "_map_labels", None))
    loader = torch.utils.data.DataLoader(frames, batch_size=None, shuffle=False, num_workers=num_workers)
    lut = meters.spec.target_lut.to(device)
    context = meters.num_frames
    current, state = None, None
    history: deque[torch.Tensor] = deque(maxlen=context)
    for item in tqdm(loader, desc="evaluate", unit="frame", disable=not progress or rank != 0):
        if item["sequence"] != current:
            current, state = item["sequence"], None
            history.clear()
            meters.start_sequence()
        frame = item["frame"].to(device)[None]
        history.append(frame[0])
        logits, state = stepper.step(frame, state)
        working = logits.argmax(dim=1)[0]
        meters.update_stream_pair(frame[0], working)
        if not item["labelled"]:
            meters.update_stream_unlabelled()
            continue
        label = item["label"].to(device)
        pred = _classes_at(logits, (int(label.shape[0]), int(label.shape[1])))[0]
        target = lut[label]
        meters.update_stream(pred, target, int(item["corruption"]))
        if per_position == "context" and item["position"] % context == context - 1:
            meters.update_context_stream(net, torch.stack(list(history)), pred, target)
        if saver is not None:
            saver.save(item["name"], pred)


class _Meters:
    """Every count of one evaluation, kept so that one all-reduce per meter gives global figures."""

    def __init__(
        self,
        spec: ScoringProtocol,
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
        self.scored = self._matrix()
        self.all_frames = self._matrix()
        self.by_position = [self._matrix() for _ in range(num_frames)]
        self.by_context = [self._matrix() for _ in range(num_frames)]
        self.context_stream = self._matrix()  # stream mode: the context anchors as the full stream saw them
        # One matrix per corruption index seen; grown on demand and agreed on across ranks in all_reduce.
        self.by_corruption: list[ConfusionMatrix] = []
        self.counts = _Counts.zeros(num_frames)
        self.tc = TemporalConsistency(num_model_classes) if tc else None
        self.vc = VideoConsistency(VC_RUN_LENGTHS)
        self.small = max(num_model_classes, spec.num_classes) < IGNORE_INDEX
        self._previous: tuple[np.ndarray, np.ndarray] | None = None
        self._run: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=max(VC_RUN_LENGTHS))

    # --- windows

    def update_windows(self, names, frames, working, preds, targets, labelled, corruption, gt_index) -> None:
        batch_size, num_frames = preds.shape[:2]
        self._check_codes(names, corruption)
        rows = torch.arange(batch_size, device=preds.device)
        annotated_ok = labelled[rows, gt_index]
        self.scored.update(preds[rows, gt_index][annotated_ok], targets[rows, gt_index][annotated_ok])
        self.all_frames.update(preds[labelled], targets[labelled])
        for position in range(num_frames):
            here = labelled[:, position]
            self.by_position[position].update(preds[here, position], targets[here, position])
        for index, matrix in enumerate(self.by_corruption):
            chosen = labelled & (corruption == index)
            matrix.update(preds[chosen], targets[chosen])
        self.counts.scored_frames += int(annotated_ok.sum())
        self.counts.labelled_frames += int(labelled.sum())
        self.counts.units += batch_size
        self.counts.by_position += labelled.sum(dim=0).cpu()
        fully_labelled = labelled.all(dim=1)
        for clip in range(batch_size):
            if fully_labelled[clip]:
                self.vc.update(targets[clip], preds[clip])
        if self.tc is not None:
            grey = grey_frames(frames)
            class_maps = working.to(torch.uint8 if self.tc.num_classes <= 256 else torch.int64).cpu().numpy()
            for clip in range(batch_size):
                self.tc.update(grey[clip], class_maps[clip])

    def update_context_windows(self, net, frames, preds, targets, labelled, gt_index) -> None:
        size = (int(targets.shape[-2]), int(targets.shape[-1]))
        for clip, index in enumerate(gt_index.tolist()):
            if not labelled[clip, index]:
                continue
            if getattr(net, "is_temporal", True):
                seen = _classes_at(_predict_with_context(net, frames[clip], index), size)
            else:  # a per-frame model gives the same answer whatever it saw before
                seen = preds[clip, index].expand(index + 1, *preds.shape[2:])
            for frames_seen_minus_one in range(index + 1):
                self.by_context[frames_seen_minus_one].update(seen[frames_seen_minus_one], targets[clip, index])
                self.counts.by_context[frames_seen_minus_one] += 1

    def _check_codes(self, names, corruption: torch.Tensor) -> None:
        if bool((corruption < 0).any()):
            clip = int((corruption < 0).any(dim=1).nonzero()[0])
            raise VidsegError(
                f"window {names[clip]}: negative corruption index in {corruption[clip].tolist()}; corruption "
                "codes index vidseg.data.corrupt.CORRUPTIONS (0 = clean): regenerate the data"
            )
        self._grow_corruption(int(corruption.max()) + 1)

    # --- stream

    def start_sequence(self) -> None:
        self.counts.units += 1
        self._previous = None
        self._run.clear()

    def update_stream_pair(self, frame: torch.Tensor, working: torch.Tensor) -> None:
        """Flow-based TC of the previous frame of the sequence and this one."""
        if self.tc is None:
            return
        grey = grey_frames(frame)
        pred = working.to(torch.uint8 if self.tc.num_classes <= 256 else torch.int64).cpu().numpy()
        if self._previous is not None:
            self.tc.update(np.stack([self._previous[0], grey]), np.stack([self._previous[1], pred]))
        self._previous = (grey, pred)

    def update_stream_unlabelled(self) -> None:
        self._run.clear()  # a VC run needs consecutive labelled frames

    def update_stream(self, pred: torch.Tensor, target: torch.Tensor, code: int) -> None:
        if code < 0:
            raise VidsegError(f"negative corruption code {code}; codes index vidseg.data.corrupt.CORRUPTIONS")
        self._grow_corruption(code + 1)
        self.scored.update(pred, target)
        self.by_corruption[code].update(pred, target)
        self.counts.scored_frames += 1
        self.counts.labelled_frames += 1
        dtype = torch.uint8 if self.small else torch.int64
        self._run.append((target.to(dtype), pred.to(dtype)))
        self.vc.update_last_runs(
            torch.stack([t for t, _ in self._run]), torch.stack([p for _, p in self._run])
        )

    def update_context_stream(self, net, history: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> None:
        """The newest frame of ``history`` ``[K, 3, h, w]`` segmented after seeing its last 1 ... K frames."""
        count = history.shape[0]
        if getattr(net, "is_temporal", True):
            seen = _classes_at(_predict_with_context(net, history, count - 1), (target.shape[0], target.shape[1]))
        else:
            seen = pred.expand(count, *pred.shape)
        for k in range(count):
            self.by_context[k].update(seen[k], target)
            self.counts.by_context[k] += 1
        self.context_stream.update(pred, target)

    # --- totals

    def _matrix(self) -> ConfusionMatrix:
        spec = self.spec
        return ConfusionMatrix(spec.num_classes, num_pred_classes=spec.num_pred_classes, device=self.device)

    def _grow_corruption(self, count: int) -> None:
        while len(self.by_corruption) < count:
            self.by_corruption.append(self._matrix())

    def all_reduce(self) -> None:
        self._grow_corruption(int(all_reduce_max(torch.tensor([max(len(self.by_corruption), 1)]))[0]))
        for matrix in [
            self.scored,
            self.all_frames,
            self.context_stream,
            *self.by_position,
            *self.by_context,
            *self.by_corruption,
        ]:
            matrix.all_reduce()
        self.counts.all_reduce()
        self.vc.all_reduce()
        if self.tc is not None:
            self.tc.all_reduce()

    def _corruption_name(self, index: int) -> str:
        return self.corruption_names[index] if index < len(self.corruption_names) else f"corruption {index}"

    def _figures(self, matrix: ConfusionMatrix, frames: int | None = None) -> Figures:
        figures = nan_to_none(matrix.compute())
        names = self.spec.class_names
        return Figures(
            miou=figures["miou"],
            macc=figures["macc"],
            aacc=figures["aacc"],
            iou=dict(zip(names, figures["iou"])),
            acc=dict(zip(names, figures["acc"])),
            pixels=figures["pixels"],
            frames=frames,
        )

    def _corruption_figures(self) -> CorruptionFigures:
        types = {
            self._corruption_name(index): self._figures(matrix)
            for index, matrix in enumerate(self.by_corruption)
            if index > 0 and matrix.total > 0
        }
        corrupted = ConfusionMatrix(self.spec.num_classes, num_pred_classes=self.spec.num_pred_classes)
        for matrix in self.by_corruption[1:]:
            corrupted.merge(matrix)
        clean = self._figures(self.by_corruption[0])
        return CorruptionFigures(clean=clean, corrupted=self._figures(corrupted), types=types)

    def _per_position(self, per_position: str, mode: str) -> PerPosition:
        if per_position == "context":
            matrices, frames = self.by_context, self.counts.by_context
        else:
            matrices, frames = self.by_position, self.counts.by_position
        stream = mode == "stream"
        return PerPosition(
            mode=per_position,
            frames_seen=list(range(1, self.num_frames + 1)),
            miou=[nan_to_none(matrix.compute()["miou"]) for matrix in matrices],
            frames=frames.tolist(),
            # Stream mode: the same frames as the stream scored them, having seen their whole sequence up to them.
            every=self.num_frames if stream else None,
            stream_miou=nan_to_none(self.context_stream.compute()["miou"]) if stream else None,
        )

    def results(
        self, label_set, per_position: str, mode: str, expected_units: int, score_at: str
    ) -> EvaluationResults:
        scored_frames = int(self.counts.scored_frames)
        labelled_frames = int(self.counts.labelled_frames)
        units = int(self.counts.units)
        unit = "sequences" if mode == "stream" else "windows"
        if units != expected_units:
            raise RuntimeError(f"evaluated {units} {unit} of {expected_units}: ranks lost or repeated {unit}")
        scored = self._figures(self.scored)
        windows = mode == "windows"
        vc = self.vc.compute()
        return EvaluationResults(
            mode=mode,
            protocol=self.spec.name,
            label_set=_label_set_name(label_set),
            classes=list(self.spec.class_names),
            frames_scored=scored_frames,
            scored=scored,
            headline={
                "mIoU": scored.miou,
                # The report's "mAcc" is pixel accuracy; the standard one is the mean of per-class recalls.
                "mAcc": scored.aacc if self.spec.name == "report" else scored.macc,
            },
            tc=nan_to_none(self.tc.compute()) if self.tc is not None else None,
            tc_pairs=self.tc.pairs if self.tc is not None else 0,
            mvc_8=nan_to_none(vc[8]),
            mvc_16=nan_to_none(vc[16]),
            mvc_runs={str(n): count for n, count in self.vc.runs().items()},
            score_at=score_at,
            sequences=None if windows else units,
            windows=units if windows else None,
            frames_per_window=self.num_frames if windows else None,
            annotated_frames=scored_frames if windows else None,
            all_frames=self._figures(self.all_frames, labelled_frames)
            if windows and labelled_frames > scored_frames
            else None,
            corruption=self._corruption_figures()
            if (not windows or labelled_frames > scored_frames)
            and any(matrix.total > 0 for matrix in self.by_corruption[1:])
            else None,
            per_position=None if per_position == "off" else self._per_position(per_position, mode),
        )


@dataclass
class _Counts:
    """Frame and unit counts of one evaluation, summed over ranks by ``all_reduce`` (one call per field)."""

    scored_frames: torch.Tensor  # [1] frames scored: annotated (windows) or labelled (stream)
    labelled_frames: torch.Tensor  # [1] labelled frames seen, annotated ones included
    units: torch.Tensor  # [1] windows or sequences evaluated
    by_position: torch.Tensor  # [T] labelled frames at each window position
    by_context: torch.Tensor  # [T] frames segmented after seeing k = 1 ... T frames

    @classmethod
    def zeros(cls, num_frames: int) -> _Counts:
        def count(size: int) -> torch.Tensor:
            return torch.zeros(size, dtype=torch.int64)

        return cls(count(1), count(1), count(1), count(num_frames), count(num_frames))

    def all_reduce(self) -> None:
        for field in fields(self):
            setattr(self, field.name, all_reduce_sum(getattr(self, field.name)))


# ------------------------------------------------------------------------------------------------ reports


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def results_markdown(results: EvaluationResults, title: str | None = None) -> str:
    """Render ``evaluate_model`` results as Markdown tables (figures in percent, "–" where undefined).

    Every figure appears once: mAcc is the mean class accuracy and aAcc the pixel accuracy (which the report
    protocol calls "mAcc"; a note says so).
    """
    lines = [f"## {title}", ""] if title else []
    mode = results.mode
    if mode == "stream":
        scored = f"{results.frames_scored} frames of {results.sequences} sequences, each streamed from its start"
    else:
        scored = (
            f"{results.frames_scored} annotated frames of {results.windows} windows of "
            f"{results.frames_per_window} frames"
        )
    where = {"labels": "at the label files' resolution", "working": "at the working size"}.get(results.score_at, "")
    lines += [f"Scored: {scored}, {where}.".replace(", .", "."), ""]
    lines += [
        "| protocol | frames | mIoU | mAcc | aAcc | TC | mVC_8 | mVC_16 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {results.protocol} ({len(results.classes)} classes) | {results.frames_scored} "
        f"| {_percent(results.miou)} | {_percent(results.macc)} | {_percent(results.aacc)} "
        f"| {_percent(results.tc)} | {_percent(results.mvc_8)} | {_percent(results.mvc_16)} |",
        "",
    ]
    if results.protocol == "report":
        lines += ["The report's \"mAcc\" is the pixel accuracy: the aAcc column.", ""]
    position = results.per_position
    if position is not None:
        if position.mode != "context":
            what = "the labelled frames at window position k (different frames at each position)"
        elif mode == "stream":
            what = (
                f"every {position.every}th frame of a sequence, segmented after seeing only its last k frames; "
                "stream: the same frames as the stream saw them"
            )
        else:
            what = "the annotated frame after seeing only the last k frames"
        header = [str(k) for k in position.frames_seen]
        miou = [_percent(v) for v in position.miou]
        frames = [str(n) for n in position.frames]
        if position.every is not None:
            header, miou, frames = header + ["stream"], miou + [_percent(position.stream_miou)], frames + frames[-1:]
        lines += [
            f"Per position (mIoU of {what}):",
            "",
            "| frames seen k | " + " | ".join(header) + " |",
            "|---|" + "---:|" * len(header),
            "| mIoU | " + " | ".join(miou) + " |",
            "| frames | " + " | ".join(frames) + " |",
            "",
        ]
    groups = []
    if results.all_frames is not None:
        groups.append(("all labelled frames", results.all_frames))
    if results.corruption is not None:
        corruption = results.corruption
        groups += [("clean frames", corruption.clean), ("corrupted frames", corruption.corrupted)]
        groups += [(f"corruption: {name}", figures) for name, figures in corruption.types.items()]
    if groups:
        lines += ["| frames | pixels | mIoU | mAcc | aAcc |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {name} | {g.pixels} | {_percent(g.miou)} | {_percent(g.macc)} | {_percent(g.aacc)} |"
            for name, g in groups
        ]
        lines.append("")
    lines += ["| class | IoU | acc. |", "|---|---:|---:|"]
    lines += [
        f"| {name} | {_percent(results.iou[name])} | {_percent(results.acc[name])} |" for name in results.classes
    ]
    return "\n".join(lines) + "\n"
