"""Tissues of the phantom: nominal HU, texture amplitude, and the vessels and gas inside organs.

Labels say *which organ*, tissues say *what material*: one organ may hold several (kidney cortex and
medulla, bone cortex and marrow, stomach fluid and gas), and the unlabelled body holds skin, fat and
muscle layers. Nominal HU follow non-contrast adult CT and sit near the centre of the per-organ
median statistics that MAISI's quality check uses (liver 62, spleen 52, pancreas 42, kidney cortex
80 around medulla 50, lung -850, bone group median ~250), so the check passes on every phantom.
`scanner` turns the tissues into a CT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MAISIEngine.phantom.fields import SmoothField


@dataclass(frozen=True)
class Tissue:
    code: int
    name: str
    hu: float
    texture: float  # standard deviation (HU) of the smooth texture inside this tissue


TISSUES: tuple[Tissue, ...] = (
    Tissue(0, "air", -1000.0, 0.0),
    Tissue(1, "skin", 20.0, 6.0),
    Tissue(2, "fat", -100.0, 10.0),
    Tissue(3, "muscle", 50.0, 7.0),
    Tissue(4, "inner", -90.0, 10.0),  # unlabelled inside of the cavity, split into fat and soft tissue
    Tissue(5, "soft tissue", 30.0, 8.0),
    Tissue(6, "lung", -850.0, 18.0),
    Tissue(7, "lung vessel", 30.0, 10.0),
    Tissue(8, "airway air", -990.0, 3.0),
    Tissue(9, "airway wall", 40.0, 5.0),
    Tissue(10, "blood", 42.0, 4.0),
    Tissue(11, "myocardium", 50.0, 4.0),
    Tissue(12, "liver", 62.0, 5.0),
    Tissue(13, "bile", 8.0, 3.0),
    Tissue(14, "spleen", 52.0, 5.0),
    Tissue(15, "kidney cortex", 80.0, 5.0),
    Tissue(16, "kidney medulla", 50.0, 5.0),
    Tissue(17, "pancreas", 42.0, 9.0),
    Tissue(18, "gastric content", 18.0, 8.0),
    Tissue(19, "gas", -920.0, 20.0),
    Tissue(20, "small bowel", 30.0, 8.0),
    Tissue(21, "colon wall", 40.0, 6.0),
    Tissue(22, "colon content", -30.0, 25.0),
    Tissue(23, "urine", 8.0, 3.0),
    Tissue(24, "cancellous bone", 230.0, 35.0),
    Tissue(25, "cortical bone", 850.0, 60.0),
    Tissue(26, "marrow", -40.0, 15.0),
    Tissue(27, "cartilage", 120.0, 15.0),
    Tissue(28, "csf", 8.0, 3.0),
    Tissue(29, "spinal cord", 35.0, 3.0),
    Tissue(30, "disc", 85.0, 8.0),
    Tissue(31, "esophagus", 40.0, 5.0),
    Tissue(32, "lung tumor", 30.0, 8.0),
    Tissue(33, "pancreatic tumor", 20.0, 6.0),
    Tissue(34, "hepatic tumor", 28.0, 6.0),
    Tissue(35, "colon tumor", 45.0, 6.0),
    Tissue(36, "bone lesion", 40.0, 10.0),
)

T: dict[str, int] = {t.name: t.code for t in TISSUES}
"""Tissue name -> code."""

HU = np.array([t.hu for t in TISSUES], dtype=np.float32)
TEXTURE = np.array([t.texture for t in TISSUES], dtype=np.float32)

# Smooth fields (seed stream ids).
_MIX, _GAS, _VESSEL_A, _VESSEL_B, FINE_TEXTURE, COARSE_TEXTURE = 11, 12, 13, 14, 15, 16


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    if not mask.any():
        return None
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)  # type: ignore[return-value]


def refine_tissues(
    tissue: np.ndarray, axes: tuple[np.ndarray, np.ndarray, np.ndarray], seed: int, hilum: list[np.ndarray]
) -> None:
    """Turn placeholder tissues into materials with spatial structure (in place).

    The unlabelled cavity becomes a mosaic of fat and soft tissue, colon content gets gas pockets, and
    lung parenchyma gets a network of vessel-like tubes (where two smooth fields both cross zero),
    thicker near the hila.
    """
    xs, ys, zs = axes
    inner = tissue == T["inner"]
    box = _bbox(inner)
    if box is not None:
        mix = SmoothField(seed, _MIX, 7.0).evaluate(xs[box[0]], ys[box[1]], zs[box[2]])
        sub = tissue[box]
        sub[(sub == T["inner"]) & (np.abs(mix) < 0.12)] = T["soft tissue"]  # thin septa and vessels
        sub[sub == T["inner"]] = T["fat"]

    colon = tissue == T["colon content"]
    box = _bbox(colon)
    if box is not None:
        gas = SmoothField(seed, _GAS, 12.0).evaluate(xs[box[0]], ys[box[1]], zs[box[2]])
        sub = tissue[box]
        sub[(sub == T["colon content"]) & (gas > 0.7)] = T["gas"]

    lung = tissue == T["lung"]
    box = _bbox(lung)
    if box is not None:
        bx, by, bz = xs[box[0]], ys[box[1]], zs[box[2]]
        va = SmoothField(seed, _VESSEL_A, 9.0).evaluate(bx, by, bz)
        vb = SmoothField(seed, _VESSEL_B, 9.0).evaluate(bx, by, bz)
        near = np.zeros(va.shape, dtype=np.float32)
        for h in hilum:  # distance to each hilum, squared, separable
            d2 = (bx[:, None, None] - h[0]) ** 2 + (by[None, :, None] - h[1]) ** 2 + (bz[None, None, :] - h[2]) ** 2
            np.maximum(near, np.exp(-d2 / (2 * 45.0**2)).astype(np.float32), out=near)
        width = 0.16 + 0.32 * near
        vessel = (np.abs(va) < width) & (np.abs(vb) < width)
        sub = tissue[box]
        sub[(sub == T["lung"]) & vessel] = T["lung vessel"]


def median_by_label(labels: np.ndarray, tissue: np.ndarray) -> dict[int, float]:
    """Median nominal HU of each label present, from a label x tissue histogram (one pass)."""
    n_t = len(TISSUES)
    counts = np.bincount(labels.ravel().astype(np.int64) * n_t + tissue.ravel(), minlength=256 * n_t).reshape(256, n_t)
    order = np.argsort(HU, kind="stable")
    result: dict[int, float] = {}
    for label in np.flatnonzero(counts.sum(axis=1)):
        c = counts[label, order]
        cum = np.cumsum(c)
        total = cum[-1]
        lo = int(np.searchsorted(cum, (total - 1) // 2 + 1))
        hi = int(np.searchsorted(cum, total // 2 + 1))
        result[int(label)] = float((HU[order[lo]] + HU[order[hi]]) / 2.0)
    return result
