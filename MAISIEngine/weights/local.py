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


def _candidates(sources: list[Path]) -> dict[str, list[Path]]:
    """Files under the sources whose names are manifest file names, by manifest name."""
    found: dict[str, list[Path]] = {}
    for source in sources:
        if not source.exists():
            raise MaisiError(f"{source} does not exist", "give the folder the official files were copied into")
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for path in files:
            entry = entry_by_name(path.name)
            if entry is not None and entry.filename.lower() == path.name.lower():
                found.setdefault(entry.name, []).append(path)
    return found


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
    with atomic_path(target) as tmp, open(source, "rb") as src, open(tmp, "wb") as sink:
        with _read_with_bar(src, size, f"import {entry.filename}", show_bar) as reader:
            return cache.hash_stream(reader, sink=sink)


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
