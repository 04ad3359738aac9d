"""Int8 inference: calibration data, the int8 streaming model, and int8 ONNX files.

Calibration (``calibration_clips``) reads frames from any of:

- an iterable of ``[H, W, 3]`` uint8 RGB frames (numpy arrays or tensors): one stream;
- a video file or a folder of frames: one stream;
- a dataset root in any layout ``vidseg.data.index`` knows (Cityscapes/SynthCity, CamVid, VSPW, folders): a
  few sequences of its ``val`` split (else its first split), spread over the split, each streamed from its start;
- nothing: the checkpoint's own validation data (its config's ``data.root``, ``data.layout`` and
  ``data.val_split``) where it exists.

Frames are streamed clip by clip with the recurrent state carried, so the ranges recorded for the temporal
units are those of a running video. ``quantize_for_streaming`` turns a model into the int8 copy of
``vidseg.models.quantized`` (oneDNN int8 convolutions through PyTorch, no extra dependency);
``quantize_onnx`` turns a float32 ONNX export into an int8 one for ONNX Runtime (the ``onnx`` extra).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseg.checkpoint import TrainState, as_train_state
from vidseg.data.files import read_image
from vidseg.data.index import build_index, layouts
from vidseg.data.video import open_frames
from vidseg.errors import VidsegError
from vidseg.fileio import atomic_path
from vidseg.models import quantized

# Frames streamed through the model to record ranges: enough for the states to settle (they forget in a few
# frames) and for several scenes, few enough that calibration takes seconds.
CALIBRATION_FRAMES = 48
CLIP_FRAMES = 12

Clip = list[np.ndarray]


def calibration_clips(
    calibration: Any = None,
    checkpoint: TrainState | Mapping[str, Any] | None = None,
    max_frames: int = CALIBRATION_FRAMES,
    clip_frames: int = CLIP_FRAMES,
) -> list[Clip]:
    """Calibration frames as clips (lists of ``[H, W, 3]`` uint8 frames, one size per clip), at most
    ``max_frames`` in all; see the module docstring for the sources.

    Raises:
        VidsegError: no source and no validation data in the checkpoint, a missing path, an empty source, a
            frame that is not ``[H, W, 3]`` uint8, or frames of different sizes within one stream.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    if calibration is None:
        root, layout, split = _checkpoint_validation_data(checkpoint)
        return _dataset_clips(root, layout, [split], max_frames, clip_frames)
    if isinstance(calibration, (str, os.PathLike)):
        path = Path(calibration)
        if not path.exists():
            raise VidsegError(
                f"calibration source {path} does not exist; pass a video, a folder of frames or a dataset root"
            )
        layout = _dataset_layout(path)
        if layout is not None:
            splits = sorted(layout.splits(path), key=lambda name: name != "val")  # val first
            return _dataset_clips(path, layout.name, splits, max_frames, clip_frames)
        source = open_frames(str(path))
        return [_take(source, max_frames, f"calibration source {source.name}")]
    if isinstance(calibration, (np.ndarray, torch.Tensor)) and calibration.ndim == 3:
        raise VidsegError(
            f"calibration is a single [H, W, 3] array of shape {tuple(calibration.shape)}; pass an iterable of "
            "frames (a list, or a [T, H, W, 3] array)"
        )
    if not isinstance(calibration, Iterable):
        raise VidsegError(
            f"calibration is a {type(calibration).__name__}; expected frames (an iterable of [H, W, 3] uint8 "
            "arrays), a video, a folder of frames or a dataset root"
        )
    return [_take(calibration, max_frames, "calibration frames")]


def _take(frames: Iterable[Any], max_frames: int, name: str) -> Clip:
    """The first ``max_frames`` frames of one stream, checked."""
    clip: Clip = []
    for index, frame in enumerate(frames):
        if index >= max_frames:
            break
        clip.append(_check_frame(frame, f"frame {index} of {name}", clip[0].shape if clip else None))
    if not clip:
        raise VidsegError(f"{name} holds no frames; calibration needs at least one")
    return clip


def _check_frame(frame: Any, where: str, first_shape: tuple[int, ...] | None) -> np.ndarray:
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        found = (
            f"shape {tuple(frame.shape)}, dtype {frame.dtype}" if isinstance(frame, np.ndarray)
            else type(frame).__name__
        )
        raise VidsegError(f"calibration {where} is {found}; expected an [H, W, 3] uint8 RGB frame")
    if first_shape is not None and frame.shape != first_shape:
        raise VidsegError(
            f"calibration {where} is {frame.shape[1]}x{frame.shape[0]} (width x height) but its stream started at "
            f"{first_shape[1]}x{first_shape[0]}; frames streamed together must have one size"
        )
    return frame


def _dataset_layout(path: Path):
    """The dataset layout of folder ``path`` (``vidseg.data.index.Layout``), or None for any other path."""
    if not path.is_dir():
        return None
    matches = [layout for layout in layouts().values() if layout.detect(path)]
    return matches[0] if len(matches) == 1 else None


def _checkpoint_validation_data(
    checkpoint: TrainState | Mapping[str, Any] | None,
) -> tuple[Path, str | None, str]:
    config = as_train_state(checkpoint).config if checkpoint else None
    data = (config or {}).get("data") or {}
    root, layout, split = data.get("root"), data.get("layout"), data.get("val_split", "val")
    hint = (
        "int8 needs calibration frames: pass calibration= (frames, a video, a folder of frames or a dataset "
        "root) or --calibrate PATH"
    )
    if root is None:
        raise VidsegError(f"no calibration data: the checkpoint names no training data; {hint}")
    if not Path(root).is_dir():
        raise VidsegError(
            f"no calibration data: the checkpoint's dataset root {root} (validation split {split!r}) is not on "
            f"this machine; {hint}"
        )
    return Path(root), layout, split


def _dataset_clips(
    root: Path, layout: str | None, splits: list[str], max_frames: int, clip_frames: int
) -> list[Clip]:
    """Up to ``max_frames`` frames from sequences of the first split that has any, each sequence from its
    start (``clip_frames`` frames, more when the split has few sequences), sequences spread over the split."""
    for split in splits:
        sequences = [s for s in build_index(root, split, layout).sequences if s.frames]
        if not sequences:
            continue
        # Few sequences: longer clips, so the calibration still sees about max_frames frames.
        per_clip = min(max(clip_frames, math.ceil(max_frames / len(sequences))), max_frames)
        count = min(len(sequences), math.ceil(max_frames / per_clip))
        spread = (len(sequences) - 1) / max(1, count - 1)
        chosen = dict.fromkeys(round(i * spread) for i in range(count))
        clips = []
        for index in chosen:
            clip: Clip = []
            for frame in sequences[index].frames[:per_clip]:
                image = read_image(frame.image)
                clip.append(_check_frame(image, f"frame {frame.image}", clip[0].shape if clip else None))
            clips.append(clip)
        return clips
    raise VidsegError(
        f"dataset root {root} has no frames in split(s) {', '.join(splits) or '(none)'}; pass a dataset root "
        "with video frames, a video or a folder of frames"
    )


def quantize_for_streaming(
    model, clips: list[Clip], prepare: Callable[[np.ndarray], torch.Tensor], activation_bits: int | None = None
):
    """The int8 streaming copy of ``model`` (``vidseg.models.quantized.QuantizedUNet``), calibrated by streaming
    each clip from the zero state; ``prepare`` turns a frame into the normalised ``[1, 3, h, w]`` input."""
    if not quantized.int8_available():
        raise VidsegError(
            "this PyTorch build lacks oneDNN's int8 convolutions (torch.ops.onednn.qconv2d_pointwise); install "
            "an official CPU build of torch>=2.3 for precision int8"
        )
    try:
        network = quantized.QuantizedUNet(model, activation_bits=activation_bits)
    except ValueError as error:
        raise VidsegError(f"precision int8: {error}; use fp32 or bf16 for this model") from error
    with torch.inference_mode():
        for clip in clips:
            state = None
            for frame in clip:
                _, state = network.step(prepare(frame), state)
    return network.freeze()


# ------------------------------------------------------------------------------------------------ ONNX


def require_onnxruntime():
    """Import onnxruntime's quantization tools, or say which extra installs them."""
    try:  # optional dependency (the onnx extra)
        import onnxruntime
        from onnxruntime import quantization
    except ImportError as error:
        raise VidsegError(
            f"int8 ONNX export needs ONNX Runtime ({error}); install it with: pip install 'vidseg[onnx]'"
        ) from error
    return onnxruntime, quantization


class _FeedReader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict]):
        self._feeds: Iterator[dict] = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def quantize_onnx(
    source: str | os.PathLike, target: str | os.PathLike, feeds: list[dict], stock: bool = False
) -> Path:
    """Write an int8 copy of the float32 ONNX step ``source`` to ``target``, calibrated on ``feeds``.

    vidseg's choices: QDQ format, int8 per-channel weights, uint8 activations (7-bit on CPUs without VNNI),
    only convolutions quantized, so the recurrent state and the gate arithmetic stay float32 and do not drift.
    ``stock=True`` runs ``quantize_static`` with its defaults (QDQ, per-channel, every supported op) instead,
    the baseline a user would get. Inputs, outputs and metadata are those of ``source``.
    """
    import onnx  # optional dependency (the onnx extra)

    _, quantization = require_onnxruntime()
    options: dict[str, Any] = {
        "quant_format": quantization.QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": quantization.QuantType.QUInt8,
        "weight_type": quantization.QuantType.QInt8,
    }
    if not stock:
        options["op_types_to_quantize"] = ["Conv", "ConvTranspose"]
        options["reduce_range"] = not quantized.has_vnni()
    target = Path(target)
    with atomic_path(target) as tmp:
        quantization.quantize_static(str(source), str(tmp), _FeedReader(feeds), **options)
        original = onnx.load(str(source), load_external_data=False)
        int8_model = onnx.load(str(tmp))
        _float_state_outputs(int8_model.graph)
        del int8_model.metadata_props[:]
        int8_model.metadata_props.extend(original.metadata_props)
        for kind in ("input", "output"):
            before = [v.name for v in getattr(original.graph, kind)]
            after = [v.name for v in getattr(int8_model.graph, kind)]
            if before != after:
                raise RuntimeError(f"quantization changed the graph's {kind}s from {before} to {after}")
        onnx.save_model(int8_model, str(tmp))
    return target


def _float_state_outputs(graph) -> None:
    """Return each output that the quantizer routed through QuantizeLinear -> DequantizeLinear (a state that
    feeds a convolution) as the float32 tensor before that pair, so the state carried from frame to frame is
    never rounded to the uint8 grid; the convolution still reads the quantized copy."""
    producers = {name: node for node in graph.node for name in node.output}
    for output in graph.output:
        dequantize = producers.get(output.name)
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        quantize = producers.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        float_name, rounded_name = quantize.input[0], f"{output.name}_dequantized"
        for node in graph.node:
            for names in (node.input, node.output):
                for index, name in enumerate(names):
                    if name == output.name:
                        names[index] = rounded_name
                    elif name == float_name:
                        names[index] = output.name
