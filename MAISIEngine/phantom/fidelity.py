"""How faithfully a CT made from a phantom's label map reproduces the phantom's tissue: per organ group,
the median HU of the CT against the phantom's nominal median over the same voxels.

The demo model's acceptance (and its test) use it: liver, spleen, kidneys and heart within 50 HU,
lungs within 100, bone within 150.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from MAISIEngine import labels as maisi_labels

ORGAN_TOLERANCES: dict[str, tuple[frozenset[int], float]] = {
    "liver": (frozenset({1}), 50.0),
    "spleen": (frozenset({3}), 50.0),
    "kidneys": (frozenset({5, 14}), 50.0),
    "heart": (frozenset({115}), 50.0),
    "lungs": (maisi_labels.LUNG_IDS, 100.0),
    "bone": (maisi_labels.BONE_IDS, 150.0),
}
"""Organ group -> (label ids, allowed |median - nominal median| in HU)."""


def organ_errors(image_hu: np.ndarray, labels: np.ndarray, nominal: dict[int, float],
                 min_voxels: int = 20) -> dict[str, dict[str, Any]]:
    """Per organ group present with at least `min_voxels`: median HU, nominal median, |error|, within tolerance."""
    lookup = np.zeros(256, np.float64)
    for label_id, value in nominal.items():
        if 0 <= int(label_id) < 256:
            lookup[int(label_id)] = float(value)
    result: dict[str, dict[str, Any]] = {}
    for group, (ids, tolerance) in ORGAN_TOLERANCES.items():
        inside = np.isin(labels, list(ids))
        count = int(inside.sum())
        if count < min_voxels:
            continue
        median = float(np.median(image_hu[inside]))
        expected = float(np.median(lookup[labels[inside].astype(np.int64)]))
        error = abs(median - expected)
        result[group] = {"median_hu": round(median, 1), "nominal_hu": round(expected, 1), "error_hu": round(error, 1),
                         "tolerance_hu": tolerance, "ok": error <= tolerance, "voxels": count}
    return result
