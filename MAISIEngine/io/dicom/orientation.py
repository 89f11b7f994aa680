"""Put a volume in the voxel order scanners write, so viewers that show pixels as stored show it upright.

A scanner's axial CT of a supine patient has ImageOrientationPatient 1\\0\\0\\0\\1\\0: columns run to the
patient's left, rows to the posterior (the spine at the bottom of the image), slices towards the head.
A RAS label map (NIfTI's, Slicer's) runs the other way in x and y; written as it lies it shows the
spine at the top and the patient mirrored in every 2D preview. Only the voxel order changes here
(axes flipped and permuted, no resampling), so the world position of every voxel is kept. An oblique
grid takes the order nearest to this one.
"""

from __future__ import annotations

import numpy as np
from nibabel import orientations

EXPORT_AXES = ("L", "P", "S")
"""nibabel axis codes (directions of increasing index) of the exported order: i -> L, j -> P, k -> S."""


def export_orientation(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform from this affine's voxel order to the export order."""
    current = orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    return orientations.ornt_transform(current, orientations.axcodes2ornt(EXPORT_AXES))


def to_export_order(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels in the export order (i -> left, j -> posterior, k -> head) and the matching affine."""
    transform = export_orientation(affine)
    reordered = orientations.apply_orientation(np.asarray(array), transform)
    new_affine = np.asarray(affine, dtype=np.float64) @ orientations.inv_ornt_aff(transform, np.asarray(array).shape)
    return np.ascontiguousarray(reordered), new_affine
