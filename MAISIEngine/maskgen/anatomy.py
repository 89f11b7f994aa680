"""Anatomy-size control: the ten sizes MAISI's mask generator is conditioned on, and how a request becomes them.

The official mask U-Net reads a 10-vector through cross-attention: for five organs and five tumors, the
size of that structure as a percentile in [0, 1] of its size over the training set (-1: no tumor of that
kind). A user names only some of them (`liver=0.8`); the others come from the closest real case in the
size database shipped with the model (`all_anatomy_size_conditions.json`, a list of
`{"organ_size": [10 numbers]}`): the entry with the smallest sum of absolute differences over the named
structures, with the named values then written over it. This is how NVIDIA's reference builds the
condition, so the sizes mean the same thing here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from MAISIEngine.errors import MaisiError

CONTROLLABLE: tuple[str, ...] = (
    "gallbladder",
    "liver",
    "stomach",
    "pancreas",
    "colon",
    "lung tumor",
    "pancreatic tumor",
    "hepatic tumor",
    "colon cancer primaries",
    "bone lesion",
)
"""The structures of the condition vector, in its order."""

ORGANS = CONTROLLABLE[:5]
TUMORS = CONTROLLABLE[5:]
TUMOR_LABELS: dict[str, int] = {
    "lung tumor": 23,
    "pancreatic tumor": 24,
    "hepatic tumor": 26,
    "colon cancer primaries": 27,
    "bone lesion": 128,
}
"""MAISI id of each controllable tumor."""

STRUCTURE_LABELS: dict[str, tuple[int, ...]] = {
    "gallbladder": (10,),
    "liver": (1,),
    "stomach": (12,),
    "pancreas": (4,),
    "colon": (62,),
    **{name: (label,) for name, label in TUMOR_LABELS.items()},
}
"""MAISI ids that make up each controllable structure (used to measure sizes)."""

ABSENT_TUMOR = -1.0
"""Condition value of a tumor kind the map should not contain."""

ALIASES: dict[str, str] = {
    "lung-tumor": "lung tumor",
    "pancreatic-tumor": "pancreatic tumor",
    "hepatic-tumor": "hepatic tumor",
    "liver-tumor": "hepatic tumor",
    "colon-tumor": "colon cancer primaries",
    "colon-cancer-primaries": "colon cancer primaries",
    "bone-lesion": "bone lesion",
}
"""Spellings accepted on a command line, where spaces are awkward."""

AnatomySizes = list[tuple[str, float]]


def accepted_names() -> str:
    """The structure names a user may give, for help texts and messages."""
    return ", ".join(n.replace(" ", "-") for n in CONTROLLABLE)


def canonical_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key.replace("-", " "))
    if key not in CONTROLLABLE:
        raise MaisiError(
            f"'{name}' is not a structure whose size the mask generator controls",
            f"use one of {accepted_names()}",
        )
    return key


def parse_anatomy_sizes(items: Iterable[str]) -> AnatomySizes:
    """`["liver=0.8", "pancreas=0.3"]` -> validated `[("liver", 0.8), ("pancreas", 0.3)]`."""
    pairs: AnatomySizes = []
    for item in items:
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip() or not value.strip():
            raise MaisiError(f"'{item}' is not NAME=SIZE", "write e.g. liver=0.8 (a percentile between 0 and 1)")
        try:
            size = float(value)
        except ValueError:
            raise MaisiError(f"the size in '{item}' is not a number", "write e.g. liver=0.8") from None
        pairs.append((canonical_name(name), size))
    return validate_anatomy_sizes(pairs)


def validate_anatomy_sizes(pairs: Sequence[tuple[str, float]]) -> AnatomySizes:
    """Names known, each once, sizes in [0, 1] (a tumor may be -1: absent), at most one tumor kind."""
    out: AnatomySizes = []
    seen: set[str] = set()
    for raw_name, raw_size in pairs:
        name = canonical_name(raw_name)
        size = float(raw_size)
        if name in seen:
            raise MaisiError(f"the size of {name} is given twice", "give each structure once")
        seen.add(name)
        absent_tumor = name in TUMORS and size == ABSENT_TUMOR
        if not math.isfinite(size) or (not absent_tumor and not 0.0 <= size <= 1.0):
            raise MaisiError(
                f"the size of {name} is {raw_size}, outside [0, 1]",
                "sizes are percentiles over the training population: 0 smallest, 0.5 typical, 1 largest",
            )
        out.append((name, size))
    tumors = [n for n, s in out if n in TUMORS and s != ABSENT_TUMOR]
    if len(tumors) > 1:
        raise MaisiError(f"the mask generator makes one tumor kind at a time, not {', '.join(tumors)}",
                         "ask for one tumor per map")
    return out


def load_size_database(path: str | Path) -> list[list[float]]:
    """The reference's size database: a JSON list of `{"organ_size": [10 numbers]}`."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MaisiError(f"cannot read the anatomy-size database {path}: {exc}",
                         "run `maisi weights download mask-generation` to fetch it again") from None
    rows: list[list[float]] = []
    for entry in raw if isinstance(raw, list) else []:
        sizes = entry.get("organ_size") if isinstance(entry, dict) else None
        if isinstance(sizes, list) and len(sizes) == len(CONTROLLABLE):
            rows.append([float(v) for v in sizes])
    if not rows:
        raise MaisiError(f"the anatomy-size database {path} holds no entries of {len(CONTROLLABLE)} sizes",
                         "use all_anatomy_size_conditions.json of the official model")
    return rows


def condition_vector(requested: Sequence[tuple[str, float]], database: Sequence[Sequence[float]]) -> list[float]:
    """The 10 sizes to condition on: the nearest database entry over the named sizes, then the named sizes.

    Nearest means the smallest sum of |requested - entry| over the named structures; ties go to the
    earlier entry (the reference's stable sort). With nothing named, that is the first entry.
    """
    pairs = validate_anatomy_sizes(requested)
    index = {name: i for i, name in enumerate(CONTROLLABLE)}
    wanted = [(index[name], size) for name, size in pairs]
    best = min(range(len(database)), key=lambda r: sum(abs(size - database[r][i]) for i, size in wanted))
    vector = [float(v) for v in database[best]]
    for i, size in wanted:
        vector[i] = size
    return vector


def target_tumor_label(vector: Sequence[float]) -> int | None:
    """The tumor the condition asks for (the last tumor entry that is not -1), as the reference decides it."""
    label = None
    for name in TUMORS:
        if float(vector[CONTROLLABLE.index(name)]) != ABSENT_TUMOR:
            label = TUMOR_LABELS[name]
    return label
