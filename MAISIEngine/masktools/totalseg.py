"""TotalSegmentator label maps to MAISI label maps, by the shipped mapping table.

Users often have TotalSegmentator output for their CTs. Its "total" task (v2: 117 classes, v1: 104)
names the same anatomy MAISI does, with other ids; `data/totalsegmentator_to_maisi.json` holds the
class table (read from TotalSegmentator's own `class_map`) and the MAISI id of each class. Classes
MAISI has no label for are dropped to background and listed in the report, as are ids the table
does not know, so a user sees exactly what did not carry over.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from MAISIEngine.errors import MaisiError

TABLE_FILE = "totalsegmentator_to_maisi.json"
_VERSION_ALIASES = {"v2": "v2", "2": "v2", "total": "v2", "v1": "v1", "1": "v1", "total_v1": "v1"}
_SLAB = 16  # slices processed at once, so a 512^3 map never needs a full int64 copy


@dataclass(frozen=True)
class TotalSegClass:
    """One TotalSegmentator class and the MAISI label it becomes (None: no MAISI equivalent)."""

    ts_id: int
    name: str
    maisi_id: int | None
    maisi_name: str | None
    note: str | None = None


@dataclass
class ClassCount:
    """A value found in the input, how many voxels carry it and what it became."""

    ts_id: int
    voxels: int
    name: str | None = None
    maisi_id: int | None = None
    maisi_name: str | None = None
    note: str | None = None


@dataclass
class ImportReport:
    """What an import did: classes mapped, classes dropped (no MAISI label), unknown ids."""

    version: str
    mapped: list[ClassCount] = field(default_factory=list)
    dropped: list[ClassCount] = field(default_factory=list)
    unknown: list[ClassCount] = field(default_factory=list)
    body_voxels: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable summary, one finding per line."""
        out = [f"TotalSegmentator {self.version}: {len(self.mapped)} classes mapped to MAISI labels"]
        for item in self.dropped:
            why = f" ({item.note})" if item.note else ""
            out.append(
                f"dropped {item.name} (TotalSegmentator id {item.ts_id}, {item.voxels} voxels): no MAISI label{why}"
            )
        for item in self.unknown:
            out.append(
                f"unknown id {item.ts_id} ({item.voxels} voxels): "
                f"not a TotalSegmentator {self.version} class, set to background"
            )
        if self.body_voxels:
            out.append(f"body envelope: {self.body_voxels} voxels set to body (200)")
        return out


def normalise_version(version: str) -> str:
    key = str(version).strip().lower()
    if key not in _VERSION_ALIASES:
        raise MaisiError(f"unknown TotalSegmentator version {version!r}", "use v2 (117 classes) or v1 (104 classes)")
    return _VERSION_ALIASES[key]


@lru_cache(maxsize=2)
def mapping_table(version: str = "v2") -> dict[int, TotalSegClass]:
    """TotalSegmentator class id -> class and its MAISI label, for the "total" task of a version."""
    version = normalise_version(version)
    text = resources.files("MAISIEngine.data").joinpath(TABLE_FILE).read_text()
    rows = json.loads(text)["versions"][version]["classes"]
    return {
        int(key): TotalSegClass(int(key), row["name"], row["maisi_id"], row["maisi_name"], row.get("note"))
        for key, row in rows.items()
    }


def _lookup(table: dict[int, TotalSegClass]) -> np.ndarray:
    lut = np.zeros(max(table) + 1, dtype=np.uint8)
    for ts_id, cls in table.items():
        lut[ts_id] = cls.maisi_id or 0
    return lut


def _integer_slab(slab: np.ndarray) -> np.ndarray:
    if slab.dtype.kind == "f":
        if not np.all(np.isfinite(slab)) or not np.all(slab == np.round(slab)):
            raise MaisiError(
                "the label map holds non-integer values",
                "give TotalSegmentator's multi-label output (--ml), one integer class id per voxel",
            )
    elif slab.dtype.kind not in "iub":
        raise MaisiError(f"the label map has data type {slab.dtype}", "give an integer label map")
    return slab.astype(np.int64)


def totalseg_to_maisi(labels: np.ndarray, version: str = "v2") -> tuple[np.ndarray, ImportReport]:
    """Map a TotalSegmentator multi-label map to MAISI ids (uint8), with a report of what was lost."""
    version = normalise_version(version)
    table = mapping_table(version)
    lut = _lookup(table)
    top = lut.size - 1
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.uint8)
    counts = np.zeros(top + 1, dtype=np.int64)
    unknown: dict[int, int] = {}

    flat_in = labels.reshape(labels.shape[0], -1) if labels.ndim > 1 else labels.reshape(1, -1)
    flat_out = out.reshape(flat_in.shape)
    for start in range(0, flat_in.shape[0], _SLAB):
        slab = _integer_slab(flat_in[start : start + _SLAB])
        outside = (slab < 0) | (slab > top)
        if outside.any():
            values, numbers = np.unique(slab[outside], return_counts=True)
            for value, number in zip(values.tolist(), numbers.tolist()):
                unknown[value] = unknown.get(value, 0) + number
            slab = np.where(outside, 0, slab)
        counts += np.bincount(slab.ravel(), minlength=top + 1)
        flat_out[start : start + _SLAB] = lut[slab]

    report = ImportReport(version=version)
    for ts_id in np.nonzero(counts)[0].tolist():
        if ts_id == 0:
            continue
        voxels = int(counts[ts_id])
        cls = table.get(ts_id)
        if cls is None:
            unknown[ts_id] = unknown.get(ts_id, 0) + voxels
        elif cls.maisi_id is None:
            report.dropped.append(ClassCount(ts_id, voxels, cls.name, None, None, cls.note))
        else:
            report.mapped.append(ClassCount(ts_id, voxels, cls.name, cls.maisi_id, cls.maisi_name, cls.note))
    report.unknown = [ClassCount(int(v), n) for v, n in sorted(unknown.items())]
    return out, report
