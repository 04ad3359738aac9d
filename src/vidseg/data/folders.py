"""Your own clips: plain folders of frames, optional label PNGs, and a ``classes.yaml``.

Files::

    {root}/classes.yaml
    {root}/{split}/{video}/frames/*.png|jpg     frames; the number at the end of the stem orders them
    {root}/{split}/{video}/labels/{stem}.png    optional, one per labelled frame (same stem as its frame)

``classes.yaml``::

    name: mydata            # optional: the label set's name (default "folders")
    classes:                # class index = position in the list
      - {name: road, color: [128, 64, 128]}
      - {name: car, color: [0, 0, 142]}
    ignore: 255             # optional: label value that is ignored (default 255)
    fps: 30                 # optional: frame rate of the raw frame numbers

A label PNG holds class indices in one channel, or colours of ``classes`` (RGB, decoded; other colours are
ignored). Frames without a label are context for windows; a label without its frame is an error. Stems without
a trailing number are numbered by their order; sequences split where the numbers jump.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from vidseg.data.files import list_dirs, list_images
from vidseg.data.index import Frame, LabelDecoder, Layout, VideoIndex, split_runs
from vidseg.data.labels import IGNORE_INDEX, LabelSet, make_label_set
from vidseg.errors import VidsegError

CLASSES_FILE = "classes.yaml"
FRAMES = "frames"
LABELS = "labels"
NUMBER = re.compile(r"(\d+)$")


def detect(root: Path) -> bool:
    return (root / CLASSES_FILE).is_file()


def splits(root: Path) -> list[str]:
    found = []
    for name in list_dirs(root):
        if any((root / name / video / FRAMES).is_dir() for video in list_dirs(root / name)):
            found.append(name)
    return found


def read_classes(root: Path) -> dict[str, Any]:
    """The validated content of ``classes.yaml``: name, classes [(name, colour)], ignore, fps."""
    path = root / CLASSES_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise VidsegError(f"{path} does not exist; the folders layout needs it (see vidseg.data.folders)") from None
    except (OSError, yaml.YAMLError) as error:
        raise VidsegError(f"cannot read {path}: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list) or not raw["classes"]:
        raise VidsegError(f"{path}: expected a 'classes' list of {{name, color}} entries")
    classes = []
    for number, entry in enumerate(raw["classes"]):
        colour = entry.get("color", entry.get("colour")) if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not isinstance(colour, list)
            or len(colour) != 3
            or not all(isinstance(c, int) and 0 <= c <= 255 for c in colour)
        ):
            raise VidsegError(
                f"{path}: class {number} must be {{name: TEXT, color: [R, G, B]}} with values 0..255, found {entry!r}"
            )
        classes.append((entry["name"], (colour[0], colour[1], colour[2])))
    if len(classes) > 255:
        raise VidsegError(f"{path}: {len(classes)} classes; at most 255 fit one-channel labels")
    ignore = raw.get("ignore", IGNORE_INDEX)
    if not isinstance(ignore, int) or not 0 <= ignore <= 255 or ignore < len(classes):
        raise VidsegError(
            f"{path}: ignore must be a label value in {len(classes)}..255 (not a class), found {ignore!r}"
        )
    fps = raw.get("fps")
    if fps is not None and (not isinstance(fps, int | float) or fps <= 0):
        raise VidsegError(f"{path}: fps must be a positive number, found {fps!r}")
    name = raw.get("name", "folders")
    if not isinstance(name, str):
        raise VidsegError(f"{path}: name must be text, found {name!r}")
    return {"name": name, "classes": classes, "ignore": ignore, "fps": fps}


def label_set_for(root: Path, name: str | LabelSet | None) -> LabelSet:
    if isinstance(name, LabelSet):
        return name
    spec = read_classes(root)
    if name not in (None, spec["name"]):
        raise VidsegError(f"label set {name!r} does not fit {root}: its classes.yaml declares {spec['name']!r}")
    # Every value but a class index is ignored; those above the ignore value are reported as unknown.
    return make_label_set(spec["name"], spec["classes"], max_label_id=spec["ignore"])


def build(root: Path, split: str, label_set: str | LabelSet | None = None) -> VideoIndex:
    """The index of ``split``: one sequence per video folder (split again at gaps)."""
    chosen = label_set_for(root, label_set)
    spec = read_classes(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise VidsegError(
            f"split {split!r} not found: {split_dir} does not exist; splits present: "
            f"{', '.join(splits(root)) or 'none'}"
        )
    sequences = []
    for video in list_dirs(split_dir):
        folder = split_dir / video
        images = list_images(folder / FRAMES)
        if not images:
            continue
        labels = {path.stem: path for path in list_images(folder / LABELS) if path.suffix.lower() == ".png"}
        numbered = all(NUMBER.search(path.stem) for path in images)
        frames = []
        for order, path in enumerate(images):
            match = NUMBER.search(path.stem)
            number = int(match[1]) if numbered and match else order
            frames.append(Frame(path.stem, number, path, labels.pop(path.stem, None)))
        if labels:
            stray = sorted(labels.values())
            raise VidsegError(
                f"{len(stray)} labels in {folder / LABELS} have no frame in {folder / FRAMES} (first: {stray[0].name});"
                " a label's stem must equal its frame's"
            )
        sequences.extend(split_runs(video, frames, spec["fps"]))
    if not sequences:
        raise VidsegError(f"split {split!r} is empty: no {split_dir}/VIDEO/{FRAMES}/ folder holds images")
    decoder = LabelDecoder("auto", tuple(colour for _, colour in spec["classes"]))
    return VideoIndex("folders", root, split, chosen, tuple(sequences), decoder)


LAYOUT = Layout(
    name="folders",
    expects="classes.yaml with {split}/{video}/frames/* and optional {split}/{video}/labels/*.png",
    detect=detect,
    splits=splits,
    build=build,
    label_set=label_set_for,
)
