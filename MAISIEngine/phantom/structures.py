"""Building blocks of the anatomy: labelled structures, tissue rules, seeded variation, label ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from MAISIEngine.labels import BODY, BONE_IDS
from MAISIEngine.phantom.shapes import Shape

TissueRule = Callable[[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray]
"""(field on a block, the block's axes) -> tissue codes for that block."""

# Label ids used by the phantom (MAISI label dictionary).
LIVER, SPLEEN, PANCREAS, KIDNEY_R, AORTA, IVC, GALLBLADDER, ESOPHAGUS, STOMACH = 1, 3, 4, 5, 6, 7, 10, 11, 12
KIDNEY_L, BLADDER, SMALL_BOWEL, TRACHEA, COLON, SACRUM = 14, 15, 19, 57, 62, 97
FEMUR_L, FEMUR_R, HIP_L, HIP_R = 93, 94, 95, 96
COSTAL_CARTILAGE, HEART, SPINAL_CORD, STERNUM, AIRWAY = 114, 115, 121, 122, 132
LUNG_LEFT_UPPER, LUNG_LEFT_LOWER, LUNG_RIGHT_UPPER, LUNG_RIGHT_MIDDLE, LUNG_RIGHT_LOWER = 28, 29, 30, 31, 32
RIB_LEFT_1, RIB_RIGHT_1 = 63, 75

SOFT_OVER = frozenset({BODY})
"""Default: a structure fills only unlabelled body, so organs painted earlier keep their shape."""
BONE_OVER = frozenset(range(1, 256)) - BONE_IDS
"""Bones are rigid: they overwrite any soft organ or vessel they meet, but never other bones."""


def const(code: int) -> TissueRule:
    """Every voxel of the structure is one tissue."""
    return lambda f, axes: np.full(f.shape, code, dtype=np.uint8)


def shell(outer: int, inner: int, threshold: float) -> TissueRule:
    """A rind (field > threshold) of one tissue around a core of another: cortex, wall."""
    return lambda f, axes: np.where(f > threshold, np.uint8(outer), np.uint8(inner))


@dataclass
class Structure:
    """A labelled solid, the tissue(s) it is made of, and the labels it may overwrite."""

    name: str
    label: int
    shape: Shape
    tissue: TissueRule
    over: frozenset[int] | None = SOFT_OVER  # None: may paint anywhere (only the body does)


class Variation:
    """Seeded anatomical variation: jittered positions, scaled sizes, bumpy surfaces."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def jitter(self, point, sd: float = 5.0) -> np.ndarray:
        return np.asarray(point, dtype=np.float64) + self.rng.normal(0.0, sd, 3)

    def scale(self, radii, lo: float = 0.88, hi: float = 1.12) -> np.ndarray:
        return np.asarray(radii, dtype=np.float64) * self.rng.uniform(lo, hi)

    def bumps(self, n: int = 2, amp: float = 0.06) -> list[tuple[float, np.ndarray, np.ndarray]]:
        return [
            (float(self.rng.uniform(0.3, 1.0) * amp), self.rng.uniform(1.0, 3.0, 3), self.rng.uniform(0, 2 * np.pi, 3))
            for _ in range(n)
        ]

    def uniform(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def normal(self, sd: float, n: int) -> np.ndarray:
        return self.rng.normal(0.0, sd, n)


def frame_from_axis(direction, secondary=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Rotation whose first column is `direction`, second as close as possible to `secondary`."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    s = np.asarray(secondary, dtype=np.float64)
    s = s - d * (s @ d)
    if np.linalg.norm(s) < 1e-6:
        s = np.array([1.0, 0.0, 0.0]) - d * d[0]
    s /= np.linalg.norm(s)
    return np.column_stack([d, s, np.cross(d, s)])


def max_all(*fields) -> np.ndarray:
    """Pointwise maximum of fields of broadcastable shapes: the intersection of constraints."""
    out = fields[0]
    for f in fields[1:]:
        out = np.maximum(out, f)
    return out
