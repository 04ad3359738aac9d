"""SynthCity: a procedural street-video dataset in the Cityscapes layout, in which memory genuinely helps.

A camera drives down a straight street (perspective road with lane marks, sidewalks, building facades with
windows, vegetation, sky), past poles with traffic signs, parked and moving cars and walking people, with
ego-motion (varying speed, lateral sway, yaw and pitch jitter). Nine classes, with Cityscapes labelIds and
colours: road, sidewalk, building, pole, traffic sign, vegetation, sky, person, car. Every frame has a label
file (``_gtFine_labelIds.png``); ``synthcity.json`` at the root marks the dataset as dense and records, per
sequence, the corruption code of every frame (frame numbers start at 0).

Temporal challenges that one frame cannot resolve but memory can. The label of an affected frame is always the
true, clean scene:

- Corruption bursts (target 30% of frames): at each clean frame after the first, a burst starts with
  probability ``BURST_START = 0.27`` and lasts 1, 2 or 3 frames (probabilities 0.4, 0.35, 0.25); at least
  one clean frame follows. The kind, uniform per burst, is one of
  ``noise``      contrast cut to 15-40% and Gaussian noise of sigma 90-140 grey levels (far above contrast);
  ``dark``       the image quantised to 1-3 grey levels above black (values 0..3);
  ``overexposed`` the same, just below white (values 252..255);
  ``blur``       horizontal motion blur over 25-45% of the width (small objects vanish);
  ``dropout``    1-3 rectangles of 35-75% of the frame's area each (they may overlap) replaced by black,
                 flat grey or random noise.
- Occlusions (target 6% of frames): at a clean frame (when no burst starts), with probability
  ``OCCLUSION_START = 0.09``, for 1-2 frames a dark out-of-focus blob (a close passer-by, a wiper) covers
  30-55% of the frame, sweeping in from one side.

Every frame also carries mild sensor noise (sigma 2.5). Frame 0 of every sequence is clean. The rates measured
on the generated frames are stored in ``synthcity.json`` (``rates.measured``) next to these targets. Output is
deterministic for a seed (same seed, same bytes): every sequence draws from its own ``numpy`` generator seeded by
(seed, split, sequence index).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypedDict

import numpy as np
from PIL import Image

from vidseg.config import FRAME_PIXEL_LIMIT
from vidseg.data.corrupt import CORRUPTIONS, corrupt_image
from vidseg.data.labels import LABEL_BY_NAME
from vidseg.errors import TerminationRequest, VidsegError
from vidseg.fileio import (
    atomic_write_text,
    check_writable,
    explained_write_errors,
    make_folder,
    remove_dead_temporaries_of,
    temporary_prefix,
)

FORMAT = "synthcity"
VERSION = 1
CLASS_NAMES = ("road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "sky", "person", "car")
CLASSES = tuple(LABEL_BY_NAME[name] for name in CLASS_NAMES)
BURST_KINDS = ("noise", "dark", "overexposed", "blur", "dropout")
BURST_START = 0.27
BURST_LENGTHS = {1: 0.4, 2: 0.35, 3: 0.25}
OCCLUSION_START = 0.09
OCCLUSION_LENGTHS = {1: 0.5, 2: 0.5}
TARGET_RATES = {"corrupted": 0.30, "occlusion": 0.06}
SPLITS = ("train", "val")

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR = (l.id for l in CLASSES)
SENSOR_NOISE = 2.5  # grey levels, on every frame
FAR = 300.0  # metres; facades and objects beyond are not drawn


class _Style(TypedDict):
    heights: tuple[float, float]  # facade height range, metres
    vegetation: float  # probability of a vegetation segment
    gap: float  # probability of a gap segment
    road_half: tuple[float, float]
    sidewalk: tuple[float, float]
    palette: tuple[tuple[int, int, int], ...]  # facade colours


# The visual styles of the "cities" (sequence i belongs to CITIES[i % 3]).
CITIES = ("oldtown", "downtown", "suburb")
STYLES: dict[str, _Style] = {
    "oldtown": _Style(heights=(8, 18), vegetation=0.12, gap=0.06, road_half=(3.0, 3.8), sidewalk=(2.0, 3.0),
                      palette=((150, 80, 60), (190, 160, 120), (200, 170, 90), (170, 120, 90), (120, 90, 80))),
    "downtown": _Style(heights=(15, 40), vegetation=0.05, gap=0.04, road_half=(4.0, 5.5), sidewalk=(2.5, 4.0),
                       palette=((140, 140, 145), (190, 190, 185), (110, 125, 140), (90, 95, 100), (170, 160, 150))),
    "suburb": _Style(heights=(5, 10), vegetation=0.4, gap=0.12, road_half=(3.0, 4.0), sidewalk=(1.8, 2.8),
                     palette=((210, 200, 170), (190, 210, 200), (220, 190, 180), (180, 180, 200), (230, 220, 200))),
}
CAR_COLOURS = ((200, 30, 30), (30, 50, 150), (230, 230, 230), (30, 30, 30), (160, 160, 165), (220, 200, 40),
               (40, 110, 60), (120, 30, 40), (210, 210, 190))
CLOTHES = ((40, 40, 60), (150, 30, 30), (60, 90, 150), (200, 180, 60), (30, 100, 60), (200, 200, 200),
           (90, 60, 40), (20, 20, 20))
SKIN = ((230, 190, 160), (200, 150, 110), (150, 100, 70), (100, 70, 50))
SIGN_COLOURS = (((200, 20, 20), (240, 240, 240)), ((230, 200, 0), (240, 240, 240)), ((20, 70, 170), (230, 230, 240)))

# Object kinds and their parts: (bottom, top, left, right) as fractions of the object's box, and a shade of the
# object's colour (or a fixed colour); all parts carry the object's label.
KIND_POLE, KIND_SIGN, KIND_CAR, KIND_PERSON = 0, 1, 2, 3

# What stands along a stretch of the street's edge (``_Scene.segment_kind``); a gap shows what lies behind it.
SEGMENT_BUILDING, SEGMENT_VEGETATION, SEGMENT_GAP = 0, 1, 2


@dataclass
class _Scene:
    height: int
    width: int
    focal: float
    horizon: float
    camera_height: float
    road_half: float
    building_line: float
    # The stretches of each street side (0 = left, 1 = right), in order along Z: where each ends and starts, what
    # stands there (SEGMENT_*), its height, colour [n, 3] and window spacing (metres).
    segment_end: list[np.ndarray]
    segment_start: list[np.ndarray]
    segment_kind: list[np.ndarray]
    segment_height: list[np.ndarray]
    segment_colour: list[np.ndarray]
    segment_window_spacing: list[np.ndarray]
    # Per frame: the camera's position (metres) and the image point its optical axis meets (pixels).
    camera_z: np.ndarray
    camera_x: np.ndarray
    principal_x: np.ndarray
    principal_y: np.ndarray
    # objects (metres; Z along the street, X across it)
    object_kind: np.ndarray  # KIND_*
    object_x: np.ndarray
    object_z: np.ndarray  # Z at frame 0
    object_speed_z: np.ndarray  # speed along Z, metres per frame
    object_width: np.ndarray
    object_height: np.ndarray
    object_base: np.ndarray  # height of the bottom above the ground (signs on their poles)
    object_colour: np.ndarray  # [n, 3]
    object_detail_colour: np.ndarray  # [n, 3] second colour (car lights, trousers, sign inside)
    object_skin_colour: np.ndarray  # [n, 3] third colour (skin)
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    road_grey: float
    sidewalk_colour: np.ndarray
    light: float


def _choice(rng: np.random.Generator, options: dict[int, float]) -> int:
    return int(rng.choice(list(options), p=list(options.values())))


def _segments(rng: np.random.Generator, style: _Style, z_from: float, z_to: float):
    ends, starts, kinds, heights, colours, window_spacings = [], [], [], [], [], []
    z = z_from
    palette = np.array(style["palette"], dtype=np.float32)
    while z < z_to:
        length = rng.uniform(6, 25)
        draw = rng.random()
        if draw < style["gap"]:
            kind = SEGMENT_GAP
        elif draw < style["gap"] + style["vegetation"]:
            kind = SEGMENT_VEGETATION
        else:
            kind = SEGMENT_BUILDING
        if kind == SEGMENT_VEGETATION:
            height = rng.uniform(3, 9)
            colour = np.array([rng.uniform(50, 90), rng.uniform(100, 140), rng.uniform(30, 60)])
        else:
            height = rng.uniform(*style["heights"])
            colour = palette[rng.integers(len(palette))] * rng.uniform(0.85, 1.1)
        starts.append(z)
        ends.append(z + length)
        kinds.append(kind)
        heights.append(height)
        colours.append(colour)
        window_spacings.append(rng.uniform(2.6, 3.6))
        z += length
    return (np.array(ends), np.array(starts), np.array(kinds), np.array(heights),
            np.clip(np.array(colours, dtype=np.float32), 0, 255), np.array(window_spacings))


def _make_scene(rng: np.random.Generator, city: str, frames: int, size: tuple[int, int]) -> _Scene:
    height, width = size
    style = STYLES[city]
    road_half = rng.uniform(*style["road_half"])
    building_line = road_half + rng.uniform(*style["sidewalk"])
    focal = width * rng.uniform(0.55, 0.75)
    horizon = height * rng.uniform(0.38, 0.48)
    camera_height = rng.uniform(1.3, 1.7)

    t = np.arange(frames, dtype=np.float64)
    mean_speed = rng.uniform(0.5, 1.5)
    speed = mean_speed * (1 + 0.3 * np.sin(rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3)))
    camera_z = np.concatenate([[0.0], np.cumsum(speed)[:-1]])
    lane = road_half / 2
    camera_x = lane + rng.uniform(0, 0.5) * np.sin(rng.uniform(0.05, 0.25) * t + rng.uniform(0, 6.3))
    principal_x = width / 2 + width * rng.uniform(0, 0.03) * np.sin(rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
    principal_y = horizon + height * rng.uniform(0, 0.012) * np.sin(rng.uniform(0.5, 1.5) * t + rng.uniform(0, 6.3))

    z_end = camera_z[-1] + FAR + 30
    sides = [_segments(rng, style, -30.0, z_end) for _ in range(2)]

    objects: list[tuple] = []  # one row per object: the _Scene object_* fields in their order

    def add(kind, x, z, speed_z, width, height, base, colour, colour2=(0, 0, 0), colour3=(0, 0, 0)):
        objects.append((kind, x, z, speed_z, width, height, base, colour, colour2, colour3))

    for side in (-1, 1):
        z = rng.uniform(0, 15)
        while z < z_end:  # poles, half of them with a sign
            pole_h = rng.uniform(4.5, 8.0)
            x = side * (road_half + rng.uniform(0.3, 0.6))
            grey = rng.uniform(110, 160)
            add(KIND_POLE, x, z, 0.0, rng.uniform(0.15, 0.25), pole_h, 0.0, (grey, grey, grey))
            if rng.random() < 0.5:
                outer, inner = SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))]
                sign_size = rng.uniform(0.6, 0.9)
                add(KIND_SIGN, x, z - 0.05, 0.0, sign_size, sign_size, rng.uniform(2.2, pole_h - sign_size),
                    outer, inner)
            z += rng.uniform(12, 30)
        z = rng.uniform(-10, 10)
        while z < z_end:  # parked cars along the curb
            if rng.random() < 0.6:
                colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
                add(KIND_CAR, side * (road_half - 1.1), z, 0.0, rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6), 0.0,
                    colour, (200, 20, 20) if side > 0 else (230, 230, 190))
            z += rng.uniform(5.5, 14)
        z = rng.uniform(-5, 10)
        while z < z_end:  # people on the sidewalk
            x = side * rng.uniform(road_half + 0.5, building_line - 0.3)
            add(KIND_PERSON, x, z, rng.choice([-1, 1]) * rng.uniform(0.03, 0.12), rng.uniform(0.45, 0.6),
                rng.uniform(1.55, 1.95), 0.0, CLOTHES[rng.integers(len(CLOTHES))],
                CLOTHES[rng.integers(len(CLOTHES))], SKIN[rng.integers(len(SKIN))])
            z += rng.uniform(4, 20)
    for _ in range(rng.integers(3, 8)):  # moving cars: oncoming, or ahead in the camera's lane and pulling away
        oncoming = rng.random() < 0.5
        colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
        speed_z = -rng.uniform(0.5, 1.8) if oncoming else mean_speed * rng.uniform(1.0, 1.4)
        add(KIND_CAR, (-lane if oncoming else lane) + rng.uniform(-0.3, 0.3),
            rng.uniform(8, 150) if oncoming else rng.uniform(12, 120), speed_z, rng.uniform(1.7, 1.95),
            rng.uniform(1.4, 1.7), 0.0, colour, (230, 230, 190) if oncoming else (200, 20, 20))

    (object_kind, object_x, object_z, object_speed_z, object_width, object_height, object_base, object_colour,
     object_detail_colour, object_skin_colour) = zip(*objects)
    tint = rng.uniform(0.85, 1.15, 3)
    return _Scene(
        height=height, width=width, focal=focal, horizon=horizon, camera_height=camera_height,
        road_half=road_half, building_line=building_line,
        segment_end=[s[0] for s in sides], segment_start=[s[1] for s in sides], segment_kind=[s[2] for s in sides],
        segment_height=[s[3] for s in sides], segment_colour=[s[4] for s in sides],
        segment_window_spacing=[s[5] for s in sides],
        camera_z=camera_z, camera_x=camera_x, principal_x=principal_x, principal_y=principal_y,
        object_kind=np.array(object_kind), object_x=np.array(object_x), object_z=np.array(object_z),
        object_speed_z=np.array(object_speed_z), object_width=np.array(object_width),
        object_height=np.array(object_height), object_base=np.array(object_base),
        object_colour=np.array(object_colour, dtype=np.float32),
        object_detail_colour=np.array(object_detail_colour, dtype=np.float32),
        object_skin_colour=np.array(object_skin_colour, dtype=np.float32),
        sky_top=np.array([70, 120, 190], dtype=np.float32) * tint,
        sky_horizon=np.array([200, 215, 230], dtype=np.float32) * np.sqrt(tint),
        road_grey=rng.uniform(70, 105),
        sidewalk_colour=np.array([175, 170, 165], dtype=np.float32) * rng.uniform(0.85, 1.05),
        light=rng.uniform(0.8, 1.1),
    )


def _hash(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """Pseudo-random values in [0, 1) that stay fixed to integer world cells (a, b)."""
    return np.modf(np.abs(np.sin(a * 12.9898 + b * 78.233)) * 43758.5453)[0].astype(np.float32)


def _render_background(scene: _Scene, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground, facades and sky of frame t: float32 RGB [H, W, 3] and labelIds [H, W]."""
    height, width, focal = scene.height, scene.width, scene.focal
    camera_z, camera_x, camera_height = scene.camera_z[t], scene.camera_x[t], scene.camera_height
    u = np.arange(width, dtype=np.float64) + 0.5 - scene.principal_x[t]
    v = np.arange(height, dtype=np.float64) + 0.5 - scene.principal_y[t]

    # Facades: planes x = -building_line (left) and x = +building_line (right); one depth per column.
    with np.errstate(divide="ignore", invalid="ignore"):
        plane_x = np.where(u > 0, scene.building_line, -scene.building_line)
        facade_depth = np.where(u != 0, focal * (plane_x - camera_x) / u, np.inf)
    facade_depth[(facade_depth <= 0) | (facade_depth > FAR)] = np.inf
    facade_z = camera_z + facade_depth
    right = u > 0
    column_height = np.zeros(width)
    column_colour = np.zeros((width, 3), dtype=np.float32)
    column_kind = np.full(width, SEGMENT_GAP)
    column_offset = np.zeros(width)
    column_window_spacing = np.ones(width)
    for side in (0, 1):
        columns = np.flatnonzero((right == bool(side)) & np.isfinite(facade_z))
        ends = scene.segment_end[side]
        index = np.minimum(np.searchsorted(ends, facade_z[columns]), len(ends) - 1)
        column_height[columns] = scene.segment_height[side][index]
        column_colour[columns] = scene.segment_colour[side][index]
        column_kind[columns] = scene.segment_kind[side][index]
        column_offset[columns] = facade_z[columns] - scene.segment_start[side][index]
        column_window_spacing[columns] = scene.segment_window_spacing[side][index]
    facade_depth[column_kind == SEGMENT_GAP] = np.inf
    finite = np.isfinite(facade_depth)
    depth_safe = np.where(finite, facade_depth, 0.0)
    facade_y = camera_height - v[:, None] * depth_safe[None, :] / focal  # height above ground of the facade point

    with np.errstate(divide="ignore"):
        ground_depth = np.where(v > 0, focal * camera_height / v, np.inf)
    # A tall vegetation top is ragged: its height varies with position along the street.
    facade_z = np.where(finite, facade_z, 0.0)
    ragged = 1.5 * _hash(np.floor(facade_z * 2), 3.0) - 0.75
    top = column_height + np.where(column_kind == SEGMENT_VEGETATION, ragged, 0.0)
    ground_nearer = ground_depth[:, None] < facade_depth[None, :]
    facade = finite[None, :] & (facade_y >= 0) & (facade_y <= top[None, :]) & ~ground_nearer
    ground = (v[:, None] > 0) & ~facade

    labels = np.full((height, width), SKY, dtype=np.uint8)
    image = np.empty((height, width, 3), dtype=np.float32)
    sky_t = np.clip(-v / max(scene.principal_y[t], 1.0), 0, 1).astype(np.float32)[:, None, None]
    image[:] = scene.sky_horizon * (1 - sky_t) + scene.sky_top * sky_t

    # Ground: world coordinates of every ground pixel give road/sidewalk, lane marks and texture.
    rows, cols = np.nonzero(ground)
    pixel_depth = np.minimum(ground_depth[rows], FAR * 4)
    ground_x = camera_x + u[cols] * pixel_depth / focal
    ground_z = camera_z + pixel_depth
    on_road = np.abs(ground_x) < scene.road_half
    grain = _hash(np.floor(ground_x * 4), np.floor(ground_z * 4))
    shade = np.where(on_road, scene.road_grey, 0.0) + 12 * grain
    colour = np.where(on_road[:, None], shade[:, None], scene.sidewalk_colour * (0.92 + 0.1 * grain[:, None]))
    centre_mark = (np.abs(ground_x) < 0.1) & (np.mod(ground_z, 9.0) < 4.0)
    edge_mark = np.abs(np.abs(ground_x) - (scene.road_half - 0.25)) < 0.08
    colour[on_road & (centre_mark | edge_mark)] = 215.0
    tile = (np.mod(ground_x, 1.2) < 0.06) | (np.mod(ground_z, 1.2) < 0.06)
    colour[~on_road & tile] *= 0.85
    image[rows, cols] = colour
    labels[rows, cols] = np.where(on_road, ROAD, SIDEWALK)

    # Facades: windows on buildings, leafy texture on vegetation; the left side is lit, the right in shade.
    rows, cols = np.nonzero(facade)
    y = facade_y[rows, cols]
    kind = column_kind[cols]
    offset = column_offset[cols]
    spacing = column_window_spacing[cols]
    base = column_colour[cols] * np.where(right[cols], 0.8, 1.0)[:, None]
    window = (y > 3.0) & (np.mod(offset, spacing) > 0.3 * spacing) & (np.mod(offset, spacing) < 0.75 * spacing)
    window &= np.mod(y, spacing) > 0.35 * spacing
    window &= np.mod(y, spacing) < 0.8 * spacing
    building_colour = np.where(window[:, None], np.array([45, 55, 70], dtype=np.float32), base)
    building_colour = np.where((y < 3.0)[:, None], base * 0.75, building_colour)
    leaves = 0.6 + 0.7 * _hash(np.floor(facade_z[cols] * 3), np.floor(y * 3))
    is_vegetation = kind == SEGMENT_VEGETATION
    image[rows, cols] = np.where(is_vegetation[:, None], base * leaves[:, None], building_colour)
    labels[rows, cols] = np.where(is_vegetation, VEGETATION, BUILDING)
    return image, labels


def _fill(image, labels, box, fractions, colour, label_id):
    """Paint the part ``fractions`` = (bottom, top, left, right) of the pixel ``box`` = (top, bottom, left,
    right) edges (floats)."""
    top, bottom, left, right = box
    bottom_f, top_f, left_f, right_f = fractions
    row_start = math.floor(bottom - (bottom - top) * top_f + 0.5)
    row_end = max(math.floor(bottom - (bottom - top) * bottom_f + 0.5), row_start + 1)
    column_start = math.floor(left + (right - left) * left_f + 0.5)
    column_end = max(math.floor(left + (right - left) * right_f + 0.5), column_start + 1)
    row_start, column_start = max(row_start, 0), max(column_start, 0)
    row_end, column_end = min(row_end, image.shape[0]), min(column_end, image.shape[1])
    if row_end > row_start and column_end > column_start:
        image[row_start:row_end, column_start:column_end] = colour
        labels[row_start:row_end, column_start:column_end] = label_id


def _render_objects(scene: _Scene, t: int, image: np.ndarray, labels: np.ndarray) -> None:
    """Poles, signs, cars and people of frame t as camera-facing boxes, far to near; boxes a few pixels tall
    get no details."""
    focal, camera_height = scene.focal, scene.camera_height
    depth = scene.object_z + scene.object_speed_z * t - scene.camera_z[t]
    x = scene.object_x - scene.camera_x[t]
    inverse = focal / np.maximum(depth, 1e-3)
    left = scene.principal_x[t] + (x - scene.object_width / 2) * inverse
    right = scene.principal_x[t] + (x + scene.object_width / 2) * inverse
    top = scene.principal_y[t] + (camera_height - scene.object_base - scene.object_height) * inverse
    bottom = scene.principal_y[t] + (camera_height - scene.object_base) * inverse
    visible = (depth > 1.0) & (depth < FAR) & (right > 0) & (left < scene.width) & (bottom - top >= 1.5)
    order = np.flatnonzero(visible)[np.argsort(-depth[visible], kind="stable")]
    boxes = zip(top[order].tolist(), bottom[order].tolist(), left[order].tolist(), right[order].tolist())
    for i, box in zip(order.tolist(), boxes):
        kind = scene.object_kind[i]
        colour, colour2, colour3 = scene.object_colour[i], scene.object_detail_colour[i], scene.object_skin_colour[i]
        detailed = box[1] - box[0] >= 6
        if kind == KIND_POLE:
            _fill(image, labels, box, (0, 1, 0, 1), colour, POLE)
        elif kind == KIND_SIGN:
            _fill(image, labels, box, (0, 1, 0, 1), colour, SIGN)
            if detailed:
                _fill(image, labels, box, (0.25, 0.75, 0.25, 0.75), colour2, SIGN)
        elif kind == KIND_CAR:
            _fill(image, labels, box, (0.12, 0.6, 0, 1), colour, CAR)
            _fill(image, labels, box, (0.6, 1.0, 0.12, 0.88), colour * 0.9, CAR)
            if detailed:
                _fill(image, labels, box, (0.64, 0.93, 0.18, 0.82), (45, 55, 65), CAR)
                _fill(image, labels, box, (0.12, 0.2, 0, 1), colour * 0.6, CAR)
                for lo, hi in ((0.02, 0.14), (0.86, 0.98)):
                    _fill(image, labels, box, (0.4, 0.5, lo, hi), colour2, CAR)
            for lo, hi in ((0.03, 0.2), (0.8, 0.97)):
                _fill(image, labels, box, (0.0, 0.22, lo, hi), (20, 20, 20), CAR)
        elif detailed:
            for lo, hi in ((0.2, 0.45), (0.55, 0.8)):
                _fill(image, labels, box, (0.0, 0.46, lo, hi), colour2, PERSON)
            _fill(image, labels, box, (0.45, 0.83, 0.08, 0.92), colour, PERSON)
            _fill(image, labels, box, (0.83, 1.0, 0.3, 0.7), colour3, PERSON)
        else:
            _fill(image, labels, box, (0.0, 0.46, 0.2, 0.8), colour2, PERSON)
            _fill(image, labels, box, (0.45, 1.0, 0.1, 0.9), colour, PERSON)


def _burst_codes(rng: np.random.Generator, frames: int) -> np.ndarray:
    codes = np.zeros(frames, dtype=np.int64)
    t = 1
    while t < frames:
        if rng.random() < BURST_START:
            kind = CORRUPTIONS.index(BURST_KINDS[rng.integers(len(BURST_KINDS))])
            length = _choice(rng, BURST_LENGTHS)
        elif rng.random() < OCCLUSION_START:
            kind = CORRUPTIONS.index("occlusion")
            length = _choice(rng, OCCLUSION_LENGTHS)
        else:
            t += 1
            continue
        codes[t : t + length] = kind
        t += length + 1
    return codes


def render_sequence(
    seed: int | np.random.SeedSequence, frames: int, size: tuple[int, int], city: str = "oldtown"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One SynthCity sequence: uint8 images ``[F, H, W, 3]``, labelIds ``[F, H, W]`` and corruption codes
    ``[F]`` (indices into CORRUPTIONS). Deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    scene = _make_scene(rng, city, frames, size)
    codes = _burst_codes(rng, frames)
    images = np.empty((frames, *size, 3), dtype=np.uint8)
    labels = np.empty((frames, *size), dtype=np.uint8)
    step = 0
    for t in range(frames):
        image, label = _render_background(scene, t)
        _render_objects(scene, t, image, label)
        image *= scene.light
        image += rng.standard_normal(image.shape, dtype=np.float32) * SENSOR_NOISE
        step = step + 1 if t > 0 and codes[t] == codes[t - 1] else 0
        if codes[t]:
            image = corrupt_image(rng, image, CORRUPTIONS[codes[t]], step)
        np.clip(image, 0, 255, out=image)
        images[t] = (image + 0.5).astype(np.uint8)
        labels[t] = label
    return images, labels, codes


def sequence_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed of sequence ``index`` of ``split``: independent of how many sequences are generated."""
    return np.random.SeedSequence([seed, SPLITS.index(split), index])


def sequence_id(index: int) -> tuple[str, int]:
    """(city, sequence number) of the ``index``-th sequence of a split."""
    return CITIES[index % len(CITIES)], index // len(CITIES)


def _colour_lut() -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.uint8)
    for label in CLASSES:
        lut[label.id] = label.color
    return lut


def _write_sequence(job: tuple) -> tuple[str, str, list[int]]:
    out, split, index, seed, frames, size, colour = job
    city, number = sequence_id(index)
    images, labels, codes = render_sequence(sequence_seed(seed, split, index), frames, size, city)
    image_dir = out / "leftImg8bit_sequence" / split / city
    label_dir = out / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    lut = _colour_lut() if colour else None
    for t in range(frames):
        name = f"{city}_{number:06d}_{t:06d}"
        Image.fromarray(images[t]).save(image_dir / f"{name}_leftImg8bit.png", compress_level=1)
        Image.fromarray(labels[t]).save(label_dir / f"{name}_gtFine_labelIds.png", compress_level=1)
        if lut is not None:
            Image.fromarray(lut[labels[t]]).save(label_dir / f"{name}_gtFine_color.png", compress_level=1)
    return split, f"{city}_{number:06d}", codes.tolist()


# Bounds of what a synthcity.json may claim; a file beyond them is damaged, not a dataset.
MAX_META_SEQUENCES = 1_000_000
MAX_META_FRAMES = 100_000


def validate_metadata(meta: Any, path: str | os.PathLike) -> dict:
    """Check the types, ranges and lengths of a ``synthcity.json`` that a dataset reader will rely on and
    return it; VidsegError naming the file and the key otherwise."""
    advice = "regenerate the dataset with `vidseg synth`"

    def fail(key: str, expected: str, found: Any) -> NoReturn:
        shown = repr(found) if len(repr(found)) <= 60 else repr(found)[:57] + "..."
        raise VidsegError(f"{path}: {key}: expected {expected}, found {shown}; {advice}")

    def count(value: Any, key: str, low: int, high: int) -> int:
        if type(value) is not int or not low <= value <= high:
            fail(key, f"an integer in {low}..{high:,}", value)
        return value

    if not isinstance(meta, dict):
        fail("(top level)", "a JSON object", type(meta).__name__)
    names = meta.get("corruptions", list(CORRUPTIONS))
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        fail("corruptions", "a non-empty list of names", names)
    if "size" in meta:
        size = meta["size"]
        if not isinstance(size, list) or len(size) != 2:
            fail("size", "[height, width]", size)
        height = count(size[0], "size[0]", 1, FRAME_PIXEL_LIMIT)
        count(size[1], "size[1]", 1, FRAME_PIXEL_LIMIT // height)
    frames = None
    if "frames_per_sequence" in meta:
        frames = count(meta["frames_per_sequence"], "frames_per_sequence", 1, MAX_META_FRAMES)
    if "splits" in meta:
        if not isinstance(meta["splits"], dict):
            fail("splits", "an object of sequence counts", meta["splits"])
        for split, number in meta["splits"].items():
            count(number, f"splits.{split}", 0, MAX_META_SEQUENCES)
    sequences = meta.get("sequences")
    if not isinstance(sequences, dict):
        fail("sequences", "an object {split: {sequence: {corruption: [codes]}}}", sequences)
    for split, entries in sequences.items():
        if not isinstance(entries, dict) or len(entries) > MAX_META_SEQUENCES:
            fail(f"sequences.{split}", f"an object of at most {MAX_META_SEQUENCES:,} sequences", entries)
        for name, entry in entries.items():
            key = f"sequences.{split}.{name}"
            if not isinstance(entry, dict):
                fail(key, "an object {corruption: [codes]}", entry)
            codes = entry.get("corruption")
            if codes is None:
                continue
            if not isinstance(codes, list) or len(codes) > MAX_META_FRAMES:
                fail(f"{key}.corruption", f"a list of at most {MAX_META_FRAMES:,} codes", codes)
            if frames is not None and len(codes) != frames:
                fail(f"{key}.corruption", f"{frames} codes (frames_per_sequence)", f"{len(codes)} codes")
            for index, code in enumerate(codes):
                if type(code) is not int or not 0 <= code < len(names):
                    fail(f"{key}.corruption[{index}]", f"a code in 0..{len(names) - 1} (index into corruptions)", code)
    return meta


def generate(
    out: str | os.PathLike,
    sequences: int,
    frames: int,
    size: tuple[int, int],
    seed: int = 0,
    val_sequences: int | None = None,
    colour: bool = False,
    workers: int = 1,
    overwrite: bool = False,
) -> dict:
    """Write a SynthCity dataset to ``out`` and return its ``synthcity.json`` content.

    Args:
        out: dataset root to create; it appears complete or not at all (written beside it, then renamed).
        sequences: training sequences.
        frames: frames per sequence.
        size: (height, width) of every frame.
        seed: the same seed gives byte-identical files.
        val_sequences: validation sequences (default: sequences // 4, at least 1).
        colour: also write ``_gtFine_color.png`` files (Cityscapes colours).
        workers: processes rendering sequences in parallel (the output does not depend on it).
        overwrite: replace an existing SynthCity dataset at ``out``.
    """
    out = Path(out)
    height, width = int(size[0]), int(size[1])
    if sequences < 1 or frames < 1 or height < 8 or width < 8:
        raise ValueError(f"need sequences >= 1, frames >= 1 and size >= 8x8; got {sequences}, {frames}, {size}")
    val_sequences = max(1, sequences // 4) if val_sequences is None else int(val_sequences)
    if out.exists() and not out.is_dir():
        raise VidsegError(f"{out} is a file; --out must name a folder for the dataset")
    check_writable(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise VidsegError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
        if not (out / "synthcity.json").is_file():
            raise VidsegError(f"{out} is not a SynthCity dataset (no synthcity.json); not replacing it")
    counts = {"train": sequences, "val": val_sequences}
    remove_dead_temporaries_of(out)  # what a killed earlier run left
    partial = out.parent / f"{temporary_prefix(out.name)}partial"
    shutil.rmtree(partial, ignore_errors=True)
    jobs = [
        (partial, split, index, seed, frames, (height, width), colour)
        for split in SPLITS
        for index in range(counts[split])
    ]
    try:
        make_folder(partial, output=out)
        with explained_write_errors(out):
            if workers > 1:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    results = list(pool.map(_write_sequence, jobs))
            else:
                results = []
                for job in jobs:
                    TerminationRequest.check()
                    results.append(_write_sequence(job))
        meta = _metadata(results, seed, (height, width), frames, counts)
        atomic_write_text(partial / "synthcity.json", json.dumps(meta, indent=1))
        if out.exists():
            old = out.parent / f"{temporary_prefix(out.name)}old"
            out.rename(old)
            partial.rename(out)
            shutil.rmtree(old)
        else:
            partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return meta


def _metadata(results, seed, size, frames, counts) -> dict:
    sequences: dict[str, dict] = {split: {} for split in SPLITS}
    for split, key, codes in results:
        sequences[split][key] = {"corruption": codes}
    measured = {}
    for split in SPLITS:
        codes = np.array([c for entry in sequences[split].values() for c in entry["corruption"]], dtype=np.int64)
        if codes.size:
            share = np.bincount(codes, minlength=len(CORRUPTIONS)) / codes.size
            measured[split] = {name: round(float(share[i]), 4) for i, name in enumerate(CORRUPTIONS)}
    return {
        "format": FORMAT,
        "version": VERSION,
        "seed": seed,
        "size": list(size),
        "frames_per_sequence": frames,
        "splits": counts,
        "classes": [
            {"name": l.name, "label_id": l.id, "train_id": l.train_id, "color": list(l.color)} for l in CLASSES
        ],
        "corruptions": list(CORRUPTIONS),
        "rates": {
            "target": {
                **TARGET_RATES,
                "burst_start": BURST_START,
                "burst_lengths": BURST_LENGTHS,
                "occlusion_start": OCCLUSION_START,
                "occlusion_lengths": OCCLUSION_LENGTHS,
            },
            "measured": measured,
        },
        "sequences": sequences,
    }
