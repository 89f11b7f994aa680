"""The official MAISI mask database: find a label map that fits a request, extract it safely, resample.

NVIDIA publishes ~4000 label maps of real CTs (`all_masks_flexible_size_and_spacing_4000.zip`) with an
index (`candidate_masks_flexible_size_and_spacing_4000.json`): a list of entries, each with the mask's
path in the zip (`pseudo_label_filename`, optionally `label_filename`), the labels it holds
(`label_list`), its grid (`dim`, `spacing`) and the body regions it spans (`top_region_index`,
`bottom_region_index`, one-hot over head-neck / chest / abdomen / lower body).

A request names anatomy, optionally body regions, and the output grid. Candidates must hold all the
anatomy, span the regions and carry no tumor the user did not ask for; they are ranked by how close
their field of view is to the requested one, then by size and spacing. The best one is extracted
(never writing outside the target folder: `..`, absolute paths and links in the zip are refused),
resampled with nearest neighbour onto the requested grid (same centre and axis directions), and
refused if a requested label is lost.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import stat
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from MAISIEngine import labels as label_table
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import atomic_path
from MAISIEngine.io.nifti import Volume, read_volume
from MAISIEngine.masks import resample_labels

DB_JSON_NAME = "candidate_masks_flexible_size_and_spacing_4000.json"
DB_ZIP_NAME = "all_masks_flexible_size_and_spacing_4000.zip"
DB_FOLDER_NAME = "all_masks_flexible_size_and_spacing_4000"
TUMOR_IDS = frozenset(label_table.TUMOR_TYPES.values())
_DOWNLOAD_HINT = "run `maisi weights download masks`, or give --db-dir with the folder holding them"
_OFFICIAL_HINT = "use the official mask database"
MAX_MEMBER_BYTES = 4 << 30  # no official mask comes near this; a larger member is not a mask

REGION_ALIASES: dict[str, int] = {
    "head": 0, "neck": 0, "head-neck": 0, "head_neck": 0, "headneck": 0,
    "chest": 1, "thorax": 1,
    "abdomen": 2,
    "pelvis": 3, "lower": 3, "lower-body": 3, "lower_body": 3, "legs": 3,
}
"""Region words -> index in the database's 4-entry one-hot (order of `labels.REGION_NAMES`)."""


# --------------------------------------------------------------------------------------------------
# Entries and requests
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskEntry:
    """One database entry: where the mask is, what it holds, its grid and the regions it spans."""

    mask_path: str
    label_list: frozenset[int]
    dim: tuple[int, int, int]
    spacing: tuple[float, float, float]
    top_region: int | None
    bottom_region: int | None
    label_path: str | None = None

    @property
    def fov_mm(self) -> tuple[float, float, float]:
        return tuple(d * s for d, s in zip(self.dim, self.spacing))  # type: ignore[return-value]

    def spans(self, regions: Sequence[int]) -> bool:
        """True when every requested region lies between the entry's top and bottom region."""
        if not regions:
            return True
        if self.top_region is None or self.bottom_region is None:
            return False
        return all(self.top_region <= r <= self.bottom_region for r in regions)


def _one_hot_index(values: object) -> int | None:
    if not isinstance(values, list):
        return None
    hot = [i for i, v in enumerate(values) if v]
    return hot[0] if hot else None


def _entry_from_json(item: dict) -> MaskEntry:
    mask_path = item.get("pseudo_label_filename") or item.get("label_filename")
    if not isinstance(mask_path, str):
        raise KeyError("pseudo_label_filename")
    ids = frozenset(int(v) for v in item["label_list"])
    dim = tuple(int(abs(v)) for v in item["dim"])
    spacing = tuple(float(abs(v)) for v in item["spacing"])
    if len(dim) != 3 or len(spacing) != 3 or min(dim) <= 0 or min(spacing) <= 0:
        raise ValueError("dim/spacing")
    top, bottom = _one_hot_index(item.get("top_region_index")), _one_hot_index(item.get("bottom_region_index"))
    if top is None or bottom is None:  # derive the span from the labels present
        present = label_table.regions_present(set(ids))
        top = label_table.REGION_NAMES.index(present[0]) if present else None
        bottom = label_table.REGION_NAMES.index(present[-1]) if present else None
    label_path = item.get("label_filename") if item.get("pseudo_label_filename") else None
    return MaskEntry(mask_path, ids, dim, spacing, top, bottom, label_path)  # type: ignore[arg-type]


def load_database(db_json: str | Path) -> list[MaskEntry]:
    """Read the candidate JSON; malformed entries are skipped, a file without any valid one is refused."""
    path = Path(db_json)
    if not path.is_file():
        raise MaisiError(f"mask database index {path} does not exist", _DOWNLOAD_HINT)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MaisiError(
            f"cannot read mask database index {path.name} ({exc.__class__.__name__})", "download it again"
        ) from None
    if isinstance(data, dict):  # tolerate a wrapper object holding the list
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        raise MaisiError(f"{path.name} is not a list of mask entries", "give the official candidate masks JSON")
    entries = []
    for item in data:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            entries.append(_entry_from_json(item))
    if not entries:
        raise MaisiError(f"{path.name} holds no valid mask entry", "give the official candidate masks JSON")
    return entries


def resolve_anatomy(items: Sequence[str | int]) -> list[int]:
    """MAISI label ids for anatomy given as ids or names ("liver", "right kidney", "vertebrae_L5")."""
    ids: list[int] = []
    unknown: list[str] = []
    valid = label_table.valid_ids()
    for item in items:
        text = str(item).strip()
        try:
            value = int(text) if text.isdigit() else label_table.id_of(text)
        except KeyError:
            unknown.append(text)
            continue
        if value not in valid or value == 0:
            unknown.append(text)
        elif value not in ids:
            ids.append(value)
    if unknown:
        raise MaisiError(
            f"unknown anatomy {', '.join(unknown)}", "use MAISI label names or ids, e.g. liver, 'right kidney', 33"
        )
    if not ids:
        raise MaisiError("no anatomy requested", "name at least one structure, e.g. --anatomy liver")
    return ids


def resolve_regions(names: Sequence[str] | str | None) -> list[int]:
    """Region indices (0 head-neck .. 3 lower body) for region words."""
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    out: list[int] = []
    for name in names:
        key = str(name).strip().lower()
        if key not in REGION_ALIASES:
            raise MaisiError(f"unknown body region {name!r}", f"use {', '.join(label_table.REGION_NAMES)}")
        if REGION_ALIASES[key] not in out:
            out.append(REGION_ALIASES[key])
    return sorted(out)


def _grid(size: Sequence[int], spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    size_a = np.asarray(size, dtype=np.float64)
    spacing_a = np.asarray(spacing, dtype=np.float64)
    if size_a.shape != (3,) or np.any(size_a < 1) or np.any(size_a != np.round(size_a)):
        raise MaisiError(f"size must be three positive integers, got {list(size)}", "e.g. --size 256 256 128")
    if spacing_a.shape != (3,) or not np.all(np.isfinite(spacing_a)) or np.any(spacing_a <= 0):
        raise MaisiError(
            f"spacing must be three positive numbers (mm), got {list(spacing)}", "e.g. --spacing 1.5 1.5 2"
        )
    return size_a, spacing_a


# --------------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A database entry that satisfies the request, and how far its grid is from the requested one."""

    entry: MaskEntry
    fov_error: float
    size_error: float
    spacing_error: float

    @property
    def rank_key(self) -> tuple[float, float, str]:
        """Field of view first (to the percent), then size and spacing; the path breaks ties."""
        return (round(self.fov_error, 2), self.size_error + self.spacing_error, self.entry.mask_path)


def rank_entries(
    entries: Sequence[MaskEntry],
    anatomy: Sequence[int],
    regions: Sequence[int],
    size: Sequence[int],
    spacing: Sequence[float],
) -> list[Candidate]:
    """Candidates holding all `anatomy`, spanning `regions`, with no unrequested tumor, best first."""
    size_a, spacing_a = _grid(size, spacing)
    fov = size_a * spacing_a
    wanted = set(anatomy)
    unwanted_tumors = TUMOR_IDS - wanted
    out = []
    for entry in entries:
        if not wanted <= entry.label_list or entry.label_list & unwanted_tumors or not entry.spans(regions):
            continue
        out.append(
            Candidate(
                entry,
                fov_error=float(np.mean(np.abs(np.asarray(entry.fov_mm) - fov) / fov)),
                size_error=float(np.mean(np.abs(np.asarray(entry.dim) - size_a) / size_a)),
                spacing_error=float(np.mean(np.abs(np.asarray(entry.spacing) - spacing_a) / spacing_a)),
            )
        )
    return sorted(out, key=lambda c: c.rank_key)


# --------------------------------------------------------------------------------------------------
# The archive: the official zip or the folder it was extracted to
# --------------------------------------------------------------------------------------------------


def _safe_relative(name: str, what: str) -> PurePosixPath:
    """A relative path with no `..`, no absolute root and no drive; anything else is refused."""
    text = name.replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise MaisiError(f"refused {what} {name!r}: it points outside the mask folder", _OFFICIAL_HINT)
    return path


def _stays_inside(root: Path, path: Path) -> bool:
    """True when no component of `path` below the resolved `root` is a link (dangling ones included)."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return False
    return True


class MaskArchive:
    """Read access to the mask files, from the official zip or a folder holding them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._index: dict[str, zipfile.ZipInfo] = {}
        if self.path.is_dir():
            return
        if not self.path.is_file():
            raise MaisiError(f"mask archive {self.path} does not exist", _DOWNLOAD_HINT)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise MaisiError(
                f"cannot open mask archive {self.path.name} ({exc.__class__.__name__})", "download it again"
            ) from None
        for info in self._zip.infolist():
            name = info.filename.replace("\\", "/")
            self._index.setdefault(name, info)
            if "/" in name:  # entries name paths inside the archive's top folder
                self._index.setdefault(name.split("/", 1)[1], info)

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> MaskArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _folder_file(self, relative: PurePosixPath) -> Path | None:
        root = self.path.resolve()
        for base in (root, root / DB_FOLDER_NAME):
            candidate = (base / relative).resolve()
            if not candidate.is_relative_to(root):
                raise MaisiError(
                    f"refused mask {relative}: it resolves outside {self.path}", "remove links from the mask folder"
                )
            if candidate.is_file():
                return candidate
        return None

    def member(self, entry_path: str) -> zipfile.ZipInfo | None:
        relative = _safe_relative(entry_path, "mask path")
        return self._index.get(str(relative))

    def has(self, entry_path: str) -> bool:
        if self._zip is None:
            return self._folder_file(_safe_relative(entry_path, "mask path")) is not None
        return self.member(entry_path) is not None

    def extract(self, entry_path: str, dest_dir: str | Path) -> Path:
        """The mask file on disk: extracted under `dest_dir` from the zip, or its path in the folder."""
        relative = _safe_relative(entry_path, "mask path")
        if self._zip is None:
            found = self._folder_file(relative)
            if found is None:
                raise MaisiError(f"mask {entry_path} is not in {self.path}", "download the mask database again")
            return found
        info = self.member(entry_path)
        if info is None:
            raise MaisiError(f"mask {entry_path} is not in {self.path.name}", "download the mask database again")
        member = _safe_relative(info.filename, "zip entry")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode) or info.is_dir():
            raise MaisiError(f"refused zip entry {info.filename!r}: not a regular file", _OFFICIAL_HINT)
        if info.file_size > MAX_MEMBER_BYTES:
            raise MaisiError(f"refused zip entry {info.filename!r}: {info.file_size} bytes", _OFFICIAL_HINT)
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        target = root.joinpath(*member.parts)
        if not _stays_inside(root, target):
            raise MaisiError(
                f"refused zip entry {info.filename!r}: it would be written outside {dest}",
                "extract into an empty folder",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp, self._zip.open(info) as source, open(tmp, "wb") as sink:
            shutil.copyfileobj(source, sink, length=1 << 20)
        return target


def extract_mask(zip_or_dir: str | Path, entry: MaskEntry | str, dest_dir: str | Path) -> Path:
    """Extract one mask of the database into `dest_dir` (refusing unsafe entries); return its path."""
    with MaskArchive(zip_or_dir) as archive:
        return archive.extract(entry.mask_path if isinstance(entry, MaskEntry) else entry, dest_dir)


def find_masks(
    db_json: str | Path,
    zip_or_dir: str | Path | None,
    anatomy_list: Sequence[str | int],
    region: Sequence[str] | str | None = None,
    *,
    size: Sequence[int],
    spacing: Sequence[float],
) -> list[Candidate]:
    """Ranked candidates for a request; with an archive, entries whose file it lacks are left out."""
    anatomy = resolve_anatomy(anatomy_list)
    regions = resolve_regions(region)
    ranked = rank_entries(load_database(db_json), anatomy, regions, size, spacing)
    if zip_or_dir is None:
        return ranked
    with MaskArchive(zip_or_dir) as archive:
        available = []
        for candidate in ranked:
            with contextlib.suppress(MaisiError):  # unsafe paths are simply not offered
                if archive.has(candidate.entry.mask_path):
                    available.append(candidate)
        return available


# --------------------------------------------------------------------------------------------------
# Resampling and selection
# --------------------------------------------------------------------------------------------------


def _as_label_array(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        if not np.allclose(array, rounded):
            raise MaisiError(f"mask {name} holds non-integer values", "the database file is damaged; download it again")
        array = rounded
    if array.size and (array.min() < 0 or array.max() > 255):
        raise MaisiError(f"mask {name} holds values outside 0..255", "the database file is damaged; download it again")
    return array.astype(np.uint8)


def labels_present(array: np.ndarray) -> set[int]:
    return {int(v) for v in np.nonzero(np.bincount(np.asarray(array, dtype=np.uint8).ravel(), minlength=256))[0]}


def load_candidate(
    archive: MaskArchive,
    entry: MaskEntry,
    size: Sequence[int],
    spacing: Sequence[float],
    required: Sequence[int],
    work_dir: str | Path,
) -> Volume:
    """Extract, read and resample one mask; refuse it if a required label does not survive."""
    path = archive.extract(entry.mask_path, work_dir)
    try:
        volume = read_volume(path, what="mask")
    finally:
        if archive.is_zip:  # extracted copies are temporary
            path.unlink(missing_ok=True)
    _grid(size, spacing)
    grid = tuple(int(v) for v in size), tuple(float(v) for v in spacing)
    resampled = resample_labels(Volume(_as_label_array(volume.array, path.name), volume.affine), *grid)
    lost = sorted(set(required) - labels_present(resampled.array))
    if lost:
        names = ", ".join(f"{label_table.name_of(i)} ({i})" for i in lost)
        raise MaisiError(
            f"mask {entry.mask_path} loses {names} when resampled to {list(size)} at {list(spacing)} mm",
            "choose a larger size or spacing so the field of view covers the anatomy",
        )
    return resampled


@dataclass
class MaskSelection:
    """The chosen mask on the requested grid, the candidate it came from, and those refused on the way."""

    volume: Volume
    candidate: Candidate
    refused: list[tuple[Candidate, str]] = field(default_factory=list)


def select_mask(
    db_json: str | Path,
    zip_or_dir: str | Path,
    anatomy_list: Sequence[str | int],
    region: Sequence[str] | str | None = None,
    *,
    size: Sequence[int],
    spacing: Sequence[float],
    work_dir: str | Path,
    max_candidates: int = 10,
) -> MaskSelection:
    """The best-ranked candidate that keeps every requested label after resampling."""
    anatomy = resolve_anatomy(anatomy_list)
    candidates = find_masks(db_json, zip_or_dir, anatomy, region, size=size, spacing=spacing)
    if not candidates:
        where = f" spanning {', '.join(region) if isinstance(region, list) else region}" if region else ""
        raise MaisiError(
            f"no mask in the database holds {', '.join(label_table.name_of(i) for i in anatomy)}{where} "
            "without other tumors",
            "ask for fewer structures or another region",
        )
    refused: list[tuple[Candidate, str]] = []
    with MaskArchive(zip_or_dir) as archive:
        for candidate in candidates[:max_candidates]:
            try:
                volume = load_candidate(archive, candidate.entry, size, spacing, anatomy, work_dir)
            except MaisiError as exc:
                refused.append((candidate, exc.message))
                continue
            return MaskSelection(volume, candidate, refused)
    raise MaisiError(
        f"none of the {len(refused)} best masks fits: {refused[0][1]}",
        "choose a larger size or spacing, or fewer structures",
    )


# --------------------------------------------------------------------------------------------------
# Where the database lives
# --------------------------------------------------------------------------------------------------


def cached_database() -> tuple[Path, Path] | None:
    """(index JSON, zip) where `maisi weights download masks` puts them; None if the cache is unknown."""
    try:
        from MAISIEngine.weights import cache_path, entry_by_name
    except ImportError:
        return None
    index, archive = entry_by_name("mask-candidates"), entry_by_name("mask-database")
    if index is None or archive is None:
        return None
    return cache_path(index), cache_path(archive)


def _search(root: Path, name: str) -> Iterator[Path]:
    direct = [root / name, root / "datasets" / name]
    yield from (p for p in direct if p.exists())
    yield from sorted(root.rglob(name))


def locate_database(db_dir: str | Path | None) -> tuple[Path, Path]:
    """(index JSON, zip or extracted folder) of the database under `db_dir`, else in the weights cache."""
    if db_dir is None:
        cached = cached_database()
        if cached is None or not cached[0].is_file() or not cached[1].is_file():
            raise MaisiError("the official mask database is not downloaded", _DOWNLOAD_HINT)
        return cached
    root = Path(db_dir)
    if not root.is_dir():
        raise MaisiError(f"mask database folder {root} does not exist", _DOWNLOAD_HINT)
    index = next(_search(root, DB_JSON_NAME), None)
    if index is None:
        raise MaisiError(f"{DB_JSON_NAME} is not under {root}", _DOWNLOAD_HINT)
    for base in (index.parent, root):
        for name in (DB_FOLDER_NAME, DB_ZIP_NAME):
            if (base / name).exists():
                return index, base / name
    archive = next(_search(root, DB_ZIP_NAME), None)
    if archive is None:
        raise MaisiError(f"{DB_ZIP_NAME} is not under {root}", _DOWNLOAD_HINT)
    return index, archive
