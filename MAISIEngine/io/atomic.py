"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader (or a crash, or SIGTERM) never sees a half-written file: either the old file, or none, or the
complete new one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _temp_suffix(path: Path) -> str:
    """Keep the full suffix (e.g. `.nii.gz`) so libraries that choose a format by suffix still do."""
    return "".join(path.suffixes) or ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=_temp_suffix(path), dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions of a normal one
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


PARTIAL_SUFFIX = ".partial"
RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths in one atomic step


def _owner_pid(partial: Path) -> int | None:
    """The process id written into a partial folder's name (`.NAME.PID.RANDOM.partial`)."""
    parts = partial.name[: -len(PARTIAL_SUFFIX)].rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(path: str | Path) -> list[Path]:
    """Remove `.NAME.PID.*.partial` folders beside `path` that this user owns and whose process is gone.

    A run killed with SIGKILL (or a power cut) cannot tidy up; the next run writing the same output
    does it instead. Folders of other users and of processes still running are left alone.
    """
    import shutil

    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for partial in path.parent.glob(f".{glob_escape(path.name)}.*{PARTIAL_SUFFIX}"):
        pid = _owner_pid(partial)
        try:
            mine = partial.lstat().st_uid == os.getuid() if hasattr(os, "getuid") else True
        except FileNotFoundError:
            continue
        if pid is None or not mine or pid == os.getpid() or _alive(pid) or partial.is_symlink():
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where the system has no such call."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), RENAME_EXCHANGE)
    if result != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: file system or kernel without exchange
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def _swap_in(new: Path, target: Path, keep_foreign: bool) -> None:
    """Put folder `new` at `target` in one rename; an existing target is swapped out, then deleted."""
    import shutil

    try:
        os.rename(new, target)  # no target, or an empty folder: a plain rename replaces it
        return
    except OSError:
        if not target.is_dir() or target.is_symlink():
            raise
    if not _exchange(new, target):
        old = target.with_name(f".{target.name}.{os.getpid()}.old{PARTIAL_SUFFIX}")
        os.rename(target, old)
        os.rename(new, target)
        new = old
    # `new` now holds the previous result; anything in it that the new result does not replace stays.
    if keep_foreign:
        for item in new.iterdir():
            if not (target / item.name).exists():
                os.rename(item, target / item.name)
    shutil.rmtree(new, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | Path, keep_foreign: bool = True) -> Iterator[Path]:
    """Build a whole output folder beside its target and swap it in with one rename when complete.

    Used where several files form one result (image + labels + provenance): a reader sees the old
    result or the new one, never a mix, and a cancelled job leaves nothing. The build folder's name
    carries our process id so that a later run can remove it if this one is killed outright.
    Entries of an existing target that the new result does not hold are kept (`keep_foreign`).
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=PARTIAL_SUFFIX, dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    _LIVE_PARTIALS.add(tmp)
    try:
        yield tmp
        _swap_in(tmp, path, keep_foreign)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _LIVE_PARTIALS.discard(tmp)


_LIVE_PARTIALS: set[Path] = set()
"""Build folders of this process, removed by `remove_live_partials` when a signal ends it."""


def remove_live_partials() -> None:
    """Delete this process's unfinished build folders (called from SIGTERM handlers)."""
    import shutil

    for tmp in list(_LIVE_PARTIALS):
        shutil.rmtree(tmp, ignore_errors=True)
        _LIVE_PARTIALS.discard(tmp)
