"""The voxel order scanners write, for Slicer volumes: pure numpy on a Slicer array and its IJKToRAS.

A scanner's axial CT of a supine patient runs its columns to the patient's left, its rows to the
posterior and its slices towards the head (ImageOrientationPatient 1\\0\\0\\0\\1\\0). Slicer's DICOM
exporter writes a volume's slices in the node's own IJK order, so a RAS-ordered CT (every CT the
engine generates) comes out upside down and mirrored in viewers that show pixels as stored. Reordering
the voxels first (axes permuted and flipped, never resampled; the IJKToRAS adjusted so each voxel keeps
its world position) makes the exporter write the scanner's order. An oblique grid takes the nearest
such order.

This mirrors `MAISIEngine.io.dicom.orientation` (which uses nibabel, a package Slicer does not ship);
`Testing/test_slicer_dicom_scanner_order.py` checks that the two agree.
"""

from __future__ import annotations

import numpy as np

SCANNER_DIRECTIONS = np.array([-1.0, -1.0, 1.0])
"""RAS sign of the world axis each exported IJK axis runs along: i -> -x (left), j -> -y (posterior), k -> +z."""


def nearest_world_axes(ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each IJK axis, the RAS axis (0, 1, 2) it runs nearest to and the sign (+1, -1) along it.

    The nearest orthogonal matrix to the column-normalised direction matrix (polar decomposition) is
    matched greedily by its largest entries, so every IJK axis gets a different world axis.
    """
    matrix = np.asarray(ijk_to_ras, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise ValueError("IJKToRAS must be a finite, invertible 4x4 matrix")
    directions = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
    u, _, vt = np.linalg.svd(directions)
    rotation = np.abs(u @ vt)  # rows: world axes, columns: IJK axes
    world_axis = np.full(3, -1)
    for _ in range(3):
        row, column = np.unravel_index(np.argmax(rotation), rotation.shape)
        world_axis[column] = row
        rotation[row, :] = -1.0
        rotation[:, column] = -1.0
    signs = np.sign(directions[world_axis, np.arange(3)])
    return world_axis, signs


def scanner_order_index_map(ijk_to_ras: np.ndarray, shape_ijk: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(source axis of each new IJK axis, 4x4 matrix taking new voxel indices to the old ones)."""
    world_axis, signs = nearest_world_axes(ijk_to_ras)
    source = np.array([int(np.flatnonzero(world_axis == n)[0]) for n in range(3)])
    new_to_old = np.eye(4)
    new_to_old[:3, :3] = 0.0
    for new_axis, old_axis in enumerate(source):
        flip = signs[old_axis] != SCANNER_DIRECTIONS[new_axis]
        new_to_old[old_axis, new_axis] = -1.0 if flip else 1.0
        new_to_old[old_axis, 3] = shape_ijk[old_axis] - 1 if flip else 0.0
    return source, new_to_old


def to_scanner_order(array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels with IJK running left, posterior, head (nearest order for oblique grids).

    `array_kji` is indexed (k, j, i) as `slicer.util.arrayFromVolume` gives it; the result is too,
    with the IJKToRAS that keeps every voxel at its world position. No voxel value changes.
    """
    array_kji = np.asarray(array_kji)
    if array_kji.ndim != 3:
        raise ValueError(f"a volume array must have 3 dimensions, got {array_kji.ndim}")
    shape_ijk = array_kji.shape[::-1]
    source, new_to_old = scanner_order_index_map(ijk_to_ras, shape_ijk)
    array_ijk = np.transpose(array_kji, (2, 1, 0))
    reordered = np.transpose(array_ijk, tuple(source))
    flips = tuple(axis for axis in range(3) if new_to_old[source[axis], axis] < 0)
    if flips:
        reordered = np.flip(reordered, axis=flips)
    new_ijk_to_ras = np.asarray(ijk_to_ras, dtype=np.float64) @ new_to_old
    return np.ascontiguousarray(np.transpose(reordered, (2, 1, 0))), new_ijk_to_ras
