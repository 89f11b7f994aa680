"""Voxel order of the inputs: every mask and CT is brought to RAS voxel order before it conditions a network.

"RAS" names the world direction each voxel axis increases toward: axis i toward the patient's Right,
j toward Anterior, k toward Superior (the +x, +y, +z of NIfTI's RAS+ world; a positive-diagonal affine).
NVIDIA's reference code reorients every mask to these codes
(MONAI `Orientation(axcodes="RAS")`) before conditioning; a label map stored LPS (DICOM-derived) or with
permuted axes would otherwise show the networks a mirrored or transposed body.

The reorientation is a pure permutation and flip of the voxel array (no interpolation), picked from the
nearest world axis of each voxel axis; oblique grids keep their direction cosines in the new affine.
`restore` undoes it exactly, so inpainting can hand its CT back on the input's own grid and voxel order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from MAISIEngine.io.nifti import Volume

RAS = ("R", "A", "S")
_RAS_ORNT = ornt.axcodes2ornt(RAS)


@dataclass(frozen=True)
class Reorientation:
    """How one input was brought to RAS voxel order: enough to describe it and to undo it."""

    input_axcodes: tuple[str, ...]
    transform: np.ndarray  # nibabel orientation array (axis permutation and flips), input -> RAS
    input_shape: tuple[int, int, int]
    oblique: bool

    @property
    def identity(self) -> bool:
        return self.input_axcodes == RAS

    def describe(self) -> dict[str, Any]:
        """What provenance records: the stored voxel order and what was done to it."""
        if self.identity:
            action = "none (already RAS voxel order)"
        else:
            permutation = [int(a) for a in self.transform[:, 0]]
            flips = [("ijk"[i]) for i, f in enumerate(self.transform[:, 1]) if f < 0]
            moves = []
            if permutation != [0, 1, 2]:
                moves.append("input axes i,j,k became " + ",".join("ijk"[a] for a in permutation))
            if flips:
                moves.append(f"input axes {','.join(flips)} flipped")
            action = "reordered to RAS voxel order without interpolation (" + "; ".join(moves) + ")"
        return {
            "input_voxel_order": "".join(self.input_axcodes),
            "oblique": self.oblique,
            "action": action,
        }


def axcodes(affine: np.ndarray) -> tuple[str, ...]:
    """The world direction (R/L, A/P, S/I) each voxel axis increases toward, nearest axis for oblique grids."""
    return tuple(str(c) for c in nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def is_oblique(affine: np.ndarray, tolerance: float = 1e-4) -> bool:
    """True when some voxel axis is not parallel to a world axis."""
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0)
    return bool(np.any(np.abs(np.abs(directions).max(axis=0) - 1.0) > tolerance))


def plan(affine: np.ndarray, shape: tuple[int, ...]) -> Reorientation:
    """The permutation and flips that bring a grid with this affine to RAS voxel order."""
    affine = np.asarray(affine, dtype=np.float64)
    current = nib.io_orientation(affine)
    transform = ornt.ornt_transform(current, _RAS_ORNT)
    return Reorientation(axcodes(affine), transform, tuple(int(s) for s in shape[:3]), is_oblique(affine))  # type: ignore[arg-type]


def _apply_array(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ornt.apply_orientation(np.asarray(array), transform))


def _apply_affine(affine: np.ndarray, transform: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Affine of the reoriented array: the same world position for every voxel centre."""
    return np.asarray(affine, dtype=np.float64) @ ornt.inv_ornt_aff(transform, shape[:3])


def apply(volume: Volume, how: Reorientation) -> Volume:
    """Apply a planned reorientation to a volume on that plan's grid (array and affine together)."""
    if how.identity:
        return Volume(volume.array, np.asarray(volume.affine, dtype=np.float64))
    return Volume(_apply_array(volume.array, how.transform), _apply_affine(volume.affine, how.transform, volume.shape))


def apply_array(array: np.ndarray, how: Reorientation) -> np.ndarray:
    """The same permutation and flips for a bare array on the planned grid (a tumor mask, say)."""
    return np.asarray(array) if how.identity else _apply_array(array, how.transform)


def to_ras(volume: Volume) -> tuple[Volume, Reorientation]:
    """The volume in RAS voxel order (exact: a permutation and flips), with the plan to undo it."""
    how = plan(volume.affine, volume.shape)
    return apply(volume, how), how


def restore(volume: Volume, how: Reorientation) -> Volume:
    """Bring a RAS-ordered volume back to the voxel order (and affine) the input was stored in."""
    if how.identity:
        return volume
    # The inverse of `how.transform`, written from the stored plan so it does not depend on rounding.
    inverse = np.zeros_like(how.transform)
    for source_axis, (target_axis, flip) in enumerate(how.transform):
        inverse[int(target_axis)] = (source_axis, flip)
    return Volume(_apply_array(volume.array, inverse), _apply_affine(volume.affine, inverse, volume.shape))
