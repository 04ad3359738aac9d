"""Checkpoints: one file holds everything needed to resume training or to rebuild the model for inference.

Keys: ``format``, ``model_name``, ``num_classes``, ``label_set``, ``model`` (state dict), and for training runs
``config``, ``optimizer``, ``scheduler``, ``step``, ``epoch``, ``metrics``, ``rng``. Writes are atomic.
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
