"""The desktop app's label colours: Slicer's colours where Slicer has one, distinct colours elsewhere.

`MAISIEngine.labels.color_of` gives Slicer's terminology colours for the organs a user sees most
(liver, spleen, kidneys, vessels...), and shades of one hue for bones and lungs, which makes
neighbouring vertebrae or lobes impossible to tell apart in a slice view. Here every label keeps
Slicer's colour when it has one that no label before it uses (nor one alike), and each other label gets the colour
farthest (in CIELAB) from all colours already given, so no two labels look alike.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np

from MAISIEngine import labels as maisi_labels

UNKNOWN_COLOUR = (255, 255, 255)
SLICER_COLOURED_IDS = frozenset({1, 3, 4, 5, 6, 7, 10, 12, 14, 15, 19, 22, 23, 24, 26, 27, 57, 62, 115, 121, 122, 128,
                                 maisi_labels.BODY})
"""Labels with a hand-picked colour in `MAISIEngine.labels.color_of`: 3D Slicer's anatomy colours for
organs, vivid reds and magentas for tumors; the others get a stable hue there, a distinct colour here."""
MIN_DISTANCE_TO_KEEP = 15.0
"""A Slicer colour closer than this to one already given (e.g. stomach to liver) is replaced."""


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB 0-255 (N, 3) -> CIELAB (D65), the space where distances match what eyes see."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[:, 1] - 16.0, 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=1)


def colour_distance(a, b) -> float:
    """CIE76 colour difference (about 2.3 is just noticeable; above 20 two colours read as different)."""
    return float(np.linalg.norm(_lab(np.asarray([a]))[0] - _lab(np.asarray([b]))[0]))


def _candidates() -> np.ndarray:
    rows = []
    for hue in np.arange(0.0, 1.0, 1.0 / 72.0):
        for saturation in (0.3, 0.5, 0.7, 0.9):
            for value in (0.5, 0.7, 0.85, 1.0):
                rows.append(tuple(int(round(v * 255)) for v in colorsys.hsv_to_rgb(hue, saturation, value)))
    return np.asarray(sorted(set(rows)), dtype=np.int64)


@lru_cache(maxsize=1)
def colour_table() -> dict[int, tuple[int, int, int]]:
    """Label id -> RGB for every MAISI label (background included, black)."""
    ids = sorted(i for i in maisi_labels.valid_ids() if i != 0)
    table: dict[int, tuple[int, int, int]] = {0: (0, 0, 0)}
    used: set[tuple[int, int, int]] = set()
    for label_id in ids:  # Slicer's colours first, each given once
        colour = maisi_labels.color_of(label_id) if label_id in SLICER_COLOURED_IDS else None
        if colour is not None and all(colour_distance(colour, other) >= MIN_DISTANCE_TO_KEEP for other in used):
            table[label_id] = tuple(int(v) for v in colour)  # type: ignore[assignment]
            used.add(table[label_id])
    pool = _candidates()
    pool_lab = _lab(pool)
    chosen_lab = _lab(np.asarray(sorted(used)))
    nearest = np.min(np.linalg.norm(pool_lab[:, None, :] - chosen_lab[None, :, :], axis=2), axis=1)
    for label_id in ids:
        if label_id in table:
            continue
        best = int(np.argmax(nearest))
        table[label_id] = tuple(int(v) for v in pool[best])  # type: ignore[assignment]
        nearest = np.minimum(nearest, np.linalg.norm(pool_lab - pool_lab[best], axis=1))
    return table


def colour_of(label_id: int) -> tuple[int, int, int]:
    return colour_table().get(int(label_id), UNKNOWN_COLOUR)
