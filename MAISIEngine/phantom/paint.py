"""Rasterise an anatomy onto a voxel grid (labels + tissues), or look up labels at scattered points.

Both walk the structures in painting order with the same overwrite rules, so a point query gives
exactly the label the grid would have at that point; tumour placement relies on this.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from MAISIEngine.phantom.shapes import slice_in
from MAISIEngine.phantom.structures import Structure

Axes = tuple[np.ndarray, np.ndarray, np.ndarray]


def _lookup(ids: Iterable[int]) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(ids)] = True
    return table


def paint(structures: list[Structure], axes: Axes) -> tuple[np.ndarray, np.ndarray]:
    """Label and tissue arrays on the grid spanned by the (template mm, ascending) axes."""
    shape = tuple(a.size for a in axes)
    labels = np.zeros(shape, dtype=np.uint8)
    tissue = np.zeros(shape, dtype=np.uint8)
    for st in structures:
        box = tuple(slice_in(c, lo, hi) for c, lo, hi in zip(axes, st.shape.lo, st.shape.hi))
        if any(s.stop <= s.start for s in box):
            continue
        sub = tuple(c[s] for c, s in zip(axes, box))
        f = st.shape.evaluate(*sub)
        inside = f < 1.0
        lab = labels[box]
        if st.over is not None:
            inside &= _lookup(st.over)[lab]
        if not inside.any():
            continue
        lab[inside] = st.label
        tissue[box][inside] = st.tissue(f, sub)[inside]  # type: ignore[arg-type]
    return labels, tissue


def labels_at(structures: list[Structure], points: np.ndarray) -> np.ndarray:
    """Labels the grid would have at (N, 3) template-mm points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    labels = np.zeros(len(pts), dtype=np.uint8)
    for st in structures:
        inside = st.shape.contains(pts)
        if st.over is not None:
            inside &= _lookup(st.over)[labels]
        labels[inside] = st.label
    return labels
