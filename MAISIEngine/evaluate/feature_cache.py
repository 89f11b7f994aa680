"""Per-image 2.5D features kept on disk, so a real set is featurised once and compared with many synthetic
sets (the reference keeps one `.pt` per image for the same reason).

An entry is keyed by what decides the features: the image file (absolute path, size, modification time),
the preprocessing, the planes and the feature weights file (path, size, modification time). Entries are
safetensors files written atomically; nothing executable is ever read back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_key(image: Path, settings: dict, planes: tuple[str, ...], weights: Path) -> str:
    decisive = {"image": _file_identity(image), "settings": settings, "planes": list(planes),
                "weights": _file_identity(weights), "version": 1}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:32]


class FeatureCache:
    def __init__(self, folder: Path, settings: dict, planes: tuple[str, ...], weights: Path) -> None:
        self.folder, self.settings, self.planes, self.weights = Path(folder), settings, planes, Path(weights)
        self.hits = 0

    def _path(self, image: Path) -> Path:
        return self.folder / f"{cache_key(image, self.settings, self.planes, self.weights)}.safetensors"

    def get(self, image: Path) -> dict[str, torch.Tensor] | None:
        path = self._path(image)
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            found = load_file(str(path))
        except Exception:  # a damaged entry is recomputed
            return None
        if set(found) != set(self.planes):
            return None
        self.hits += 1
        return found

    def put(self, image: Path, features: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        from MAISIEngine.io.atomic import atomic_path

        with atomic_path(self._path(image)) as tmp:
            save_file({k: v.contiguous() for k, v in features.items()}, str(tmp))
