"""Voxel geometry shared by NIfTI files and Slicer volume nodes.

A NIfTI affine (nibabel, RAS) maps voxel indices (i, j, k) to RAS millimetres; Slicer's IJKToRAS
matrix maps the same indices to the same RAS space, so the two are one matrix. What differs is the
array layout: nibabel arrays are indexed (i, j, k), `slicer.util.arrayFromVolume` arrays (k, j, i).
Slicer's storage nodes convert RAS to the LPS of ITK-written files themselves. Everything that moves
geometry between the engine and MRML goes through the functions below, so there is one place to get
it right.
"""

from __future__ import annotations

import numpy as np


def _checked_matrix(matrix: np.ndarray, what: str) -> np.ndarray:
    out = np.array(matrix, dtype=np.float64)
    if out.shape != (4, 4):
        raise ValueError(f"{what} must be 4x4, got {out.shape}")
    if not np.all(np.isfinite(out)) or abs(np.linalg.det(out[:3, :3])) < 1e-12:
        raise ValueError(f"{what} is singular or not finite")
    if not np.allclose(out[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{what} has a projective last row {out[3].tolist()}")
    return out


def ijk_to_ras_from_affine(affine: np.ndarray) -> np.ndarray:
    """Slicer's IJKToRAS for a NIfTI (RAS) affine; `affine_from_ijk_to_ras` is its inverse."""
    return _checked_matrix(affine, "NIfTI affine")


def affine_from_ijk_to_ras(ijk_to_ras: np.ndarray) -> np.ndarray:
    """The NIfTI (RAS) affine of a Slicer volume whose IJKToRAS matrix is given."""
    return _checked_matrix(ijk_to_ras, "IJKToRAS matrix")


def decompose(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin (3,), spacing (3,) and unit direction columns (3, 3) of an affine."""
    matrix = _checked_matrix(affine, "affine")
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    return matrix[:3, 3].copy(), spacing, matrix[:3, :3] / spacing


def compose(origin: np.ndarray, spacing: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """The affine of a grid with this origin, spacing and direction columns."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(directions, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    matrix[:3, 3] = np.asarray(origin, dtype=np.float64)
    return matrix


def slicer_array(ijk_array: np.ndarray) -> np.ndarray:
    """A nibabel-ordered (i, j, k) array in the (k, j, i) order of `slicer.util.arrayFromVolume`."""
    return np.ascontiguousarray(np.transpose(ijk_array, (2, 1, 0)))


def nifti_array(kji_array: np.ndarray) -> np.ndarray:
    """A Slicer (k, j, i) array in nibabel's (i, j, k) order."""
    return np.ascontiguousarray(np.transpose(kji_array, (2, 1, 0)))


def field_of_view_mm(size: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    return tuple(float(n) * float(s) for n, s in zip(size, spacing))  # type: ignore[return-value]
