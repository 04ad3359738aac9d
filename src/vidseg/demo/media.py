"""The demo's pictures: a held-out clip segmented by both models (a side-by-side video and a strip of stills) and
the plots of the results."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from vidseg.data.cityscapes import read_image, read_label_ids
from vidseg.data.labels import get_label_set
from vidseg.data.synthcity import CORRUPTIONS
from vidseg.data.video import VideoWriter
from vidseg.demo.evaluation import ModelResults
from vidseg.demo.plan import MODELS, DemoPlan
from vidseg.fileio import atomic_path
from vidseg.results import Figures
from vidseg.segment import Segmenter
from vidseg.viz import add_caption, colorize, frame_strip, side_by_side


@dataclass(frozen=True)
class Media:
    """What ``render_media`` wrote: file names within the demo's folder, and which clip the video shows."""

    video: str
    stills: str
    clip: str
    per_position: str
    corruption: str


def read_sequence(plan: DemoPlan, sequence: str) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Frames (uint8 RGB), ground-truth class maps and corruption codes of one validation sequence."""
    meta = json.loads((plan.data_root / "synthcity.json").read_text())
    codes = meta["sequences"]["val"][sequence]["corruption"]
    city = sequence.split("_")[0]
    lut = get_label_set("cityscapes").lut
    frames, labels = [], []
    for index in range(plan.frames):
        stem = f"{sequence}_{index:06d}"
        frames.append(read_image(plan.data_root / "leftImg8bit_sequence" / "val" / city / f"{stem}_leftImg8bit.png"))
        label_ids = read_label_ids(plan.data_root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png")
        labels.append(lut[label_ids])
    return frames, labels, list(codes)


def pick_clip(plan: DemoPlan) -> tuple[str, int]:
    """The held-out sequence to show, and the corrupted frame to centre the stills on: the first sequence whose
    first corruption burst starts late enough to show clean frames before it (else the first sequence)."""
    meta = json.loads((plan.data_root / "synthcity.json").read_text())
    sequences = meta["sequences"]["val"]
    for name in sorted(sequences):
        codes = sequences[name]["corruption"]
        corrupted = [i for i, code in enumerate(codes) if code != 0]
        if corrupted and 3 <= corrupted[0] <= plan.frames - 3:
            return name, corrupted[0]
    name = sorted(sequences)[0]
    corrupted = [i for i, code in enumerate(sequences[name]["corruption"]) if code != 0]
    return name, corrupted[0] if corrupted else plan.frames // 2


def render_media(plan: DemoPlan, results: dict[str, ModelResults]) -> Media:
    """Segment a held-out clip with both models; write its video, its stills and the plots into ``plan.out``."""
    sequence, centre = pick_clip(plan)
    frames, truth, codes = read_sequence(plan, sequence)
    predictions = {name: list(Segmenter(plan.run_dir(run) / "last.pt").stream(frames)) for name, run in MODELS.items()}

    zoom = max(1, 256 // plan.size[1])

    def big(image: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)

    def panel(t: int) -> list[np.ndarray]:
        what = CORRUPTIONS[codes[t]] if codes[t] < len(CORRUPTIONS) else str(codes[t])
        return [
            add_caption(big(frames[t]), f"input t={t} ({what})"),
            add_caption(big(colorize(predictions["per-frame"][t])), "per-frame UNet"),
            add_caption(big(colorize(predictions["temporal"][t])), "temporal (cRNN)"),
            add_caption(big(colorize(truth[t])), "ground truth"),
        ]

    video = plan.out / "side_by_side.mp4"
    with VideoWriter(video, frame_rate=8, overwrite=True) as writer:
        for t in range(len(frames)):
            writer.write(side_by_side(panel(t), gap=4))

    steps = [t for t in range(centre - 2, centre + 3) if 0 <= t < len(frames)]
    columns = [panel(t) for t in steps]
    rows = [[column[kind] for column in columns] for kind in range(4)]
    stills = plan.out / "stills.png"
    with atomic_path(stills) as tmp:
        Image.fromarray(frame_strip(rows, gap=4)).save(tmp, format="PNG")

    return Media(
        video=video.name,
        stills=stills.name,
        clip=f"{sequence}, frames {steps[0]}-{steps[-1]} (corruption at frame {centre})",
        per_position=plot_per_position(plan.out / "per_position.png", results),
        corruption=plot_corruption(plan.out / "per_corruption.png", results),
    )


def plot_per_position(path: Path, results: dict[str, ModelResults]) -> str:
    """Line plot of each model's mIoU by frames seen; returns the file name."""
    figure, axes = _figure(6)
    for name, result in results.items():
        position = result.per_position
        axes.plot(position.frames_seen, [_percent(v) for v in position.miou], marker="o", label=name)
    axes.set_xlabel("frames seen (position in the sequence)")
    axes.grid(alpha=0.3)
    return _save_figure(figure, axes, path, "mIoU by number of frames seen, all held-out frames")


def plot_corruption(path: Path, results: dict[str, ModelResults]) -> str:
    """Bars of each model's mIoU on clean frames and per corruption type; returns the file name."""
    groups = ["clean", *next(iter(results.values())).corruption.types]
    figure, axes = _figure(7)
    width = 0.8 / len(results)
    for offset, (name, result) in enumerate(results.items()):
        corruption = result.corruption
        values = [_percent(corruption.clean.miou)]
        values += [_percent(_miou(corruption.types.get(kind))) for kind in groups[1:]]
        axes.bar(np.arange(len(groups)) + offset * width - 0.4 + width / 2, values, width, label=name)
    axes.set_xticks(np.arange(len(groups)), groups)
    axes.grid(axis="y", alpha=0.3)
    return _save_figure(figure, axes, path, "mIoU per corruption type, held-out frames")


def _figure(width: float) -> tuple[Figure, Axes]:
    # matplotlib's object API renders PNG without pyplot, so no backend is chosen and no figure is left open.
    figure = Figure(figsize=(width, 3.5), dpi=120)
    return figure, figure.subplots()


def _save_figure(figure: Figure, axes: Axes, path: Path, title: str) -> str:
    axes.set_ylabel("mIoU (%)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path.name


def _miou(figures: Figures | None) -> float | None:
    return None if figures is None else figures.miou


def _percent(value: float | None) -> float:
    return math.nan if value is None else 100 * value
