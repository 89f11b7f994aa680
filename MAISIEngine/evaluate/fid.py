"""2.5D FID of a synthetic CT set against a real one: per plane, and the average of the planes (the paper's
Tables 2-3, NVIDIA's `compute_fid_2-5d_ct.py`).

Each set's feature vectors are the RadImageNet ResNet-50 features of every kept slice of every volume
(`slicing`), so a set of 10 CTs at the default settings gives about 2,000 vectors per plane.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.evaluate.feature_cache import FeatureCache
from MAISIEngine.evaluate.frechet import frechet_distance
from MAISIEngine.evaluate.preprocess import Preprocessing, load_ras, prepare
from MAISIEngine.evaluate.slicing import PLANES, REFERENCE_NAMES, plane_features
from MAISIEngine.evaluate.sources import Case, guess_modality, normalise_modality

Log = Callable[[str], None]


def set_modality(cases: list[Case], what: str) -> str:
    """The one modality of a set: declared in the datalist, else guessed from the first image's values."""
    declared = {normalise_modality(c.modality) for c in cases if c.modality}
    if len(declared) > 1:
        raise MaisiError(f"the {what} set mixes modalities {sorted(declared)}", "compare CTs with CTs")
    if declared:
        return declared.pop()
    return guess_modality(load_ras(cases[0].image, None)[0].numpy())


def check_modalities(real: list[Case], synthetic: list[Case]) -> str:
    """Both sets must be CT (the HU window and the reference's method are CT's)."""
    modality_real, modality_synthetic = set_modality(real, "real"), set_modality(synthetic, "synthetic")
    if modality_real != modality_synthetic:
        raise MaisiError(f"the real set is {modality_real} and the synthetic set {modality_synthetic}",
                         "compare sets of one modality")
    if modality_real != "CT":
        raise MaisiError(f"the sets are {modality_real}, the 2.5D FID here is for CT (HU window [-1000, 1000])",
                         "give CT volumes in HU")
    return modality_real


def set_features(cases: list[Case], network: torch.nn.Module, settings: Preprocessing, planes: tuple[str, ...],
                 device: torch.device | str, log: Log = print, what: str = "set",
                 cache: FeatureCache | None = None) -> dict[str, torch.Tensor]:
    """Feature vectors of all kept slices of all volumes, per plane (from `cache` when it has them)."""
    gathered: dict[str, list[torch.Tensor]] = {p: [] for p in planes}
    for number, case in enumerate(cases, start=1):
        started = time.perf_counter()
        found = cache.get(case.image) if cache else None
        if found is None:
            volume = prepare(case.image, settings)
            found = {plane: plane_features(volume, network, plane, settings.center_ratio, device=device)
                     for plane in planes}
            if cache:
                cache.put(case.image, found)
        for plane in planes:
            gathered[plane].append(found[plane])
        log(f"{what} {number}/{len(cases)}: {case.image.name}, {time.perf_counter() - started:.1f} s")
    return {plane: torch.cat(parts) for plane, parts in gathered.items()}


def fid_2p5d(real: dict[str, torch.Tensor], synthetic: dict[str, torch.Tensor]) -> dict[str, float]:
    """FID per plane and their average."""
    scores = {plane: frechet_distance(synthetic[plane], real[plane]) for plane in real}
    scores["average"] = sum(scores.values()) / len(real)
    return scores


def evaluate_fid(real: list[Case], synthetic: list[Case], network: torch.nn.Module, settings: Preprocessing,
                 planes: tuple[str, ...] = PLANES, device: torch.device | str = "cpu", features: str = "",
                 log: Log = print, cache_dir: Path | None = None) -> dict[str, Any]:
    """The whole measure: modality check, features of both sets, the distances, and a JSON-ready report."""
    unknown = [p for p in planes if p not in PLANES]
    if unknown or not planes:
        raise MaisiError(f"unknown plane {unknown[0] if unknown else '(none)'}", f"choose among {', '.join(PLANES)}")
    modality = check_modalities(real, synthetic)
    started = time.perf_counter()
    cache = FeatureCache(cache_dir, settings.to_dict(), planes, Path(features)) if cache_dir and features else None
    real_features = set_features(real, network, settings, planes, device, log, "real", cache)
    synthetic_features = set_features(synthetic, network, settings, planes, device, log, "synthetic", cache)
    scores = fid_2p5d(real_features, synthetic_features)
    return {
        "measure": "2.5D FID (Frechet distance of RadImageNet ResNet-50 slice features)",
        "modality": modality, "features": features, "preprocessing": settings.to_dict(),
        "planes": {p: {"fid": scores[p], "reference_plane": REFERENCE_NAMES[p],
                       "real_slices": int(real_features[p].shape[0]),
                       "synthetic_slices": int(synthetic_features[p].shape[0])} for p in planes},
        "fid_average": scores["average"],
        "real": {"images": len(real), "files": [str(c.image) for c in real]},
        "synthetic": {"images": len(synthetic), "files": [str(c.image) for c in synthetic]},
        "seconds": round(time.perf_counter() - started, 1),
        "feature_cache": {"folder": str(cache_dir), "images_reused": cache.hits} if cache else None,
    }


def fid_table(report: dict[str, Any]) -> str:
    """One screen: the settings, one row per plane, the average."""
    pre = report["preprocessing"]
    lines = [f"2.5D FID, {report['synthetic']['images']} synthetic vs {report['real']['images']} real {report['modality']} "
             f"(features {Path(report['features']).name or report['features']})",
             f"spacing {pre['spacing'] or 'as stored'}, crop {pre['center_crop'] or 'none'}, "
             f"central slices {pre['center_slices_ratio'] or 'all'}, HU window {pre['hu_window']}",
             f"{'plane':<10}{'FID':>12}{'real slices':>14}{'synthetic slices':>18}"]
    for plane, row in report["planes"].items():
        lines.append(f"{plane:<10}{row['fid']:>12.4f}{row['real_slices']:>14}{row['synthetic_slices']:>18}")
    lines.append(f"{'average':<10}{report['fid_average']:>12.4f}")
    return "\n".join(lines)
