"""The official MAISI weight files: manifest, per-user cache, resumable verified download, import, verify.

Every front end goes through these functions, so a file downloaded once (by the CLI, Slicer or the
desktop app) is found by all of them.

The names below are loaded from their submodule on first use (PEP 562). Front ends ask for the status
of a model's weights (`weights_status`, in `resolve`) from a panel that runs in an application whose
Python has no engine packages yet (a fresh 3D Slicer): `resolve`, `cache` and `manifest` therefore
import only the standard library and the engine's light modules, and nothing here imports `download`
(requests, tqdm) or `local` (tqdm) until one of their names is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULE_OF: dict[str, str] = {
    **dict.fromkeys(
        ("CORRUPT", "MISSING", "PRESENT", "VERIFIED", "FileStatus", "cache_path", "file_sha256", "load_registry",
         "recorded_sha256", "registry_path", "status_of", "weights_dir", "weights_home"), "cache"),
    **dict.fromkeys(
        ("download_file", "download_model", "download_weights", "fetch_published_sha256", "file_url"), "download"),
    **dict.fromkeys(("Imported", "Verified", "import_files", "verify_cache"), "local"),
    **dict.fromkeys(
        ("GROUPS", "MANIFEST", "OFFICIAL_REPO", "WeightFile", "entries_for_name", "entries_for_names",
         "entry_by_name", "entry_for_filename"), "manifest"),
    **dict.fromkeys(("WeightState", "cached_file", "resolve_weight_path", "weights_status"), "resolve"),
}

_SUBMODULES = frozenset(("cache", "cli", "download", "local", "manifest", "resolve"))

__all__ = sorted(_SUBMODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
