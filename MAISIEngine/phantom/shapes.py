"""Analytic solids in millimetres, evaluated fast on axis-aligned voxel grids or at scattered points.

Every shape returns a *field*: a float that is below 1 inside the solid and grows outward (for blobs
and tubes it is the normalised radius, 0 on the axis or centre, 1 on the surface), so the same shape
gives the label (field < 1) and the tissue layers (e.g. a cortical shell where field > 0.9).

Because shapes are defined in mm and sampled at voxel centres, the same parameters give the same
anatomy at any voxel size. Grid evaluation works on the shape's bounding box only and keeps per-axis
terms one-dimensional wherever the geometry allows, which is what makes a 128^3 phantom take well
under a second.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

FAR = np.float32(8.0)
"""Field value given to voxels outside a shape's bounding box: clearly outside."""

Axes = tuple[np.ndarray, np.ndarray, np.ndarray]


def slice_in(coords: np.ndarray, lo: float, hi: float) -> slice:
    """Index range of sorted 1-D `coords` within [lo, hi]."""
    start = int(np.searchsorted(coords, lo, side="left"))
    stop = int(np.searchsorted(coords, hi, side="right"))
    return slice(start, max(start, stop))


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix (degrees) about z (yaw), then y (pitch), then x (roll); columns are the body axes."""
    a, b, c = np.deg2rad([yaw, pitch, roll])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


class Shape:
    """Base class: a bounding box (mm) and a field that is < 1 inside."""

    lo: np.ndarray
    hi: np.ndarray

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Field at points given as broadcastable coordinate arrays (mm)."""
        raise AttributeError(f"{type(self).__name__} defines no field")

    def evaluate(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """Field on the grid spanned by sorted 1-D axes; FAR outside the bounding box."""
        out = np.full((xs.size, ys.size, zs.size), FAR, dtype=np.float32)
        sx, sy, sz = (slice_in(c, lo, hi) for c, lo, hi in zip((xs, ys, zs), self.lo, self.hi))
        if sx.stop <= sx.start or sy.stop <= sy.start or sz.stop <= sz.start:
            return out
        out[sx, sy, sz] = self.field(xs[sx, None, None], ys[None, sy, None], zs[None, None, sz])
        return out

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean membership of (N, 3) points in mm."""
        pts = np.asarray(points, dtype=np.float64)
        inside_box = np.all((pts >= self.lo) & (pts <= self.hi), axis=1)
        result = np.zeros(len(pts), dtype=bool)
        if inside_box.any():
            p = pts[inside_box]
            result[inside_box] = np.asarray(self.field(p[:, 0], p[:, 1], p[:, 2])) < 1.0
        return result


class Blob(Shape):
    """Superellipsoid, optionally rotated, with a smooth random bumpiness of its surface.

    Field = ((|u|^p + |v|^p)^(q/p) + |w|^q)^(1/q) / (1 + bumps), with (u, v, w) the point in the
    blob's own frame divided by its radii: p shapes the cross-section, q flattens the ends.
    """

    def __init__(
        self,
        center: Sequence[float],
        radii: Sequence[float],
        p: float = 2.0,
        q: float | None = None,
        rot: np.ndarray | None = None,
        bumps: Sequence[tuple[float, Sequence[float], Sequence[float]]] = (),
    ) -> None:
        self.center = np.asarray(center, dtype=np.float64)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.p = float(p)
        self.q = float(p if q is None else q)
        self.rot = None if rot is None else np.asarray(rot, dtype=np.float64)
        self.bumps = [(float(a), np.asarray(k, float), np.asarray(ph, float)) for a, k, ph in bumps]
        grow = 1.0 + sum(abs(a) for a, _, _ in self.bumps)
        if self.rot is None:
            half = self.radii * grow
        else:  # conservative box of the rotated solid
            half = np.abs(self.rot) @ self.radii * grow
        self.lo = self.center - half
        self.hi = self.center + half

    def _frame(self, x, y, z):
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        if self.rot is None:
            return dx / self.radii[0], dy / self.radii[1], dz / self.radii[2]
        r = self.rot  # body axis j is column j: coordinate along it is r[:, j] . d
        u = (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz) / self.radii[0]
        v = (r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz) / self.radii[1]
        w = (r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz) / self.radii[2]
        return u, v, w

    @staticmethod
    def _pow(a, e: float):
        a = np.abs(a)
        return a * a if e == 2.0 else a**e

    def field(self, x, y, z):
        u, v, w = self._frame(x, y, z)
        p, q = self.p, self.q
        cross = self._pow(u, p) + self._pow(v, p)
        if p != q:
            cross = cross ** (q / p)
        base = (cross + self._pow(w, q)) ** (1.0 / q)
        if self.bumps:
            bump = 1.0
            for amp, k, ph in self.bumps:
                bump = bump + amp * np.cos(k[0] * u + ph[0]) * np.cos(k[1] * v + ph[1]) * np.cos(k[2] * w + ph[2])
            base = base / bump
        return base.astype(np.float32, copy=False)


class Tube(Shape):
    """A tube of varying radius around a polyline; field = distance to the axis / local radius."""

    def __init__(self, points: Sequence[Sequence[float]], radii: Sequence[float] | float) -> None:
        self.points = np.asarray(points, dtype=np.float64)
        if np.isscalar(radii):
            radii = [float(radii)] * len(self.points)  # type: ignore[list-item]
        self.radii = np.asarray(radii, dtype=np.float64)
        pad = self.radii.max()
        self.lo = self.points.min(axis=0) - pad
        self.hi = self.points.max(axis=0) + pad

    def _segment_field(self, i: int, x, y, z):
        p0, p1 = self.points[i], self.points[i + 1]
        r0, r1 = self.radii[i], self.radii[i + 1]
        d = p1 - p0
        dd = float(d @ d) or 1e-9
        ax, ay, az = x - p0[0], y - p0[1], z - p0[2]
        along = ax * d[0] + ay * d[1] + az * d[2]
        t = np.clip(along / dd, 0.0, 1.0)
        dist2 = ax * ax + ay * ay + az * az - 2.0 * t * along + t * t * dd
        radius = r0 + t * (r1 - r0)
        return (np.sqrt(np.maximum(dist2, 0.0)) / radius).astype(np.float32, copy=False)

    def field(self, x, y, z):
        out = None
        for i in range(len(self.points) - 1):
            f = self._segment_field(i, x, y, z)
            out = f if out is None else np.minimum(out, f)
        return out

    def evaluate(self, xs, ys, zs):
        out = np.full((xs.size, ys.size, zs.size), FAR, dtype=np.float32)
        for i in range(len(self.points) - 1):
            pad = max(self.radii[i], self.radii[i + 1])
            lo = np.minimum(self.points[i], self.points[i + 1]) - pad
            hi = np.maximum(self.points[i], self.points[i + 1]) + pad
            sx, sy, sz = (slice_in(c, a, b) for c, a, b in zip((xs, ys, zs), lo, hi))
            if sx.stop <= sx.start or sy.stop <= sy.start or sz.stop <= sz.start:
                continue
            f = self._segment_field(i, xs[sx, None, None], ys[None, sy, None], zs[None, None, sz])
            np.minimum(out[sx, sy, sz], f, out=out[sx, sy, sz])
        return out


class Shell(Shape):
    """A plate of given thickness (mm) following the surface of an ellipsoid (e.g. an iliac wing)."""

    def __init__(self, center: Sequence[float], radii: Sequence[float], thickness: float) -> None:
        self.center = np.asarray(center, dtype=np.float64)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.half = float(thickness) / 2.0
        self.lo = self.center - self.radii - self.half
        self.hi = self.center + self.radii + self.half

    def field(self, x, y, z):
        u = (x - self.center[0]) / self.radii[0]
        v = (y - self.center[1]) / self.radii[1]
        w = (z - self.center[2]) / self.radii[2]
        r = np.sqrt(u * u + v * v + w * w)
        # Distance to the surface in mm along the radial direction, approximately.
        scale = self.radii.mean()
        return (np.abs(r - 1.0) * scale / self.half).astype(np.float32, copy=False)


class Region(Shape):
    """A constraint given by a function (e.g. 'below the diaphragm'); unbounded unless a box is given."""

    def __init__(
        self,
        fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        lo: Sequence[float] = (-np.inf,) * 3,
        hi: Sequence[float] = (np.inf,) * 3,
    ) -> None:
        self.fn = fn
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)

    def field(self, x, y, z):
        return np.asarray(self.fn(x, y, z), dtype=np.float32)

    def evaluate(self, xs, ys, zs):
        if np.all(np.isinf(self.lo)) and np.all(np.isinf(self.hi)):
            f = self.field(xs[:, None, None], ys[None, :, None], zs[None, None, :])
            return np.broadcast_to(f, (xs.size, ys.size, zs.size)).astype(np.float32)
        return super().evaluate(xs, ys, zs)


class Union(Shape):
    """Inside any part; the field is the minimum of the parts' fields."""

    def __init__(self, *parts: Shape) -> None:
        self.parts = parts
        self.lo = np.min([p.lo for p in parts], axis=0)
        self.hi = np.max([p.hi for p in parts], axis=0)

    def field(self, x, y, z):
        return np.minimum.reduce(
            [np.broadcast_to(p.field(x, y, z), np.broadcast_shapes(x.shape, y.shape, z.shape)) for p in self.parts]
        )

    def evaluate(self, xs, ys, zs):
        out = self.parts[0].evaluate(xs, ys, zs)
        for p in self.parts[1:]:
            np.minimum(out, p.evaluate(xs, ys, zs), out=out)
        return out

    def contains(self, points):
        result = np.zeros(len(points), dtype=bool)
        for p in self.parts:
            result |= p.contains(points)
        return result


class Clip(Shape):
    """The first shape kept only where every constraint holds (field of the first shape inside)."""

    def __init__(self, shape: Shape, *constraints: Shape) -> None:
        self.shape = shape
        self.constraints = constraints
        self.lo = np.max([shape.lo] + [c.lo for c in constraints], axis=0)
        self.hi = np.min([shape.hi] + [c.hi for c in constraints], axis=0)

    def evaluate(self, xs, ys, zs):
        out = np.full((xs.size, ys.size, zs.size), FAR, dtype=np.float32)
        sx, sy, sz = (slice_in(c, lo, hi) for c, lo, hi in zip((xs, ys, zs), self.lo, self.hi))
        if sx.stop <= sx.start or sy.stop <= sy.start or sz.stop <= sz.start:
            return out
        sub = (xs[sx], ys[sy], zs[sz])
        f = self.shape.evaluate(*sub)
        inside = f < 1.0
        for c in self.constraints:
            if not inside.any():
                break
            inside &= c.evaluate(*sub) < 1.0
        out[sx, sy, sz] = np.where(inside, f, FAR)
        return out

    def contains(self, points):
        result = self.shape.contains(points)
        for c in self.constraints:
            result &= c.contains(points)
        return result


def catmull_rom(control: Sequence[Sequence[float]], samples_per_span: int = 6) -> np.ndarray:
    """A smooth curve through the control points (centripetal-free uniform Catmull-Rom), as a polyline."""
    pts = np.asarray(control, dtype=np.float64)
    if len(pts) < 3:
        return pts
    padded = np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    t = np.linspace(0.0, 1.0, samples_per_span, endpoint=False)[:, None]
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1], padded[i], padded[i + 1], padded[i + 2]
        out.append(
            0.5
            * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
    out.append(pts[-1:])
    return np.vstack(out)


def resample_radii(control_radii: Sequence[float], n_control: int, samples_per_span: int = 6) -> np.ndarray:
    """Radii at the points `catmull_rom` produces, linearly interpolated between control radii."""
    radii = np.asarray(control_radii, dtype=np.float64)
    if n_control < 3:
        return radii
    t = np.concatenate(
        [np.arange(n_control - 1)[:, None] + np.linspace(0, 1, samples_per_span, endpoint=False)[None, :]]
    ).ravel()
    t = np.append(t, n_control - 1)
    return np.interp(t, np.arange(n_control), radii)


def smooth_tube(control: Sequence[Sequence[float]], radii: Sequence[float] | float, samples_per_span: int = 6) -> Tube:
    """A tube along a Catmull-Rom curve through the control points."""
    pts = catmull_rom(control, samples_per_span)
    if np.isscalar(radii):
        return Tube(pts, float(radii))  # type: ignore[arg-type]
    return Tube(pts, resample_radii(radii, len(control), samples_per_span))
