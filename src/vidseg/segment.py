"""Streaming inference over any video: one frame in, one label map out, the recurrent state carried forward.

``Segmenter`` wraps a checkpoint's model for inference on raw frames (uint8 RGB, any size); ``segment_to_files``
runs it over a ``vidseg.data.video`` source and writes an overlay video and/or a folder of mask PNGs, one frame
at a time, so memory does not depend on the length of the video.

Working resolution (``size``): frames are resized bilinearly (antialiased when shrinking) to ``size``; the
logits are resized back to the frame's size bilinearly and the argmax is taken there. Interpolating logits
rather than label maps gives boundaries that follow the evidence between working-resolution pixels instead of
a blocky nearest-neighbour staircase, and it gives probabilities at the input size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vidseg import models, viz
from vidseg.allocator import keep_freed_memory
from vidseg.checkpoint import TrainState
from vidseg.choices import MASK_FORMATS, autocast_mode, resolve_precision
from vidseg.data.labels import IGNORE_INDEX, colorize, train_id_to_label_id
from vidseg.data.video import ImageFolderWriter, VideoWriter
from vidseg.distributed import resolve_device
from vidseg.errors import TerminationRequest, VidsegError
from vidseg.models import State
from vidseg.models.stride import StridedState, check_stride
from vidseg.quantize import calibration_clips, quantize_for_streaming

_AMP_DTYPES = {"off": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

Frame = np.ndarray | torch.Tensor


class Segmenter:
    """Semantic segmentation of a video, frame by frame, with the model's recurrent state carried over.

    The Segmenter holds the state of the video it is reading: ``stream`` and ``segment_frame`` continue where
    the previous call stopped (so a video can be fed in pieces); ``reset`` starts a new video.

    On the CPU it asks glibc to keep freed memory for the next frame (``vidseg.allocator``, process-wide).

    Args:
        checkpoint: path of a vidseg checkpoint, a ``vidseg.checkpoint.TrainState``, or a checkpoint dict as
            ``vidseg.checkpoint.load_checkpoint`` returns it.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: ``"off"`` (float32), ``"bf16"`` or ``"fp16"`` (CUDA only; CPUs lack fast float16 kernels); the
            older spelling of ``precision`` (``amp="off"`` is ``precision="fp32"``).
        size: the working resolution: ``"checkpoint"`` (default) infers at the scale the model was trained at: each
            frame is resized, its aspect ratio kept, to fit the checkpoint's recorded working size (a frame of the
            training frames' shape gets exactly that size; checkpoints without one infer at the frame's size);
            ``"input"`` or None infers at each frame's own size; (height, width) infers at exactly that size.
        optimize: run the fused inference copy of the model (``vidseg.models.optimize_for_inference``: BatchNorm
            folded, activations fused) where it exists; False runs the plain model (under autocast for bf16/fp16).
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (CUDA) or ``"int8"`` (CPU: int8 convolutions calibrated
            on ``calibration``, recurrent state kept in float32; see ``vidseg.models.quantized``); None takes
            it from ``amp``.
        calibration: for int8, the frames to calibrate on: an iterable of ``[H, W, 3]`` uint8 frames, a video,
            a folder of frames or a dataset root; None uses the checkpoint's own validation frames where they
            exist (``vidseg.quantize.calibration_clips``). They are resized to ``size`` like the frames to segment.
        state_stride: carry the state this many frames apart (``vidseg.models.stride.StridedState``): the video's
            frame rate over the training video's; None takes the checkpoint's ``eval.state_stride`` (else 1).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | TrainState | dict[str, Any],
        device: str | torch.device = "cpu",
        amp: str = "off",
        size: tuple[int, int] | str | None = "checkpoint",
        optimize: bool = True,
        precision: str | None = None,
        calibration: Any = None,
        state_stride: int | None = None,
    ):
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # every frame reallocates the same large tensors (see vidseg.allocator)
        try:
            precision = resolve_precision(amp, precision)
        except ValueError as error:
            raise VidsegError(str(error)) from None
        if precision == "fp16" and self.device.type != "cuda":
            raise VidsegError("amp 'fp16' needs a CUDA device (float16 convolutions are very slow on CPU); use bf16")
        if precision == "int8" and (self.device.type != "cpu" or not optimize):
            raise VidsegError("precision int8 runs the CPU's int8 convolutions: use device cpu, with optimize on")
        self.precision = precision
        self.amp = autocast_mode(precision)
        amp = self.amp
        if isinstance(size, str) and size not in ("checkpoint", "input"):
            raise VidsegError(f"size must be 'checkpoint', 'input' or (height, width), got {size!r}")
        if size is not None and not isinstance(size, str):
            size = (int(size[0]), int(size[1]))
            if min(size) < 1:
                raise VidsegError(f"working size must be positive (height, width), got {size}")

        if isinstance(checkpoint, (str, os.PathLike)):
            source = str(checkpoint)
            checkpoint = TrainState.load(checkpoint)
        elif not isinstance(checkpoint, TrainState):
            source = "<checkpoint dict>"
            missing = [key for key in TrainState.REQUIRED if key not in checkpoint]
            if missing:
                raise VidsegError(f"the checkpoint dict lacks {missing}; pass what load_checkpoint returns")
            checkpoint = TrainState.from_payload(checkpoint)
        else:
            source = "<checkpoint>"
        self.model_name = checkpoint.model_name
        self.model = checkpoint.build_model(source).eval().to(self.device)
        self.num_classes = self.model.num_classes
        try:
            self.label_set = checkpoint.predicted_label_set()
        except VidsegError as error:
            raise VidsegError(f"checkpoint {source}: {error}") from error
        self.fit_size = checkpoint.trained_size() if size == "checkpoint" else None
        """The checkpoint's working size that frames are fitted into (``size="checkpoint"``), else None."""
        self.size: tuple[int, int] | None = None if isinstance(size, str) else size
        """The exact working size asked for, else None."""
        mean, std = checkpoint.mean_std()
        # (x / 255 - mean) / std as one multiply-subtract per pixel.
        std_tensor = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std_tensor)
        self._shift = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) / std_tensor

        stored = state_stride is None
        if stored:
            state_stride = ((checkpoint.config or {}).get("eval") or {}).get("state_stride", 1)
        try:
            self.state_stride = check_stride(state_stride)
            """Frames between the frame that leaves a state and the frame that continues it (1: the next frame)."""
        except ValueError as error:
            raise VidsegError(f"eval.state_stride of checkpoint {source}: {error}" if stored else str(error)) from None

        self.optimized = optimize and hasattr(models, "optimize_for_inference")
        self.reset()
        if precision == "int8":
            clips = calibration_clips(calibration, checkpoint)
            self.network = quantize_for_streaming(self.model, clips, self._prepare)
        elif self.optimized:
            self.network = models.optimize_for_inference(self.model, dtype=_AMP_DTYPES[amp])
        else:
            self.network = self.model
        if self.state_stride > 1:
            self.network = StridedState(self.network, self.state_stride)

    @property
    def palette(self) -> np.ndarray:
        return self.label_set.palette

    @property
    def frames_seen(self) -> int:
        """Frames segmented since the last ``reset``."""
        return self._frames_seen

    def reset(self) -> None:
        """Forget the current video: the next frame starts from the zero state and may have any size."""
        self._state: State | None = None
        self._frame_shape: tuple[int, int] | None = None
        self._frames_seen = 0

    def stream(self, frames: Iterable[Frame], probabilities: bool = False) -> Iterator[Any]:
        """Segment frames in order, carrying the state; yield one result per frame as soon as it is ready.

        Args:
            frames: ``[H, W, 3]`` uint8 RGB frames (numpy arrays or tensors), all of one size.
            probabilities: also yield the class probabilities.

        Yields:
            the label map, uint8 ``[H, W]`` of class indices, or with ``probabilities`` a pair (label map,
            float32 ``[num_classes, H, W]`` softmax), as numpy arrays at the frame's size.
        """
        for frame in frames:
            yield self.segment_frame(frame, probabilities)

    @torch.inference_mode()
    def segment_frame(self, frame: Frame, probabilities: bool = False):
        """Segment the next frame of the current video; see ``stream`` for arguments and results."""
        pixels = self._to_device(frame)
        height, width = pixels.shape[-2:]
        if self._frame_shape is not None and (height, width) != self._frame_shape:
            raise VidsegError(
                f"frame {self._frames_seen} is {width}x{height} (width x height) but this video started at "
                f"{self._frame_shape[1]}x{self._frame_shape[0]}; all frames of a video must have one size: call "
                "reset() before starting another video, or resize the frames"
            )
        self._frame_shape = (height, width)
        working = self._working_size(height, width)
        normalized = self._normalize(pixels)
        with self._autocast():
            logits, self._state = self.network.step(normalized, self._state)
        if working != (height, width):
            logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
        self._frames_seen += 1
        labels = logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
        if probabilities:
            return labels, logits.float().softmax(dim=1)[0].cpu().numpy()
        return labels

    def _working_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size or _fit(height, width, self.fit_size)

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's input for uint8 ``[1, 3, H, W]`` pixels: resized to the working size, normalised, float32."""
        height, width = pixels.shape[-2:]
        working = self._working_size(height, width)
        if working != (height, width):
            shrinking = working[0] < height or working[1] < width
            if self.device.type != "cpu":  # the fast uint8 path of interpolate is CPU-only
                pixels = pixels.float()
            pixels = F.interpolate(
                pixels.contiguous(memory_format=torch.channels_last),
                size=working,
                mode="bilinear",
                align_corners=False,
                antialias=shrinking,
            )
        return pixels.float().mul_(self._scale).sub_(self._shift)

    def _prepare(self, frame: Frame) -> torch.Tensor:
        """``_normalize`` of an ``[H, W, 3]`` uint8 frame (used for calibration)."""
        return self._normalize(self._to_device(frame))

    def _autocast(self):
        enabled = not self.optimized and self.amp != "off"
        return torch.autocast(self.device.type, dtype=_AMP_DTYPES[self.amp], enabled=enabled)

    def _to_device(self, frame: Frame) -> torch.Tensor:
        """uint8 ``[1, 3, H, W]`` on the device from an ``[H, W, 3]`` uint8 frame."""
        if isinstance(frame, np.ndarray):
            if not (frame.flags.writeable and frame.flags.c_contiguous):
                frame = np.array(frame)  # torch refuses to share read-only memory (e.g. np.asarray of a PIL image)
            tensor = torch.from_numpy(frame)
        elif isinstance(frame, torch.Tensor):
            tensor = frame
        else:
            raise VidsegError(
                f"frame {self._frames_seen} is a {type(frame).__name__}; expected a numpy array or a tensor"
            )
        if tensor.dtype != torch.uint8 or tensor.dim() != 3 or tensor.shape[2] != 3:
            raise VidsegError(
                f"frame {self._frames_seen} has shape {tuple(tensor.shape)} and dtype {tensor.dtype}; expected "
                "[height, width, 3] uint8 RGB (convert grey or RGBA images to RGB; scale float frames to 0..255 "
                "and convert them to uint8)"
            )
        return tensor.to(self.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0)


# --------------------------------------------------------------------------------------------- to files


@dataclass
class SegmentSummary:
    """What ``segment_to_files`` did."""

    num_frames: int
    seconds: float
    frame_rate: float
    size: tuple[int, int] | None  # (height, width) of the input frames

    @property
    def frames_per_second(self) -> float:
        return self.num_frames / self.seconds if self.seconds > 0 else float("nan")


def mask_image(labels: np.ndarray, label_set, mask_format: str) -> np.ndarray:
    """The PNG content for a label map: ``trainids`` (class indices, 255 where no Cityscapes class: ignore
    and the report's void), ``labelids`` (official Cityscapes ids, void -> 0) or ``color`` (palette RGB)."""
    if mask_format == "trainids":
        if "void" in label_set.class_names:
            return np.where(labels == label_set.class_names.index("void"), IGNORE_INDEX, labels).astype(np.uint8)
        return labels
    if mask_format == "labelids":
        return train_id_to_label_id(labels)
    if mask_format == "color":
        return colorize(labels, label_set)
    raise ValueError(f"unknown mask format {mask_format!r}; valid formats are: {', '.join(MASK_FORMATS)}")


def segment_to_files(
    source,
    segmenter: Segmenter,
    *,
    out: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    mask_format: str = "trainids",
    alpha: float = 0.5,
    side_by_side: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> SegmentSummary:
    """Segment every frame of ``source`` (a ``vidseg.data.video.FrameSource``) and write the results.

    Frames are decoded, segmented and written one at a time. Outputs appear only when the whole video has
    been processed: on any error, or an interruption, nothing is left at ``out`` or ``masks``.

    Args:
        out: video file (.mp4, .mov, .mkv, .avi) of the input with the prediction blended in; it keeps the
            input's frame rate, frame count, frame timestamps and display rotation (see ``VideoWriter``).
        masks: folder for one PNG per frame, named after the input frame (image sequences) or its index.
        mask_format: see ``mask_image``.
        alpha: opacity of the class colours in the video.
        side_by_side: the video shows input | overlay, twice as wide.
        overwrite: replace existing outputs instead of refusing.
        progress: show a progress bar with frames/s on stderr.
    """
    if out is None and masks is None:
        raise VidsegError("nothing to write: give an output video (--out) and/or a masks folder (--masks)")
    if mask_format not in MASK_FORMATS:
        raise VidsegError(f"unknown mask format {mask_format!r}; valid formats are: {', '.join(MASK_FORMATS)}")
    if not 0.0 <= alpha <= 1.0:
        raise VidsegError(f"--alpha must lie in [0, 1], got {alpha}")
    source_path = getattr(source, "path", None)
    if out is not None and source_path is not None and Path(out).resolve() == Path(source_path).resolve():
        raise VidsegError(f"output {out} is the input video; choose another output name")

    label_set = segmenter.label_set
    segmenter.reset()
    start = time.perf_counter()
    size = None
    with ExitStack() as stack:
        video = None
        if out is not None:  # the output keeps the input's timestamps and display rotation
            timing = {"time_base": source.time_base, "rotation": source.rotation}
            video = stack.enter_context(VideoWriter(out, source.frame_rate, overwrite, **timing))
        mask_folder = stack.enter_context(ImageFolderWriter(masks, overwrite)) if masks is not None else None
        bar = stack.enter_context(
            tqdm(total=source.num_frames, unit="frame", desc=Path(source.name).name, disable=not progress)
        )
        for index, (frame, pts) in enumerate(source.timed_frames()):
            TerminationRequest.check()
            labels = segmenter.segment_frame(frame)
            size = labels.shape
            if video is not None:
                shown = viz.overlay(frame, labels, label_set, alpha)
                video.write(viz.side_by_side([frame, shown]) if side_by_side else shown, pts)
            if mask_folder is not None:
                mask_folder.write(source.frame_name(index), mask_image(labels, label_set, mask_format))
            bar.update()
        num_frames = segmenter.frames_seen
    return SegmentSummary(num_frames, time.perf_counter() - start, float(source.frame_rate), size)


def _fit(height: int, width: int, fit_size: tuple[int, int] | None) -> tuple[int, int]:
    """(height, width) scaled, aspect ratio kept, to fit inside ``fit_size`` (unchanged when it is None)."""
    if fit_size is None:
        return height, width
    scale = min(fit_size[0] / height, fit_size[1] / width)
    return max(1, round(height * scale)), max(1, round(width * scale))
