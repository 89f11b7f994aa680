"""The official MAISI weight files: manifest, per-user cache, resumable verified download, import, verify.

Every front end goes through these functions, so a file downloaded once (by the CLI, Slicer or the
desktop app) is found by all of them.
"""

from MAISIEngine.weights.cache import (
    CORRUPT,
    MISSING,
    PRESENT,
    VERIFIED,
    FileStatus,
    cache_path,
    file_sha256,
    load_registry,
    recorded_sha256,
    registry_path,
    status_of,
    weights_dir,
    weights_home,
)
from MAISIEngine.weights.download import (
    download_file,
    download_model,
    download_weights,
    fetch_published_sha256,
    file_url,
)
from MAISIEngine.weights.local import Imported, Verified, import_files, verify_cache
from MAISIEngine.weights.manifest import (
    GROUPS,
    MANIFEST,
    OFFICIAL_REPO,
    WeightFile,
    entries_for_name,
    entries_for_names,
    entry_by_name,
    entry_for_filename,
)
from MAISIEngine.weights.resolve import WeightState, cached_file, resolve_weight_path, weights_status

__all__ = [
    "CORRUPT", "MISSING", "PRESENT", "VERIFIED", "FileStatus", "cache_path", "file_sha256", "load_registry",
    "recorded_sha256", "registry_path", "status_of", "weights_dir", "weights_home",
    "download_file", "download_model", "download_weights", "fetch_published_sha256", "file_url",
    "Imported", "Verified", "import_files", "verify_cache",
    "GROUPS", "MANIFEST", "OFFICIAL_REPO", "WeightFile", "entries_for_name", "entries_for_names",
    "entry_by_name", "entry_for_filename",
    "WeightState", "cached_file", "resolve_weight_path", "weights_status",
]
