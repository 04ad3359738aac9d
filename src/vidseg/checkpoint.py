"""Checkpoints: one file holds everything needed to resume training or to rebuild the model for inference.

Keys: ``format``, ``model_name``, ``num_classes``, ``label_set``, ``model`` (state dict), and for training runs
``config``, ``optimizer``, ``scheduler``, ``step``, ``epoch``, ``metrics``, ``rng``, ``label_set_spec`` (the
label set's names, colours and raw-code mapping: ``checkpoint_label_set``) and ``working_size`` ([height, width]
the model was trained at). Writes are atomic.

A checkpoint holds tensors and plain data only (None, bool, int, float, str, lists, tuples, dicts), and every
load uses ``torch.load(..., weights_only=True)``: loading a file can build tensors and containers but never call
code named in the file, so a downloaded checkpoint cannot run anything. Files written by vidseg before this
rule held NumPy arrays (the RNG state); they load through the same restricted unpickler with exactly the NumPy
array constructors allowed, which build arrays and nothing else.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def model_from_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike = "<checkpoint>"):
    """Build the checkpoint's model and load its weights; raise VidsegError on any mismatch."""
    try:
        options = architecture_options((checkpoint.get("config") or {}).get("model"))
        model = build_model(checkpoint["model_name"], num_classes=int(checkpoint["num_classes"]), **options)
    except ValueError as error:
        raise VidsegError(f"checkpoint {path}: {error}") from error
    missing, unexpected = _state_dict_differences(model.state_dict(), checkpoint["model"])
    if missing or unexpected:
        raise VidsegError(
            f"checkpoint {path} does not match model {checkpoint['model_name']} with {checkpoint['num_classes']} "
            f"classes: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise VidsegError(f"checkpoint {path} does not fit model {checkpoint['model_name']}: {error}") from error
    return model


def _state_dict_differences(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    return missing, unexpected


def checkpoint_label_set(checkpoint: dict[str, Any]):
    """The LabelSet a checkpoint's model predicts: its recorded ``label_set_spec``, else the named set (older
    checkpoints), else ``report``/``cityscapes`` by class count. VidsegError if it disagrees with the model."""
    spec = checkpoint.get("label_set_spec")
    num_classes = int(checkpoint["num_classes"])
    if spec is not None:
        label_set = label_set_from_spec(spec)
    else:
        name = checkpoint.get("label_set") or cityscapes_label_set_name(num_classes)
        try:
            label_set = get_label_set(name)
        except ValueError as error:
            raise VidsegError(f"checkpoint: {error}") from None
    if label_set.num_classes != num_classes:
        raise VidsegError(
            f"the checkpoint's model predicts {num_classes} classes but its label set {label_set.name!r} has "
            f"{label_set.num_classes}; it was not written by vidseg train"
        )
    return label_set


def checkpoint_normalization(checkpoint: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """(mean, std) per RGB channel of the frames the checkpoint's model was trained on: its recorded
    ``normalization``, else vidseg's ``transforms.MEAN`` / ``STD``. VidsegError if the record is malformed."""
    normalization = checkpoint.get("normalization")
    if not normalization:
        return list(MEAN), list(STD)
    mean, std = list(normalization["mean"]), list(normalization["std"])
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise VidsegError(f"checkpoint normalization must hold 3 means and 3 positive stds, got {normalization}")
    return mean, std


def checkpoint_working_size(checkpoint: dict[str, Any]) -> tuple[int, int] | None:
    """(height, width) the checkpoint's model was trained at, if recorded."""
    size = checkpoint.get("working_size") or (checkpoint.get("config") or {}).get("data", {}).get("size")
    return (int(size[0]), int(size[1])) if size else None
