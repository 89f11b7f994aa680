"""The weights cache: one folder per user, shared by every front end, outside the installed package.

Layout: `<home>/weights/<owner>/<repo>/<path in repo>` for each file, and `<home>/weights/registry.json`
recording, for each file, its sha256, size, where it came from and when. The home is `$MAISI_HOME`, or
the user's cache folder (`$XDG_CACHE_HOME/maisi`, `~/.cache/maisi`, `~/Library/Caches/maisi`,
`%LOCALAPPDATA%/maisi`), so upgrading or reinstalling the engine keeps the downloads.

Status of a file, cheapest check first (no hashing; `verify` re-hashes):
- missing: not on disk;
- corrupt: its size differs from the record, or the last `verify` found a different hash;
- verified: its sha256 matched a published one (the server's, or one the caller gave) when recorded;
- present: on disk, but never checked against a published hash (imported by hand, or unrecorded).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import write_text_atomic
from MAISIEngine.weights.manifest import WeightFile

log = logging.getLogger(__name__)

REGISTRY_NAME = "registry.json"
REGISTRY_VERSION = 1
HASH_CHUNK = 4 * 1024 * 1024

MISSING, PRESENT, VERIFIED, CORRUPT = "missing", "present", "verified", "corrupt"


def weights_home() -> Path:
    """The engine's per-user folder: `$MAISI_HOME`, else the platform's user cache folder + `maisi`."""
    configured = os.environ.get("MAISI_HOME")
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "maisi"


def weights_dir() -> Path:
    return weights_home() / "weights"


def cache_path(entry: WeightFile) -> Path:
    """Where `entry` lives in the cache (whether or not it is there)."""
    return weights_dir().joinpath(*entry.key.split("/"))


def part_path(entry: WeightFile) -> Path:
    """The partial download beside the target, kept across interruptions so the next call resumes."""
    target = cache_path(entry)
    return target.with_name(target.name + ".part")


def registry_path() -> Path:
    return weights_dir() / REGISTRY_NAME


def _lock_path(name: str) -> Path:
    folder = weights_dir() / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.lock"


@contextmanager
def exclusive(name: str, wait_s: float, busy_message: str) -> Iterator[None]:
    """Hold a lock shared by every process using this cache (registry updates, one file's download).

    filelock is imported here, not at the top: reading the cache's status must work where it is not
    installed (a front end's panel before the engine's packages are).
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(_lock_path(name)), timeout=wait_s)
    try:
        lock.acquire()
    except Timeout as exc:
        raise MaisiError(busy_message, "wait for the other download to finish, then run the command again") from exc
    try:
        yield
    finally:
        lock.release()


def bar_disabled(show_bar: bool) -> bool | None:
    """tqdm's `disable`: off when not wanted or when $MAISI_NO_PROGRESS is set, else on for terminals only."""
    return True if not show_bar or os.environ.get("MAISI_NO_PROGRESS") is not None else None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def hash_stream(stream: BinaryIO, digest: Any | None = None, sink: BinaryIO | None = None) -> tuple[str, int]:
    """sha256 and size of a stream, optionally copying it to `sink` in the same pass."""
    digest = digest or hashlib.sha256()
    size = 0
    while chunk := stream.read(HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest(), size


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as stream:
        return hash_stream(stream)[0]


def normalise_sha256(value: str | None) -> str | None:
    """A sha256 as 64 lower-case hex digits, or None when `value` is not one (e.g. a git sha1 etag)."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("W/"):
        return None  # a weak etag says nothing about the bytes
    text = text.strip('"').lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:"):]
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    return None


# --- registry -------------------------------------------------------------------------------------


def load_registry() -> dict[str, dict[str, Any]]:
    """Records by cache key; an unreadable registry counts as empty (files then show as unrecorded)."""
    path = registry_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not an object")
        return files
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable weights registry %s (%s)", path, exc)
        return {}


def _save_registry(files: dict[str, dict[str, Any]]) -> None:
    document = {"version": REGISTRY_VERSION, "files": dict(sorted(files.items()))}
    write_text_atomic(registry_path(), json.dumps(document, indent=2) + "\n")


def update_registry(key: str, record: dict[str, Any] | None) -> None:
    """Replace (or, with None, drop) one record, under the registry lock, written atomically."""
    with exclusive("registry", wait_s=60.0, busy_message=f"the weights registry {registry_path()} is locked"):
        files = load_registry()
        if record is None:
            files.pop(key, None)
        else:
            files[key] = record
        _save_registry(files)


def record_file(
    entry: WeightFile, sha256: str, source: str, checked_against: str | None
) -> dict[str, Any]:
    """Record a file that is now in place in the cache; `checked_against` names the published hash it matched."""
    stat = cache_path(entry).stat()
    record = {
        "name": entry.name,
        "sha256": sha256,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "source": source,
        "date": now_iso(),
        "checked_against": checked_against,
        "corrupt": False,
    }
    update_registry(entry.key, record)
    return record


# --- status ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileStatus:
    entry: WeightFile
    path: Path
    status: str  # missing | present | verified | corrupt
    size: int | None  # bytes on disk
    record: dict[str, Any] | None

    @property
    def on_disk(self) -> bool:
        return self.status != MISSING


def status_of(entry: WeightFile, registry: dict[str, dict[str, Any]] | None = None) -> FileStatus:
    """Status from the file's presence, size and record; fast (no hashing)."""
    path = cache_path(entry)
    record = (load_registry() if registry is None else registry).get(entry.key)
    if not path.is_file():
        return FileStatus(entry, path, MISSING, None, record)
    size = path.stat().st_size
    if record is None:
        status = PRESENT
    elif record.get("corrupt") or record.get("size") != size:
        status = CORRUPT
    elif record.get("checked_against"):
        status = VERIFIED
    else:
        status = PRESENT
    return FileStatus(entry, path, status, size, record)


def recorded_sha256(path: str | Path) -> str:
    """The sha256 of a weight file: from the registry when the cached file is unchanged, else hashed now.

    Provenance records the hash of every weight file; re-hashing gigabytes per run would be wasteful.
    """
    path = Path(path)
    try:
        key = path.resolve().relative_to(weights_dir().resolve()).as_posix()
    except ValueError:
        key = None
    if key is not None:
        record = load_registry().get(key)
        stat = path.stat()
        if record and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
            return str(record["sha256"])
    return file_sha256(path)
