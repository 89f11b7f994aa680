"""Job folders under the application's temporary folder: made per job, removed when the job ends.

Each job's inputs and outputs (job.json, label maps, the worker's NIfTI results) live in their own
folder. The results are read into the scene, so the folder is removed when the job ends, unless the
user keeps job files (the module's "Keep job files" option, for inspecting what the engine got).
Folders left by a crash are removed after `STALE_AFTER_S`. Only folders inside the module's own root
are ever removed.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

ROOT_NAME = "MAISISynth"
STALE_AFTER_S = 7 * 24 * 3600.0


def jobs_root(temporary_path: str | Path) -> Path:
    root = Path(temporary_path) / ROOT_NAME
    root.mkdir(parents=True, exist_ok=True)
    return root


def new_work_directory(temporary_path: str | Path, kind: str) -> Path:
    """A fresh folder for one job's files: '<time>-<kind>-<random>' under the module's root."""
    return Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-", dir=jobs_root(temporary_path)))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return path.resolve() != root.resolve()


def remove_work_directory(workdir: str | Path, temporary_path: str | Path) -> bool:
    """Remove one job folder; refuses (False) anything outside the module's root."""
    workdir = Path(workdir)
    if not _inside(workdir, Path(temporary_path) / ROOT_NAME) or not workdir.is_dir():
        return False
    shutil.rmtree(workdir, ignore_errors=True)
    return not workdir.exists()


def remove_stale_work_directories(temporary_path: str | Path, max_age_s: float = STALE_AFTER_S,
                                  keep: set[Path] | None = None, now: float | None = None) -> list[Path]:
    """Remove job folders not modified for `max_age_s` (left by a crash); returns what was removed."""
    root = Path(temporary_path) / ROOT_NAME
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    kept = {Path(p).resolve() for p in (keep or set())}
    removed = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and folder.resolve() not in kept and now - folder.stat().st_mtime > max_age_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
