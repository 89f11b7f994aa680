"""Voxel grid <-> DICOM image plane: NIfTI's RAS affine turned into LPS slice positions and back.

A volume's (i, j, k) axes become DICOM (column, row, slice): a slice k holds `array[:, :, k].T`
(rows run along j, columns along i), ImageOrientationPatient is the i and j directions in LPS, and
ImagePositionPatient is the centre of voxel (0, 0, k). Any rotation (oblique volumes) and any
spacing is exact; a sheared grid, which DICOM's image plane cannot describe, is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.valuerep import format_number_as_ds

from MAISIEngine.errors import MaisiError

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Flips x and y: RAS (NIfTI, Slicer) and LPS (DICOM) differ only in the sign of those axes."""


def ds(value: float) -> str:
    """A number as a DICOM decimal string (at most 16 characters, as precise as that allows)."""
    value = float(value)
    if abs(value) < 1e-12:
        value = 0.0
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # "1\\0\\0\\0\\1\\0", as scanners write whole numbers
    return format_number_as_ds(value)


def ds_list(values: Sequence[float]) -> list[str]:
    return [ds(v) for v in values]


@dataclass(frozen=True)
class SliceGeometry:
    """DICOM image-plane attributes of a volume, one position per slice."""

    row_cosines: np.ndarray  # direction of increasing column index (the i axis), LPS
    column_cosines: np.ndarray  # direction of increasing row index (the j axis), LPS
    pixel_spacing: tuple[float, float]  # (between rows, between columns) = (j spacing, i spacing)
    slice_spacing: float  # distance between consecutive slices along the slice normal (k spacing)
    positions: np.ndarray  # (n_slices, 3) LPS centre of voxel (0, 0, k)

    @property
    def orientation(self) -> list[float]:
        """ImageOrientationPatient: row direction then column direction."""
        return [*self.row_cosines.tolist(), *self.column_cosines.tolist()]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosines, self.column_cosines)


def slice_geometry(affine: np.ndarray, shape: Sequence[int], tolerance: float = 1e-4) -> SliceGeometry:
    """Image-plane geometry of every slice of a volume with this RAS affine and (i, j, k) shape."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise MaisiError("the image affine is not a finite 4x4 matrix", "fix the NIfTI header (qform/sform)")
    lps = RAS_TO_LPS @ affine
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing < 1e-9):
        raise MaisiError("the image affine has a zero-length voxel axis", "fix the NIfTI header (qform/sform)")
    unit = axes / spacing
    row, column, slice_dir = unit[:, 0], unit[:, 1], unit[:, 2]
    normal = np.cross(row, column)
    if abs(float(row @ column)) > tolerance or abs(abs(float(normal @ slice_dir)) - 1.0) > tolerance:
        raise MaisiError(
            "the image grid is sheared (its voxel axes are not perpendicular), which DICOM cannot describe",
            "resample the image onto a grid with perpendicular axes before exporting",
        )
    # Re-orthonormalise so the written cosines are exactly perpendicular unit vectors.
    column = column - (row @ column) * row
    column /= np.linalg.norm(column)
    positions = np.array([lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3] for k in range(int(shape[2]))])
    positions = _clear_of_single_precision_tilt(positions, [*row, *column])
    return SliceGeometry(row, column, (float(spacing[1]), float(spacing[0])), float(spacing[2]), positions)


def _single_precision_tilt_cosine(first: Sequence[str], last: Sequence[str], orientation: Sequence[str]) -> float:
    """Cosine between slice normal and slice stack as a single-precision reader computes it (dcm2niix)."""
    f32 = np.float32
    p1, p2 = (np.array([f32(float(v)) for v in p], dtype=f32) for p in (first, last))
    o = np.array([f32(float(v)) for v in orientation], dtype=f32)

    def positive(v: np.ndarray) -> np.ndarray:
        return v if v[int(np.argmax(np.abs(v)))] >= 0 else -v

    def dot(a: np.ndarray, b: np.ndarray) -> np.float32:
        return f32(f32(a[0] * b[0] + a[1] * b[1]) + a[2] * b[2])

    stack = (p2 - p1).astype(f32)
    length = f32(np.sqrt(dot(stack, stack)))
    stack = positive(stack)
    u, v = o[:3], o[3:]
    normal = positive(np.array([u[1] * v[2] - v[1] * u[2], u[2] * v[0] - v[2] * u[0], u[0] * v[1] - v[0] * u[1]], dtype=f32))
    return float(f32(dot(normal, stack) / f32(length * f32(np.sqrt(dot(normal, normal))))))


def _clear_of_single_precision_tilt(positions: np.ndarray, orientation: Sequence[float]) -> np.ndarray:
    """Shift the stack by at most 0.1 µm along its normal so single-precision readers see no gantry tilt.

    dcm2niix (up to at least v1.0.20220720) estimates a CT series' gantry tilt in float32 from the
    first and last slice and fails on the series when rounding puts that cosine above 1 (acos -> NaN),
    which happens for some oblique grids. A shift far below any voxel size avoids it.
    """
    if len(positions) < 2:
        return positions
    orientation_ds = ds_list(orientation)
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    for step in range(21):
        shift = (step + 1) // 2 * (1 if step % 2 else -1) * 1e-5
        moved = positions + shift * normal
        cosine = _single_precision_tilt_cosine(ds_list(moved[0]), ds_list(moved[-1]), orientation_ds)
        if cosine - 1.0 <= float(np.finfo(np.float32).eps):
            return moved
    return positions


def affine_from_slices(orientation: Sequence[float], pixel_spacing: Sequence[float],
                       positions: np.ndarray) -> np.ndarray:
    """RAS affine of the (i, j, k) = (column, row, slice) grid of a sorted stack of DICOM slices."""
    orientation = np.asarray(orientation, dtype=np.float64)
    row, column = orientation[:3], orientation[3:]
    positions = np.asarray(positions, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, 0] = row * float(pixel_spacing[1])
    lps[:3, 1] = column * float(pixel_spacing[0])
    if len(positions) > 1:
        lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        lps[:3, 2] = np.cross(row, column)
    lps[:3, 3] = positions[0]
    return RAS_TO_LPS @ lps
