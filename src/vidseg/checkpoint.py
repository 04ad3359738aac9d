"""Checkpoints: one file holds everything needed to resume training or to rebuild the model for inference.

Keys: ``format``, ``model_name``, ``num_classes``, ``label_set``, ``model`` (state dict), and for training runs
``config``, ``optimizer``, ``scheduler``, ``step``, ``epoch``, ``metrics``, ``rng``, ``label_set_spec`` (the
label set's names, colours and raw-code mapping: ``checkpoint_label_set``) and ``working_size`` ([height, width]
the model was trained at). Writes are atomic.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from vidseg.errors import VidsegError
from vidseg.fileio import atomic_path

FORMAT = "vidseg-checkpoint-v1"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temporary file, fsync, rename)."""
    payload = {"format": FORMAT, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint``; raise VidsegError naming the file if it is unusable."""
    path = Path(path)
    if not path.exists():
        raise VidsegError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise VidsegError(f"checkpoint {path} is a directory; pass a .pt file such as {path / 'best.pt'}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise VidsegError(
            f"checkpoint {path} is truncated or corrupt ({type(error).__name__}: {error}); "
            "use another checkpoint of the run (last.pt, best.pt or a periodic one)"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise VidsegError(f"{path} is not a vidseg checkpoint (expected format {FORMAT!r}, found {found!r})")
    for key in ("model_name", "num_classes", "model"):
        if key not in payload:
            raise VidsegError(f"checkpoint {path} lacks the key {key!r}; it was not written by vidseg")
    return payload


def model_from_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike = "<checkpoint>"):
    """Build the checkpoint's model and load its weights; raise VidsegError on any mismatch."""
    from vidseg.models import build_model

    try:
        model = build_model(checkpoint["model_name"], num_classes=int(checkpoint["num_classes"]))
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
    from vidseg.data.labels import get_label_set, label_set_from_spec

    spec = checkpoint.get("label_set_spec")
    num_classes = int(checkpoint["num_classes"])
    if spec is not None:
        label_set = label_set_from_spec(spec)
    else:
        name = checkpoint.get("label_set") or ("report" if num_classes == 20 else "cityscapes")
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


def checkpoint_working_size(checkpoint: dict[str, Any]) -> tuple[int, int] | None:
    """(height, width) the checkpoint's model was trained at, if recorded."""
    size = checkpoint.get("working_size") or (checkpoint.get("config") or {}).get("data", {}).get("size")
    return (int(size[0]), int(size[1])) if size else None
