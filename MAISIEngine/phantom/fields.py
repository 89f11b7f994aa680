"""Smooth random fields defined in millimetres, so texture does not change with the voxel size.

White noise lives on a lattice with a fixed step in mm; its values come from blocks seeded by
(seed, field, block index), so any field of view draws exactly the values it needs and two grids of
the same person see the same field where they overlap. The field at a voxel is a Gaussian-weighted
sum of lattice values, computed separably (three small matrix products), normalised to unit variance.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 16
_OFFSET = 1 << 20  # keeps block indices non-negative for SeedSequence


class SmoothField:
    """A zero-mean, unit-variance random field with correlation length about `step_mm`."""

    def __init__(self, seed: int, field_id: int, step_mm: float) -> None:
        self.seed = int(seed)
        self.field_id = int(field_id)
        self.step = float(step_mm)

    def _lattice(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Lattice values for indices lo..hi (inclusive, per axis), assembled from seeded blocks."""
        shape = tuple(int(h - l + 1) for l, h in zip(lo, hi))
        out = np.empty(shape, dtype=np.float32)
        b_lo = np.floor_divide(lo, _BLOCK)
        b_hi = np.floor_divide(hi, _BLOCK)
        for bi in range(b_lo[0], b_hi[0] + 1):
            for bj in range(b_lo[1], b_hi[1] + 1):
                for bk in range(b_lo[2], b_hi[2] + 1):
                    rng = np.random.default_rng([self.seed, self.field_id, bi + _OFFSET, bj + _OFFSET, bk + _OFFSET])
                    block = rng.standard_normal((_BLOCK, _BLOCK, _BLOCK), dtype=np.float32)
                    start = np.array([bi, bj, bk]) * _BLOCK
                    src_lo = np.maximum(lo, start) - start
                    src_hi = np.minimum(hi, start + _BLOCK - 1) - start
                    dst_lo = start + src_lo - lo
                    src = tuple(slice(a, b + 1) for a, b in zip(src_lo, src_hi))
                    dst = tuple(slice(a, a + (b - s) + 1) for a, b, s in zip(dst_lo, src_hi, src_lo))
                    out[dst] = block[src]
        return out

    def _weights(self, coords: np.ndarray, first: int, count: int) -> np.ndarray:
        lattice = (first + np.arange(count)) * self.step
        w = np.exp(-0.5 * ((coords[:, None] - lattice[None, :]) / self.step) ** 2)
        w /= np.sqrt((w * w).sum(axis=1, keepdims=True))
        return w.astype(np.float32)

    def evaluate(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """Field on the grid spanned by 1-D axes (mm), shape (len(xs), len(ys), len(zs))."""
        axes = [np.asarray(a, dtype=np.float64) for a in (xs, ys, zs)]
        reach = 3.5
        lo = np.array([int(np.floor(a.min() / self.step - reach)) for a in axes])
        hi = np.array([int(np.ceil(a.max() / self.step + reach)) for a in axes])
        values = self._lattice(lo, hi)
        wx, wy, wz = (self._weights(a, int(l), int(h - l + 1)) for a, l, h in zip(axes, lo, hi))
        # Each step is one plain 2-D matrix product (BLAS); the largest comes last.
        out = np.tensordot(values, wz, axes=(2, 1))  # (Lx, Ly, nz)
        out = np.tensordot(out, wy, axes=(1, 1))  # (Lx, nz, ny)
        out = np.tensordot(wx, out, axes=(1, 0))  # (nx, nz, ny)
        return np.ascontiguousarray(out.transpose(0, 2, 1))
