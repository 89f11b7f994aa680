"""The body envelope: a cavity contour that varies along z, wrapped in muscle, fat and skin.

Coordinates are the phantom's template millimetres: x toward the patient's right, y anterior, z
superior (RAS), z = 0 at the top of the right hemidiaphragm. The cavity contour at each height is a
superellipse; everything is expressed as a *radial* signed distance `s` from it (negative inside), so
the layers, the lung margins and the ribs all follow the same outline without distance transforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MAISIEngine.phantom.shapes import Shape

SKIN_MM = 2.0

# Template profile of the cavity (inside the muscle wall) from the thighs to the neck.
_Z = np.array([-700.0, -455, -420, -330, -250, -150, -60, -10, 50, 100, 140, 172, 200, 260])
_A = np.array([150.0, 150, 150, 150, 145, 138, 140, 145, 140, 128, 108, 75, 55, 50])
_B = np.array([90.0, 90, 88, 90, 92, 95, 98, 100, 100, 98, 90, 68, 55, 52])
_YC = np.array([-20.0, -20, -22, -25, -25, -25, -22, -20, -20, -20, -20, -20, -20, -22])
_P = np.array([2.4, 2.4, 2.4, 2.4, 2.4, 2.3, 2.3, 2.3, 2.3, 2.2, 2.1, 2.0, 2.0, 2.0])
_FAT = np.array([1.0, 1.0, 1.1, 1.2, 1.3, 1.3, 1.0, 0.8, 0.7, 0.6, 0.6, 0.4, 0.3, 0.3])


def _interp(z: np.ndarray, values: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.interp(z.ravel(), _Z, values).reshape(z.shape)


@dataclass(frozen=True)
class Torso:
    """Seeded body envelope (template mm)."""

    width: float  # multiplies the cavity half-width
    depth: float  # multiplies the cavity half-depth
    fat: float  # subcutaneous fat thickness at the abdomen, mm
    muscle: float  # muscle wall thickness, mm
    z_top: float  # the neck is cut here
    z_crotch: float  # below: two thighs
    thigh_x: float
    thigh_y: float
    thigh_r: float  # radius of the thigh inside its fat

    @classmethod
    def random(cls, rng: np.random.Generator) -> Torso:
        return cls(
            width=float(rng.uniform(0.95, 1.05)),
            depth=float(rng.uniform(0.93, 1.07)),
            fat=float(rng.uniform(6.0, 32.0)),
            muscle=float(rng.uniform(9.0, 13.0)),
            z_top=250.0,
            z_crotch=-455.0,
            thigh_x=float(rng.uniform(84.0, 92.0)),
            thigh_y=-12.0,
            thigh_r=float(rng.uniform(58.0, 66.0)),
        )

    # -- cavity -------------------------------------------------------------------------------
    def profile(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Cavity half-width a, half-depth b, centre y and superellipse exponent p at heights z."""
        return (
            _interp(z, _A) * self.width,
            _interp(z, _B) * self.depth,
            _interp(z, _YC),
            _interp(z, _P),
        )

    def cavity_radius(self, theta: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance from the cavity centre to its contour along angle theta (0 = lateral, +90 = anterior)."""
        a, b, _, p = self.profile(z)
        c, s = np.abs(np.cos(theta)), np.abs(np.sin(theta))
        return 1.0 / ((c / a) ** p + (s / b) ** p) ** (1.0 / p)

    def cavity_s(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Signed radial distance (mm) from the cavity contour: < 0 inside the muscle wall."""
        a, b, yc, p = self.profile(z)
        dy = y - yc
        tx = (np.abs(x) / a) ** p
        ty = (np.abs(dy) / b) ** p
        rn = (tx + ty) ** (1.0 / p)
        rho = np.sqrt(x * x + dy * dy)
        s = rho - rho / np.maximum(rn, 1e-6)
        return np.where(rn > 1e-6, s, -a).astype(np.float32)

    def fat_thickness(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Subcutaneous fat (mm): thicker over the abdomen and anteriorly, thin over chest and neck."""
        _, b, yc, _ = self.profile(z)
        front = np.clip((y - yc) / b, -1.0, 1.0)
        return self.fat * _interp(z, _FAT) * (1.0 + 0.3 * front)

    def wall(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Total thickness outside the cavity: muscle, fat and skin."""
        return self.muscle + self.fat_thickness(y, z) + SKIN_MM

    def front_y(self, z: float) -> float:
        """Anterior cavity boundary on the midline at height z (the sternum sits just outside it)."""
        _, b, yc, _ = self.profile(np.asarray(z))
        return float(yc + b)

    # -- thighs --------------------------------------------------------------------------------
    def thigh_s(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed distance (mm) from the nearer thigh's muscle outline."""
        dx = np.abs(x) - self.thigh_x
        dy = y - self.thigh_y
        return (np.sqrt(dx * dx + dy * dy) - self.thigh_r).astype(np.float32)


class BodyShape(Shape):
    """The whole body: torso down to the crotch, then two thighs; field = 1 + (s - wall) / 100."""

    def __init__(self, torso: Torso) -> None:
        self.torso = torso
        self.lo = np.array([-260.0, -220.0, -1e9])
        self.hi = np.array([260.0, 200.0, torso.z_top])

    def field(self, x, y, z):
        t = self.torso
        torso_f = 1.0 + (t.cavity_s(x, y, z) - t.wall(y, z)) / 100.0
        thigh_wall = 0.8 * t.fat + SKIN_MM
        thigh_f = 1.0 + (t.thigh_s(x, y) - thigh_wall) / 100.0
        f = np.where(z < t.z_crotch, thigh_f, torso_f)
        return np.where(z > t.z_top, 8.0, f).astype(np.float32)

    def evaluate(self, xs, ys, zs):
        t = self.torso
        out = np.full((xs.size, ys.size, zs.size), 8.0, dtype=np.float32)
        below = zs < t.z_crotch
        torso = (~below) & (zs <= t.z_top)
        if torso.any():
            z = zs[torso][None, None, :]
            x, y = xs[:, None, None], ys[None, :, None]
            out[:, :, torso] = 1.0 + (t.cavity_s(x, y, z) - t.wall(y, z)) / 100.0
        if below.any():
            thigh_wall = 0.8 * t.fat + SKIN_MM
            f = 1.0 + (t.thigh_s(xs[:, None], ys[None, :]) - thigh_wall) / 100.0
            out[:, :, below] = f[:, :, None]
        return out

    def layers(
        self, field: np.ndarray, axes: tuple[np.ndarray, np.ndarray, np.ndarray], codes: dict[str, int]
    ) -> np.ndarray:
        """Tissue codes of the body wall: skin, subcutaneous fat, muscle; `inner` inside the cavity."""
        t = self.torso
        xs, ys, zs = axes
        depth = (1.0 - field) * 100.0  # mm below the skin
        y, z = ys[None, :, None], zs[None, None, :]
        fat = np.where(z < t.z_crotch, 0.8 * t.fat, t.fat_thickness(y, z))
        wall = np.where(z < t.z_crotch, 0.8 * t.fat + SKIN_MM, t.wall(y, z))
        inner = np.where(z < t.z_crotch, codes["muscle"], codes["inner"]).astype(np.uint8)
        out = np.where(depth < wall, codes["muscle"], inner).astype(np.uint8)
        out = np.where(depth < SKIN_MM + fat, np.uint8(codes["fat"]), out)
        return np.where(depth < SKIN_MM, np.uint8(codes["skin"]), out)
