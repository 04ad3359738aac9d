"""Checkpoints: one file holds everything needed to resume training or to rebuild the model for inference.

``TrainState`` is the one schema: a dataclass whose fields are the file's keys (``model_name``, ``num_classes``,
``label_set``, ``model``, and for training runs ``config``, ``optimizer``, ``scheduler``, ``step``, ``epoch``,
``metrics``, ``rng``, ...). Every module reads a checkpoint through it (``TrainState.load`` or
``TrainState.from_payload``); ``TrainState.save`` writes it. Writes are atomic.

A checkpoint holds tensors and plain data only (None, bool, int, float, str, lists, tuples, dicts), and every
load uses ``torch.load(..., weights_only=True)``: loading a file can build tensors and containers but never call
code named in the file, so a downloaded checkpoint cannot run anything. Files written by vidseg before this
rule held NumPy arrays (the RNG state); they load through the same restricted unpickler with exactly the NumPy
array constructors allowed, which build arrays and nothing else.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from vidseg.data.labels import cityscapes_label_set_name, get_label_set, label_set_from_spec
from vidseg.data.transforms import MEAN, STD
from vidseg.errors import VidsegError
from vidseg.fileio import atomic_path
from vidseg.models import build_model
from vidseg.models.zoo import architecture_options

FORMAT = "vidseg-checkpoint-v1"

# Plain types a checkpoint may hold besides tensors; compared by exact type, because NumPy scalars subclass
# float and int but pickle as calls into NumPy.
_PLAIN = (type(None), bool, int, float, str)
# What earlier vidseg versions pickled besides plain data: NumPy arrays (numpy.random.get_state()). The names
# cover NumPy 1 (numpy.core) and 2 (numpy._core).
_LEGACY_NUMPY_GLOBALS = {
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
}


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temporary file, fsync, rename); TypeError naming the key if it holds
    anything but tensors and plain data (such a file could not be loaded with ``weights_only=True``)."""
    payload = {"format": FORMAT, **payload}
    check_plain(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """TypeError naming the first entry of ``value`` that is neither a tensor nor plain data."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) not in _PLAIN:
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str or int keys")
            check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}; checkpoints hold only tensors and "
        "plain data (None, bool, int, float, str, lists, tuples, dicts)"
    )


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` without running any code from the file; raise
    VidsegError naming the file if it is unusable or holds anything but tensors and plain data."""
    path = Path(path)
    if not path.exists():
        raise VidsegError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise VidsegError(f"checkpoint {path} is a directory; pass a .pt file such as {path / 'best.pt'}")
    try:
        payload = _restricted_load(path, map_location)
    except pickle.UnpicklingError as error:
        unsafe = [name for name in _unsafe_globals(path) if name not in _LEGACY_NUMPY_GLOBALS]
        if unsafe:
            raise VidsegError(_refusal(path, unsafe)) from None
        raise _corrupt(path, error) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise _corrupt(path, error) from error
    except Exception as error:  # the restricted unpickler meets garbage with whatever error it runs into
        raise _corrupt(path, error) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise VidsegError(f"{path} is not a vidseg checkpoint (expected format {FORMAT!r}, found {found!r})")
    for key in ("model_name", "num_classes", "model"):
        if key not in payload:
            raise VidsegError(f"checkpoint {path} lacks the key {key!r}; it was not written by vidseg")
    return payload


def _restricted_load(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load(weights_only=True)``; for a file of an earlier vidseg version (NumPy arrays inside, nothing
    else) the same restricted load with NumPy's array constructors allowed."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        unsafe = set(_unsafe_globals(path))
        if not unsafe or not unsafe <= _LEGACY_NUMPY_GLOBALS:
            raise
    # Resolved by name: these live in numpy.core under NumPy 1 and in numpy._core under NumPy 2.
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # type: ignore[attr-defined]
    allowed: list[Any] = [np.ndarray, np.dtype, *_numpy_dtype_classes()]
    for package in ("numpy.core", "numpy._core"):  # a file names them as the NumPy that wrote it did
        allowed += [
            (multiarray._reconstruct, f"{package}.multiarray._reconstruct"),
            (multiarray.scalar, f"{package}.multiarray.scalar"),
        ]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location=map_location, weights_only=True)


def _numpy_dtype_classes() -> list[type]:
    dtypes = getattr(np, "dtypes", None)
    return [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")] if dtypes is not None else []


def _unsafe_globals(path: Path) -> list[str]:
    """The Python objects the file's pickle would call or build beyond what weights_only allows (read from the
    pickle's opcodes; nothing is run)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a readable pickle: the file is damaged, which the load reports
        return []


def _refusal(path: Path, names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return (
        f"refusing to load checkpoint {path}: it holds Python objects ({shown}) that loading would have to build "
        "by running code named in the file, and a vidseg checkpoint holds only tensors and plain data; it was "
        "not written by vidseg or it was altered. Do not load it unless you trust its source (see SECURITY in "
        "the README)"
    )


def _corrupt(path: Path, error: BaseException) -> VidsegError:
    return VidsegError(
        f"checkpoint {path} is truncated or corrupt ({type(error).__name__}: {error}); "
        "use another checkpoint of the run (last.pt, best.pt or a periodic one)"
    )


# The keys a checkpoint must hold to resume training from it.
TRAINING_KEYS = ("config", "optimizer", "scheduler", "step", "epoch", "rng")


@dataclass
class TrainState:
    """The one checkpoint schema: each field is a key of the file, in the order it is written.

    A checkpoint for inference needs only ``model_name``, ``num_classes`` and ``model``; ``vidseg train`` writes
    every field. Fields a file lacks (an older version, a hand-made checkpoint) are None or empty here.
    """

    model_name: str
    num_classes: int
    model: dict[str, torch.Tensor]
    """The model's state dict."""
    label_set: str | None = None
    """The label set's name; ``label_set_spec`` is the set itself (names, colours, raw-code mapping)."""
    label_set_spec: dict | None = None
    working_size: list[int] | None = None
    """[height, width] the model was trained at."""
    normalization: dict | None = None
    """``{"mean": [3 floats], "std": [3 floats]}`` of the frames the model was trained on."""
    config: dict | None = None
    """The resolved training config (``config_to_dict``)."""
    optimizer: dict | None = None
    scheduler: dict | None = None
    scaler: dict | None = None
    """The fp16 GradScaler's state; None without one."""
    step: int | None = None
    epoch: int | None = None
    metrics: dict = field(default_factory=dict)
    """Validation results, ``best_miou``, ``best_step``, ``val_step`` and the last ``train`` log event."""
    rng: dict | None = None
    """``rng_states()`` plus ``data_order``: {seed, epoch, batches_done} (micro-batches of the epoch consumed)."""
    train_seconds: float = 0.0
    class_weights: torch.Tensor | None = None
    copied_parameters: list[str] = field(default_factory=list)
    """Parameters copied by a warm start (trained at ``optim.copied_lr_scale``)."""
    log_events: int | None = None
    """Events of ``metrics.jsonl`` written when the checkpoint was taken."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("model_name", "num_classes", "model")
    KEYS: ClassVar[tuple[str, ...]] = (
        "model_name", "num_classes", "label_set", "label_set_spec", "working_size", "model", "normalization",
        "config", "optimizer", "scheduler", "scaler", "step", "epoch", "metrics", "rng", "train_seconds",
        "class_weights", "copied_parameters", "log_events",
    )
    """The fields in the order they are written (the order of the files written before this class existed)."""

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TrainState:
        """The state a loaded payload (``load_checkpoint``) describes; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in payload.items() if key in names and value is not None}
        missing = [key for key in cls.REQUIRED if key not in values]
        if missing:
            raise VidsegError(f"the checkpoint lacks {missing}; it was not written by vidseg")
        return cls(**values)

    def to_payload(self) -> dict[str, Any]:
        """The dict ``save_checkpoint`` writes: one key per field."""
        return {key: getattr(self, key) for key in self.KEYS}

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainState:
        """Load ``path`` with ``load_checkpoint`` (no code from the file runs)."""
        return cls.from_payload(load_checkpoint(path, map_location))

    def save(self, path: str | os.PathLike) -> None:
        save_checkpoint(path, self.to_payload())

    def missing_for_training(self) -> list[str]:
        """The training keys (``TRAINING_KEYS``) this state lacks: empty for a checkpoint training can resume."""
        return [key for key in TRAINING_KEYS if getattr(self, key) is None]

    @property
    def data_order(self) -> dict[str, int]:
        """{seed, epoch, batches_done} of a training checkpoint."""
        assert self.rng is not None, "only training checkpoints record the data order"
        return self.rng["data_order"]

    def build_model(self, path: str | os.PathLike = "<checkpoint>"):
        """The checkpoint's model with its weights; VidsegError on any mismatch."""
        try:
            options = architecture_options((self.config or {}).get("model"))
            model = build_model(self.model_name, num_classes=int(self.num_classes), **options)
        except ValueError as error:
            raise VidsegError(f"checkpoint {path}: {error}") from error
        missing, unexpected = _state_dict_differences(model.state_dict(), self.model)
        if missing or unexpected:
            raise VidsegError(
                f"checkpoint {path} does not match model {self.model_name} with {self.num_classes} "
                f"classes: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        try:
            model.load_state_dict(self.model)
        except RuntimeError as error:
            raise VidsegError(f"checkpoint {path} does not fit model {self.model_name}: {error}") from error
        return model

    def predicted_label_set(self):
        """The LabelSet the model predicts: the recorded ``label_set_spec``, else the named set (older
        checkpoints), else ``report``/``cityscapes`` by class count. VidsegError if it disagrees with the model."""
        num_classes = int(self.num_classes)
        if self.label_set_spec is not None:
            label_set = label_set_from_spec(self.label_set_spec)
        else:
            try:
                label_set = get_label_set(self.label_set or cityscapes_label_set_name(num_classes))
            except ValueError as error:
                raise VidsegError(f"checkpoint: {error}") from None
        if label_set.num_classes != num_classes:
            raise VidsegError(
                f"the checkpoint's model predicts {num_classes} classes but its label set {label_set.name!r} has "
                f"{label_set.num_classes}; it was not written by vidseg train"
            )
        return label_set

    def mean_std(self) -> tuple[list[float], list[float]]:
        """(mean, std) per RGB channel of the training frames: the recorded ``normalization``, else vidseg's
        ``transforms.MEAN`` / ``STD``. VidsegError if the record is malformed."""
        return _mean_std(self.normalization)

    def trained_size(self) -> tuple[int, int] | None:
        """(height, width) the model was trained at, if recorded."""
        return _trained_size(self.working_size, self.config)


def as_train_state(checkpoint: TrainState | Mapping[str, Any]) -> TrainState:
    """``checkpoint`` itself, or the state of a loaded payload (what ``load_checkpoint`` returns)."""
    return checkpoint if isinstance(checkpoint, TrainState) else TrainState.from_payload(checkpoint)


def model_from_checkpoint(checkpoint: TrainState | Mapping[str, Any], path: str | os.PathLike = "<checkpoint>"):
    """Build the checkpoint's model and load its weights; raise VidsegError on any mismatch."""
    return as_train_state(checkpoint).build_model(path)


def _state_dict_differences(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    return missing, unexpected


def _mean_std(normalization: Mapping[str, Any] | None) -> tuple[list[float], list[float]]:
    if not normalization:
        return list(MEAN), list(STD)
    mean, std = list(normalization["mean"]), list(normalization["std"])
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise VidsegError(f"checkpoint normalization must hold 3 means and 3 positive stds, got {normalization}")
    return mean, std


def _trained_size(working_size: list[int] | None, config: Mapping[str, Any] | None) -> tuple[int, int] | None:
    size = working_size or (config or {}).get("data", {}).get("size")
    return (int(size[0]), int(size[1])) if size else None


# ------------------------------------------------------------------------------------------ RNG states


def rng_states() -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) RNG states as tensors and plain data, as a checkpoint holds them."""
    version, internal, gauss = random.getstate()
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)  # the legacy form is a tuple
    states: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` saved (or the tuples that checkpoints of earlier versions hold)."""
    python, numpy_state = states["python"], states["numpy"]
    if isinstance(python, dict):
        python = (python["version"], tuple(python["state"].tolist()), python["gauss"])
    random.setstate(python)
    if isinstance(numpy_state, dict):
        keys = numpy_state["keys"].numpy().astype(np.uint32)
        numpy_state = ("MT19937", keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
