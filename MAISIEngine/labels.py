"""The MAISI label dictionary: ids, names, organ groups, tumor hosts and display colours.

Every front end and writer takes label names and colours from here, so a label looks and reads the
same in the CLI, in Slicer, in the desktop app and in DICOM SEG.
"""

from __future__ import annotations

import colorsys
import json
from functools import lru_cache
from importlib import resources

BODY = 200
"""Everything inside the body contour that has no organ label."""

TUMOR_TYPES: dict[str, int] = {
    "lung": 23,
    "pancreas": 24,
    "liver": 26,
    "colon": 27,
    "bone": 128,
}
"""Tumor type (as the CLI and front ends name it) -> MAISI label id."""

LUNG_IDS = frozenset({28, 29, 30, 31, 32})
BONE_IDS = frozenset(list(range(33, 57)) + list(range(63, 98)) + [120, 122, 127])

TUMOR_HOSTS: dict[int, frozenset[int]] = {
    23: LUNG_IDS,
    24: frozenset({4}),
    26: frozenset({1}),
    27: frozenset({62}),
    128: BONE_IDS,
}
"""Tumor label id -> the label ids of the organ that must contain it."""

ORGAN_GROUPS: dict[str, frozenset[int]] = {
    "liver": frozenset({1}),
    "spleen": frozenset({3}),
    "pancreas": frozenset({4}),
    "kidney": frozenset({5, 14}),
    "lung": LUNG_IDS,
    "brain": frozenset({22}),
    "bone": BONE_IDS,
}
"""Organ groups of the HU-median quality check (paper section 4.1; lung includes label 32)."""

REGION_NAMES = ("head-neck", "chest", "abdomen", "lower-body")
REGION_MARKERS: dict[str, frozenset[int]] = {
    "head-neck": frozenset({22, 120}),
    "chest": LUNG_IDS,
    "abdomen": frozenset({1, 2, 3, 4, 5, 14}),
    "lower-body": frozenset({93, 94}),
}
"""Body regions and the labels whose presence places a mask in them (for ddpm-ct conditioning)."""

# Hand-picked colours for the structures a user sees most; everything else gets a stable hue.
_FIXED_COLORS: dict[int, tuple[int, int, int]] = {
    1: (221, 130, 101),  # liver
    3: (157, 108, 162),  # spleen
    4: (249, 180, 111),  # pancreas
    5: (185, 102, 83),  # right kidney
    14: (185, 102, 83),  # left kidney
    6: (224, 97, 76),  # aorta
    7: (0, 151, 206),  # inferior vena cava
    10: (139, 150, 98),  # gallbladder
    12: (216, 132, 105),  # stomach
    15: (222, 154, 132),  # bladder
    19: (205, 167, 142),  # small bowel
    22: (250, 250, 225),  # brain
    23: (255, 0, 0),  # lung tumor
    24: (255, 64, 0),  # pancreatic tumor
    26: (255, 0, 128),  # hepatic tumor
    27: (255, 128, 0),  # colon cancer primaries
    57: (182, 228, 255),  # trachea
    62: (204, 168, 115),  # colon
    115: (206, 110, 84),  # heart
    121: (244, 214, 49),  # spinal cord
    122: (241, 214, 145),  # sternum
    128: (255, 0, 255),  # bone lesion
    BODY: (177, 122, 101),  # body
}


@lru_cache(maxsize=1)
def label_dict() -> dict[str, int]:
    """Label name -> id, exactly as MAISI defines it (132 anatomical ids plus body = 200)."""
    text = resources.files("MAISIEngine.data").joinpath("maisi_label_dict.json").read_text()
    return dict(json.loads(text))


@lru_cache(maxsize=1)
def label_names() -> dict[int, str]:
    """Label id -> name, background 0 included."""
    names = {v: k for k, v in label_dict().items()}
    names[0] = "background"
    return names


def valid_ids() -> frozenset[int]:
    """All ids a MAISI label map may hold (0, the used anatomical ids and body); dummies excluded."""
    return frozenset([0] + [v for k, v in label_dict().items() if not k.startswith("dummy")])


def name_of(label_id: int) -> str:
    """Name of a label id; raises KeyError for ids MAISI does not define."""
    return label_names()[int(label_id)]


def id_of(name: str) -> int:
    """Id of a label name, case-insensitive and tolerant of '_' for ' '."""
    wanted = name.strip().lower().replace("_", " ")
    for key, value in label_dict().items():
        if key.lower() == wanted:
            return value
    raise KeyError(name)


def is_bone(label_id: int) -> bool:
    return int(label_id) in BONE_IDS


def color_of(label_id: int) -> tuple[int, int, int]:
    """Display colour (0-255 RGB) of a label: anatomical for common organs, a stable hue otherwise."""
    label_id = int(label_id)
    if label_id in _FIXED_COLORS:
        return _FIXED_COLORS[label_id]
    if label_id in BONE_IDS:
        shade = 200 + (label_id * 7) % 50
        return (shade, shade - 10, shade - 40)
    if label_id in LUNG_IDS:
        return (197, 165 + (label_id - 28) * 12, 145 + (label_id - 28) * 10)
    hue = (label_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.55, 0.85)
    return (int(r * 255), int(g * 255), int(b * 255))


def color_table() -> dict[int, tuple[str, tuple[int, int, int]]]:
    """Id -> (name, colour) for every valid non-background label."""
    return {i: (name_of(i), color_of(i)) for i in sorted(valid_ids()) if i != 0}


@lru_cache(maxsize=1)
def median_hu_statistics() -> dict[str, dict[str, float]]:
    """Per-organ statistics of the median HU in real CTs (quality check, paper section 4.1)."""
    text = resources.files("MAISIEngine.data").joinpath("maisi_ct_median_hu_statistics.json").read_text()
    return dict(json.loads(text))


@lru_cache(maxsize=1)
def modality_ids() -> dict[str, int]:
    """Modality name -> class id used by the rflow diffusion model (ct = 1)."""
    text = resources.files("MAISIEngine.data").joinpath("maisi_modality_ids.json").read_text()
    return dict(json.loads(text))


def regions_present(label_ids: set[int] | frozenset[int]) -> list[str]:
    """Body regions, top to bottom, whose marker labels appear among `label_ids`."""
    return [r for r in REGION_NAMES if REGION_MARKERS[r] & set(int(i) for i in label_ids)]
