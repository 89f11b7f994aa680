"""Work on the cache without downloading: take files copied by hand, and re-check files already there.

Offline sites copy the official files from a machine with internet access; `import_files` recognises
them by file name, copies them atomically into the cache and records their hashes. `verify_cache`
re-hashes cached files against the registry (and, if asked, against the sha256 the server publishes).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm
from tqdm.utils import CallbackIOWrapper

from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import atomic_path
from MAISIEngine.weights import cache
from MAISIEngine.weights.download import fetch_published_sha256
from MAISIEngine.weights.manifest import MANIFEST, WeightFile, entries_for_names, entry_by_name


@dataclass(frozen=True)
class Imported:
    entry: WeightFile
    source: Path
    path: Path
    sha256: str
    size: int


SIZE_TOLERANCE = 2.0
"""A file more than this factor away from its published size is not the official file."""


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve(strict=True).is_relative_to(folder.resolve(strict=True))
    except (OSError, RuntimeError):
        return False


def _candidates(sources: list[Path]) -> dict[str, list[Path]]:
    """Files under the sources whose names are manifest file names, by manifest name.

    A symlink is followed only while it stays inside the folder being imported: a link named like an
    official file but pointing elsewhere (e.g. at /etc/passwd) is refused.
    """
    found: dict[str, list[Path]] = {}
    for source in sources:
        if not source.exists():
            raise MaisiError(f"{source} does not exist", "give the folder the official files were copied into")
        folder = source.parent if source.is_file() else source
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for path in files:
            entry = entry_by_name(path.name)
            if entry is None or entry.filename.lower() != path.name.lower():
                continue
            if path.is_symlink() and not _inside(path, folder):
                raise MaisiError(f"{path} is a link to a file outside {folder}",
                                 "copy the file itself into the folder you import")
            found.setdefault(entry.name, []).append(path)
    return found


def check_plausible_size(entry: WeightFile, size: int, path: Path) -> None:
    """Refuse a file whose size is far from the published one (estimated sizes are not checked)."""
    if entry.size_is_estimate or entry.approx_size <= 0:
        return
    smallest = min(entry.approx_size / SIZE_TOLERANCE, entry.min_size or entry.approx_size)
    if size < smallest or size > entry.approx_size * SIZE_TOLERANCE:
        raise MaisiError(
            f"{path.name} holds {size} bytes; the official {entry.filename} is about {entry.approx_size} bytes",
            "this is not the official file (or it was damaged in copying); copy it again",
        )


def check_structure(entry: WeightFile, path: Path) -> None:
    """Open the file the way it will be used, strictly: a tensor checkpoint, a JSON document, a zip archive."""
    name = entry.filename.lower()
    problem = None
    try:
        if name.endswith((".pt", ".pth")):
            import torch

            raw = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            if not _holds_tensors(raw, torch.Tensor):
                problem = "it holds no tensors"
        elif name.endswith(".safetensors"):
            from MAISIEngine.networks import read_checkpoint_file

            read_checkpoint_file(path)
        elif name.endswith(".json"):
            import json

            with open(path, encoding="utf-8") as handle:
                json.load(handle)
        elif name.endswith(".zip"):
            import zipfile

            with zipfile.ZipFile(path) as archive:
                if not archive.namelist():
                    problem = "the archive is empty"
    except MaisiError as exc:
        problem = exc.message
    except Exception as exc:  # noqa: BLE001 - every loader has its own error types
        problem = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    if problem:
        raise MaisiError(f"{path.name} is not a valid {entry.filename} ({problem})",
                         "copy the official file again (or download it with `maisi weights download`)")


def _holds_tensors(value: object, tensor_type: type, depth: int = 0) -> bool:
    if isinstance(value, tensor_type):
        return True
    if isinstance(value, dict) and depth < 4:
        return any(_holds_tensors(v, tensor_type, depth + 1) for v in value.values())
    return False


def _cache_mode(source: Path) -> int:
    """0644 for a file others may read at its source, else 0600: importing never widens access."""
    return 0o644 if source.stat().st_mode & 0o004 else 0o600


@contextmanager
def _read_with_bar(stream: BinaryIO, size: int, label: str, show_bar: bool) -> Iterator[BinaryIO]:
    """The stream, with a progress bar that advances as it is read (hashing gigabytes takes a while)."""
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
              disable=cache.bar_disabled(show_bar), file=sys.stderr) as bar:
        yield CallbackIOWrapper(bar.update, stream, "read")  # type: ignore[misc]


def _copy_into_cache(entry: WeightFile, source: Path, show_bar: bool) -> tuple[str, int]:
    target = cache.cache_path(entry)
    free = shutil.disk_usage(target.parent).free
    size = source.stat().st_size
    if free < size:
        raise MaisiError(
            f"not enough disk space to import {entry.filename}: "
            f"{size / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free",
            "free some space, or set MAISI_HOME to a folder on a larger disk",
        )
    with atomic_path(target) as tmp:
        with open(source, "rb") as src, open(tmp, "wb") as sink:
            with _read_with_bar(src, size, f"import {entry.filename}", show_bar) as reader:
                result = cache.hash_stream(reader, sink=sink)
        os.chmod(tmp, _cache_mode(source))
        check_structure(entry, tmp)
    return result


def import_files(sources: list[str | Path], show_bar: bool = True) -> list[Imported]:
    """Copy the official files found under `sources` (folders, searched recursively, or files) into the cache."""
    found = _candidates([Path(s).expanduser() for s in sources])
    if not found:
        names = ", ".join(e.filename for e in MANIFEST)
        raise MaisiError(
            f"no official MAISI file found in {', '.join(str(s) for s in sources)}",
            f"the files must keep their original names ({names})",
        )
    doubles = [paths for paths in found.values() if len(paths) > 1]
    if doubles:
        paths = doubles[0]
        raise MaisiError(
            f"{len(paths)} copies of {paths[0].name} were found ({', '.join(str(p) for p in paths)})",
            "import one of them (give that file, or a folder holding only one copy)",
        )
    for entry in MANIFEST:  # every file checked before any is copied: an import is all or nothing
        if entry.name in found:
            check_plausible_size(entry, found[entry.name][0].stat().st_size, found[entry.name][0])
    imported = []
    registry = cache.load_registry()
    for entry in MANIFEST:
        if entry.name not in found:
            continue
        source = found[entry.name][0]
        target = cache.cache_path(entry)
        target.parent.mkdir(parents=True, exist_ok=True)
        busy = f"{entry.filename} is being downloaded by another process"
        with cache.exclusive(f"download-{entry.name}", wait_s=0.5, busy_message=busy):
            if target.exists() and os.path.samefile(source, target):
                sha256 = cache.file_sha256(target)  # a file already in the cache: record it, do not copy
                size = target.stat().st_size
            else:
                sha256, size = _copy_into_cache(entry, source, show_bar)
            cache.part_path(entry).unlink(missing_ok=True)  # a stale partial download is superseded
            previous = registry.get(entry.key) or {}
            # a hash once confirmed by the server stays confirmed when the same bytes come back by hand
            checked = previous.get("checked_against") if previous.get("sha256") == sha256 else None
            cache.record_file(entry, sha256, f"import:{source.resolve()}", checked)
        imported.append(Imported(entry, source, target, sha256, size))
    return imported


OK, CORRUPT, UNRECORDED, MISSING = "ok", "corrupt", "unrecorded", "missing"


@dataclass(frozen=True)
class Verified:
    entry: WeightFile
    path: Path
    outcome: str  # ok | corrupt | unrecorded | missing
    detail: str


def verify_cache(names: list[str] | None = None, remote: bool = False, show_bar: bool = True) -> list[Verified]:
    """Re-hash cached files and compare with the registry; with `remote`, also with the server's sha256.

    With no names, every file on disk is checked; named files that are missing are reported as such.
    A mismatch marks the record corrupt (so `list` shows it and `download` fetches the file again).
    """
    entries = entries_for_names(names) if names else list(MANIFEST)
    registry = cache.load_registry()
    results = []
    for entry in entries:
        state = cache.status_of(entry, registry)
        if not state.on_disk:
            if names:
                results.append(Verified(entry, state.path, MISSING, "not in the cache"))
            continue
        record = state.record
        if record is None:
            results.append(Verified(entry, state.path, UNRECORDED, "in the cache but not recorded"))
            continue
        with open(state.path, "rb") as stream:
            with _read_with_bar(stream, state.size or 0, f"verify {entry.filename}", show_bar) as reader:
                sha256, size = cache.hash_stream(reader)
        updated = dict(record)
        try:
            check_plausible_size(entry, size, state.path)
            check_structure(entry, state.path)
        except MaisiError as exc:
            updated["corrupt"] = True
            cache.update_registry(entry.key, updated)
            results.append(Verified(entry, state.path, CORRUPT, exc.message))
            continue
        if sha256 != record.get("sha256"):
            updated["corrupt"] = True
            cache.update_registry(entry.key, updated)
            detail = f"sha256 {sha256[:16]}... differs from the recorded {str(record.get('sha256'))[:16]}..."
            results.append(Verified(entry, state.path, CORRUPT, detail))
            continue
        detail = "matches the recorded sha256"
        if remote:
            published = fetch_published_sha256(entry)
            if published is None:
                detail += "; the server publishes no sha256"
            elif published != sha256:
                updated["corrupt"] = True
                cache.update_registry(entry.key, updated)
                detail = f"differs from the server's sha256 {published[:16]}... (damaged, or an older version)"
                results.append(Verified(entry, state.path, CORRUPT, detail))
                continue
            else:
                updated["checked_against"] = "x-linked-etag"
                detail += " and the server's"
        updated.update(corrupt=False, size=size, mtime_ns=state.path.stat().st_mtime_ns, last_verified=cache.now_iso())
        cache.update_registry(entry.key, updated)
        results.append(Verified(entry, state.path, OK, detail))
    return results
