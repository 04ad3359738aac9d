"""ONNX export of the single-frame step, so that any ONNX runtime can stream a video.

The exported graph is ``(frame, state0, ..., stateK) -> (logits, new_state0, ..., new_stateK)``:

- ``frame``: float32 ``[batch, 3, height, width]``, RGB scaled to [0, 1] and normalised with the ``mean`` and
  ``std`` in the metadata; height, width and batch are dynamic (any size, odd ones included);
- ``state{k}``: float32 ``[batch, c_k, height_k, width_k]``, the hidden state of the k-th temporal unit (on
  encoder level ``l_k``: every level in order, or those of ``model.temporal_levels``), and last, for models with
  ``output_memory``, the memory of class probabilities (``c = num_classes``, level 0); zeros for the first frame of
  a video, then the ``new_state{k}`` returned for the previous frame;
- ``logits``: float32 ``[batch, num_classes, height, width]``.

Per-frame models (``*-none-*``) have no states: ``frame -> logits``.

The zero states for a frame of ``height x width`` have shape ``[batch, c_k, Hp / 2**l_k, Wp / 2**l_k]`` with
``Hp = max(min_padded_size, ceil(height / size_multiple) * size_multiple)`` (``Wp`` likewise); ``c_k``, ``l_k``
(``state_levels``; files without it have a unit on every level, ``l_k = k``), ``size_multiple`` and
``min_padded_size`` are in the model's metadata (``vidseg.*`` keys, read with
``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map``), and ``initial_states(path, h, w)``
computes them in Python.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim

from vidseg.checkpoint import TrainState, as_train_state
from vidseg.data.transforms import MEAN, STD
from vidseg.errors import VidsegError
from vidseg.fileio import atomic_path
from vidseg.models.unet import RecurrentUNet
from vidseg.quantize import Clip, calibration_clips, quantize_onnx, require_onnxruntime

FORMAT = "vidseg-onnx-step-v1"
DEFAULT_OPSET = 18
# The example the graph is traced with: batch 2 and sizes that need padding keep every dimension symbolic.
EXAMPLE_SHAPE = (2, 3, 45, 67)


class StepFunction(nn.Module):
    """``model.step`` as a function of tensors only: ``(frame, *states) -> (logits, *new_states)``.

    Pads the frame to the model's size multiple itself with non-negative integer arithmetic: exporters turn
    Python's floor division into ONNX ``Div``, which truncates, so the model's own ``-(-h // m) * m`` would round
    the wrong way for sizes that need padding. The model then sees a frame that needs no padding of its own.
    """

    model: RecurrentUNet

    def __init__(self, model: RecurrentUNet):
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor, *states: torch.Tensor):
        height, width = frame.shape[-2:]
        multiple = self.model.size_multiple
        minimum = self.model.padded_size(1, 1)[0]
        padded_h = max(minimum, (height + multiple - 1) // multiple * multiple)
        padded_w = max(minimum, (width + multiple - 1) // multiple * multiple)
        padded = F.pad(frame, (0, padded_w - width, 0, padded_h - height))
        logits, new_states = self.model.step(padded, states if states else None)
        logits = logits[..., :height, :width]
        if not self.model.is_temporal:
            return logits
        return (logits, *new_states)


def state_levels(model: RecurrentUNet) -> list[int]:
    """The level of each state tensor: the units' levels, then 0 for the output memory (full padded size)."""
    return list(model.temporal_levels) + ([0] if model.output_memory is not None else [])


def state_channels(model: RecurrentUNet) -> list[int]:
    """Channels of each state tensor (empty for per-frame models): the units', then the output memory's
    (``num_classes``)."""
    memory = [model.num_classes] if model.output_memory is not None else []
    return [model.channels[level] for level in model.temporal_levels] + memory


def build_metadata(model: RecurrentUNet, checkpoint: TrainState | Mapping[str, Any] | None = None) -> dict[str, str]:
    """The ``vidseg.*`` metadata stored in the ONNX file (all values are strings; lists are JSON)."""
    state = as_train_state(checkpoint) if checkpoint else None
    mean, std = state.mean_std() if state is not None else (list(MEAN), list(STD))
    metadata = {
        "format": FORMAT,
        "model_name": state.model_name if state is not None else type(model).__name__,
        "num_classes": str(model.num_classes),
        "label_set": str(state.label_set or "") if state is not None else "",
        "mean": json.dumps([float(v) for v in mean]),
        "std": json.dumps([float(v) for v in std]),
        "state_channels": json.dumps(state_channels(model)),
        "state_levels": json.dumps(state_levels(model)),
        "size_multiple": str(model.size_multiple),
        "min_padded_size": str(model.padded_size(1, 1)[0]),
        "inputs": "frame: float32 [batch, 3, height, width], RGB / 255 normalised with mean and std; "
        "state{k}: float32 [batch, state_channels[k], Hp / 2**state_levels[k], Wp / 2**state_levels[k]], zeros on "
        "the first frame",
        "state_shapes": "Hp = max(min_padded_size, ceil(height / size_multiple) * size_multiple), Wp likewise",
    }
    return {f"vidseg.{key}": value for key, value in metadata.items()}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of an ONNX file (``vidseg.*`` keys among others)."""
    import onnx  # optional dependency (the onnx extra)

    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def state_shapes(
    metadata: Mapping[str, str] | str | os.PathLike, height: int, width: int, batch: int = 1
) -> list[tuple[int, ...]]:
    """Shapes of the state inputs for frames of ``height x width`` (empty for per-frame models).

    Args:
        metadata: the ONNX file's metadata (``read_metadata``, or onnxruntime's ``custom_metadata_map``) or
            the file's path.
    """
    if isinstance(metadata, (str, os.PathLike)):
        metadata = read_metadata(metadata)
    if metadata.get("vidseg.format") != FORMAT:
        raise VidsegError(
            f"the ONNX metadata lacks vidseg.format={FORMAT!r} (found {metadata.get('vidseg.format')!r}); "
            "export the model with `vidseg export`"
        )
    channels = json.loads(metadata["vidseg.state_channels"])
    levels = json.loads(metadata.get("vidseg.state_levels") or json.dumps(list(range(len(channels)))))
    multiple = int(metadata["vidseg.size_multiple"])
    minimum = int(metadata["vidseg.min_padded_size"])
    padded_h = max(minimum, math.ceil(height / multiple) * multiple)
    padded_w = max(minimum, math.ceil(width / multiple) * multiple)
    return [(batch, c, padded_h >> level, padded_w >> level) for level, c in zip(levels, channels)]


def initial_states(
    metadata: Mapping[str, str] | str | os.PathLike, height: int, width: int, batch: int = 1
) -> list[np.ndarray]:
    """Zero float32 states for the first frame of a ``height x width`` video, in input order."""
    return [np.zeros(shape, dtype=np.float32) for shape in state_shapes(metadata, height, width, batch)]


def export_onnx(
    model: RecurrentUNet,
    path: str | os.PathLike,
    *,
    checkpoint: TrainState | Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model``'s single-frame step to ``path`` (atomically) with dynamic batch, height and width.

    Args:
        model: a ``RecurrentUNet`` (the plain model; ONNX runtimes fold BatchNorm themselves); it is copied,
            not changed.
        checkpoint: the checkpoint it came from, for the metadata (name, label set, normalisation).
        opset: ONNX opset.
    """
    import onnx  # optional dependency (the onnx extra)

    model = copy.deepcopy(model).eval().cpu().float()  # leave the caller's model where and as it was
    channels = state_channels(model)
    frame = torch.randn(*EXAMPLE_SHAPE)
    with torch.no_grad():
        _, example_states = model.step(frame)
    states = tuple(torch.zeros_like(s) for s in example_states)
    input_names = ["frame"] + [f"state{k}" for k in range(len(channels))]
    output_names = ["logits"] + [f"new_state{k}" for k in range(len(channels))]
    dynamic = {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}
    dynamic_shapes = (dynamic, tuple(dynamic for _ in states)) if states else (dynamic,)

    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            StepFunction(model).eval(),
            (frame, *states),
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    if program is None:  # only the legacy TorchScript exporter returns None
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    proto = program.model_proto
    _name_dimensions(proto, model.num_classes, channels)
    for key, value in build_metadata(model, checkpoint).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def _name_dimensions(proto, num_classes: int, channels: list[int]) -> None:
    """Give the graph's inputs and outputs readable dimension names (the exporter writes s0, s1, formulas)."""
    shapes = {"frame": ["batch", 3, "height", "width"], "logits": ["batch", num_classes, "height", "width"]}
    for k, c in enumerate(channels):
        shapes[f"state{k}"] = shapes[f"new_state{k}"] = ["batch", c, f"state{k}_height", f"state{k}_width"]
    for value in [*proto.graph.input, *proto.graph.output]:
        for dim, name in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
            if isinstance(name, str):
                dim.dim_param = name
            else:
                dim.dim_value = name


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's notes about optional packages (torchvision) and its own deprecations, which
    say nothing about the exported model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def run_onnx_sequence(path: str | os.PathLike, frames: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stream ``frames`` (float32 ``[batch, T, 3, H, W]``, normalised) through the ONNX step in onnxruntime.

    Returns:
        logits ``[batch, T, num_classes, H, W]`` and the states after the last frame.
    """
    import onnxruntime  # optional dependency (the onnx extra)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    batch, _, _, height, width = frames.shape
    states = initial_states(metadata, height, width, batch)
    outputs = []
    for t in range(frames.shape[1]):
        feed = {"frame": np.ascontiguousarray(frames[:, t], dtype=np.float32)}
        feed.update({f"state{k}": state for k, state in enumerate(states)})
        logits, *states = session.run(None, feed)
        outputs.append(logits)
    return np.stack(outputs, axis=1), states


def max_difference_to_model(
    path: str | os.PathLike, model: nn.Module, size: tuple[int, int] = (50, 70), num_frames: int = 3, seed: int = 0
) -> float:
    """Largest absolute logit difference between the ONNX file in onnxruntime and ``model`` in PyTorch over a
    random clip of ``num_frames`` frames of ``size`` (a size that needs padding unless told otherwise)."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(1, num_frames, 3, *size, generator=generator)
    with torch.no_grad():
        expected, _ = copy.deepcopy(model).eval().cpu().float()(frames)
    logits, _ = run_onnx_sequence(path, frames.numpy())
    return float(np.abs(logits - expected.numpy()).max())


def onnx_calibration_feeds(session, clips: list[Clip], prepare: Callable[[np.ndarray], np.ndarray]) -> list[dict]:
    """The inputs the float32 ONNX step sees when it streams each clip from zero states: one feed per frame."""
    metadata = session.get_modelmeta().custom_metadata_map
    feeds = []
    for clip in clips:
        states: list[np.ndarray] | None = None
        for frame in clip:
            x = prepare(frame)
            if states is None:
                states = initial_states(metadata, x.shape[-2], x.shape[-1], x.shape[0])
            feed = {"frame": x, **{f"state{k}": s for k, s in enumerate(states)}}
            feeds.append(feed)
            states = session.run(None, feed)[1:]
    return feeds


def export_int8_onnx(
    model: RecurrentUNet,
    path: str | os.PathLike,
    *,
    checkpoint: TrainState | Mapping[str, Any] | None = None,
    calibration: Any = None,
    size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    stock: bool = False,
) -> Path:
    """Export ``model``'s step as an int8 ONNX file with the inputs, outputs and metadata of ``export_onnx``.

    The float32 export is quantized statically (``vidseg.quantize.quantize_onnx``) on ranges recorded while
    ONNX Runtime streams the calibration clips (``vidseg.quantize.calibration_clips``: frames, a video, a
    folder of frames or a dataset root; None: the checkpoint's validation frames), resized to ``size`` if given.
    """
    onnxruntime, _ = require_onnxruntime()
    clips = calibration_clips(calibration, checkpoint)
    metadata = build_metadata(model, checkpoint)
    mean = np.array(json.loads(metadata["vidseg.mean"]), dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(json.loads(metadata["vidseg.std"]), dtype=np.float32).reshape(1, 3, 1, 1)

    def prepare(frame: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
        if size is not None and tuple(pixels.shape[-2:]) != tuple(size):
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
        return np.ascontiguousarray(((pixels.numpy() / 255.0 - mean) / std).astype(np.float32))

    with tempfile.TemporaryDirectory() as folder:
        fp32 = Path(folder) / "fp32.onnx"
        export_onnx(model, fp32, checkpoint=checkpoint, opset=opset)
        session = onnxruntime.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
        feeds = onnx_calibration_feeds(session, clips, prepare)
        return quantize_onnx(fp32, path, feeds, stock=stock)
