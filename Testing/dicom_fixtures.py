"""Helpers for the DICOM tests: the voxel order an export stores, and read-backs put on the source grid."""

from __future__ import annotations

import numpy as np
from nibabel import orientations


def export_order(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The voxel order an export stores (i -> left, j -> posterior, k -> head), computed with nibabel."""
    transform = orientations.ornt_transform(orientations.io_orientation(affine), orientations.axcodes2ornt("LPS"))
    return (orientations.apply_orientation(array, transform),
            affine @ orientations.inv_ornt_aff(transform, array.shape))


def on_source_grid(read: tuple[np.ndarray, np.ndarray], source_affine: np.ndarray) -> np.ndarray:
    """A read-back (array, affine) put on the source grid; asserts both grids hold the same world points."""
    array, affine = read
    voxel_map = np.linalg.inv(affine) @ source_affine  # source voxel -> read voxel
    rounded = np.round(voxel_map)
    np.testing.assert_allclose(voxel_map[:3], rounded[:3], atol=1e-3)
    assert sorted(np.abs(rounded[:3, :3]).sum(axis=0)) == [1, 1, 1]
    assert np.abs(affine @ rounded - source_affine).max() < 2e-4
    shape = np.abs(rounded[:3, :3]).T @ np.array(array.shape)
    t = np.indices(tuple(int(v) for v in shape)).reshape(3, -1)
    ijk = (rounded[:3, :3] @ t + rounded[:3, 3:]).astype(int)
    return array[ijk[0], ijk[1], ijk[2]].reshape(tuple(int(v) for v in shape))
