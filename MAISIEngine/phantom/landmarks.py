"""Seeded landmarks every organ is placed against: diaphragm domes, spine curve, vertebral levels.

Template frame: x toward the patient's right, y anterior, z superior (RAS); z = 0 at the top of the
right hemidiaphragm, the midline at x = 0. Vertebral heights follow adult anatomy (L5 to C3, about
435 mm from the sacral promontory to T1), with the lumbar lordosis and thoracic kyphosis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from MAISIEngine.phantom.shapes import Region
from MAISIEngine.phantom.structures import Variation
from MAISIEngine.phantom.torso import Torso

VERTEBRAE: tuple[tuple[int, str, float], ...] = (
    (33, "L5", 34), (34, "L4", 34), (35, "L3", 33), (36, "L2", 32), (37, "L1", 30),
    (38, "T12", 28), (39, "T11", 26), (40, "T10", 25), (41, "T9", 24), (42, "T8", 23),
    (43, "T7", 22), (44, "T6", 22), (45, "T5", 21), (46, "T4", 21), (47, "T3", 20),
    (48, "T2", 20), (49, "T1", 20), (50, "C7", 17), (51, "C6", 16), (52, "C5", 16),
    (53, "C4", 16), (54, "C3", 16),
)  # fmt: skip
"""(MAISI id, name, height in mm including the disc below) from L5 upward."""

L5_BOTTOM = -280.0
_SPINE_Z = np.array([-420.0, -280, -200, -120, 0, 100, 160, 250])
_SPINE_Y = np.array([-95.0, -55, -42, -55, -68, -70, -55, -38])


class Level(NamedTuple):
    """One vertebra: id, name, bottom and top height, body half-width/half-depth, canal radius (mm)."""

    label: int
    name: str
    z_bottom: float
    z_top: float
    rx: float
    ry: float
    rc: float


def _levels() -> list[Level]:
    levels, z = [], L5_BOTTOM
    last = len(VERTEBRAE) - 1
    for index, (label, name, height) in enumerate(VERTEBRAE):
        t = index / last
        rx = float(np.interp(t, [0, 0.25, 0.75, 0.8, 1.0], [25, 22, 15, 11, 10]))
        ry = float(np.interp(t, [0, 0.25, 0.75, 0.8, 1.0], [18, 16, 12, 8.5, 8]))
        rc = float(np.interp(t, [0, 0.2, 0.3, 0.75, 0.8, 1.0], [11, 10, 8, 8, 9, 9]))
        levels.append(Level(label, name, z, z + height, rx, ry, rc))
        z += height
    return levels


@dataclass(frozen=True)
class Landmarks:
    torso: Torso
    z_right: float  # top of the right hemidiaphragm
    z_left: float  # top of the left one, lower
    dome_x: float  # lateral offset of each dome's summit
    spine_knots_y: np.ndarray
    sway: float  # mild scoliosis amplitude, mm
    levels: tuple[Level, ...]

    @classmethod
    def random(cls, draw: Variation, torso: Torso) -> Landmarks:
        z_right = draw.uniform(-8.0, 8.0)
        return cls(
            torso=torso,
            z_right=z_right,
            z_left=z_right - draw.uniform(10.0, 22.0),
            dome_x=draw.uniform(60.0, 72.0),
            spine_knots_y=_SPINE_Y + draw.normal(3.0, len(_SPINE_Y)),
            sway=draw.uniform(-4.0, 4.0),
            levels=tuple(_levels()),
        )

    # -- diaphragm ------------------------------------------------------------------------------------
    def diaphragm(self, x, y):
        """Height of the diaphragm's upper surface: two domes with deep posterior recesses."""
        dy = y + 5.0
        ry = np.where(dy < 0, 72.0, 95.0)
        right = self.z_right - 60.0 * (((x - self.dome_x) / 85.0) ** 2 + (dy / ry) ** 2)
        left = self.z_left - 60.0 * (((x + self.dome_x) / 85.0) ** 2 + (dy / ry) ** 2)
        return np.maximum(right, left)

    def above_diaphragm(self, margin: float) -> Region:
        return Region(lambda x, y, z: 1.0 + (self.diaphragm(x, y) + margin - z) / 50.0)

    def below_diaphragm(self, margin: float) -> Region:
        return Region(lambda x, y, z: 1.0 + (z - (self.diaphragm(x, y) - margin)) / 50.0)

    # -- spine ----------------------------------------------------------------------------------------
    def spine_y(self, z):
        """Antero-posterior position of the vertebral body centres at heights z."""
        z = np.asarray(z, dtype=np.float64)
        return np.interp(z.ravel(), _SPINE_Z, self.spine_knots_y).reshape(z.shape)

    def spine_x(self, z):
        return self.sway * np.sin(np.asarray(z, dtype=np.float64) / 180.0)

    def _per_level(self, z, field: str) -> float:
        return np.interp(z, [lv.z_bottom for lv in self.levels], [getattr(lv, field) for lv in self.levels])

    def canal_center(self, z: float) -> tuple[np.ndarray, float]:
        """Centre and radius of the spinal canal at height z (just behind the vertebral body)."""
        ry, rc = self._per_level(z, "ry"), self._per_level(z, "rc")
        return np.array([self.spine_x(z), self.spine_y(z) - ry - 0.9 * rc, z]), float(rc)

    def front_of_spine(self, z: float, gap: float) -> float:
        """y just in front of the vertebral body at height z, plus `gap` mm (aorta, vena cava)."""
        return float(self.spine_y(z)) + float(self._per_level(z, "ry")) + gap

    def outside_spine(self) -> Region:
        """Everywhere but the vertebral column and the muscles behind it, where no organ may go."""
        return Region(lambda x, y, z: 2.0 - ((x / 38.0) ** 2 + ((y - self.spine_y(z) + 20.0) / 48.0) ** 2))

    def level(self, label: int) -> Level:
        return next(lv for lv in self.levels if lv.label == label)

    # -- body cavity ------------------------------------------------------------------------------------
    def cavity(self, margin: float) -> Region:
        """Inside the muscle wall, at least `margin` mm from it."""
        return Region(lambda x, y, z: 1.0 + (self.torso.cavity_s(x, y, z) + margin) / 50.0)
