"""The body envelope (MAISI label 200) from a CT, with the scanner table removed.

MAISI's ControlNet expects every voxel inside the body contour that has no organ label to carry
label 200; segmentation tools (TotalSegmentator included) do not produce it. A HU threshold finds
the patient, but the scanner table and its cushions are dense too and often touch the patient. The
table is a thin plate, so an in-plane morphological opening (by a disc a few mm wide) breaks the
thin bridges and erases the plate while the body, many centimetres thick, survives; the largest
component is the body, and the surface detail the opening rounded off is restored where it stays
close to the body (a table reaches far from it).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from MAISIEngine.errors import MaisiError
from MAISIEngine.labels import BODY


def _largest_component(mask: np.ndarray) -> np.ndarray:
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def axial_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the patient's head-foot (S) direction."""
    return int(np.argmax(np.abs(np.asarray(affine, dtype=np.float64)[2, :3])))


def _per_slice(mask: np.ndarray, axis: int, operation) -> np.ndarray:
    out = np.empty_like(mask, dtype=bool)
    for index in range(mask.shape[axis]):
        where = [slice(None)] * 3
        where[axis] = index
        out[tuple(where)] = operation(mask[tuple(where)])
    return out


def _open_disc(slice_mask: np.ndarray, radius_mm: float, sampling: np.ndarray) -> np.ndarray:
    if not slice_mask.any():
        return slice_mask.copy()
    eroded = ndimage.distance_transform_edt(slice_mask, sampling=sampling) > radius_mm
    if not eroded.any():
        return eroded
    return ndimage.distance_transform_edt(~eroded, sampling=sampling) <= radius_mm


def _dilate_disc(slice_mask: np.ndarray, radius_mm: float, sampling: np.ndarray) -> np.ndarray:
    if not slice_mask.any():
        return slice_mask.copy()
    return ndimage.distance_transform_edt(~slice_mask, sampling=sampling) <= radius_mm


def body_envelope_from_ct(
    ct_hu: np.ndarray,
    affine: np.ndarray,
    threshold: float = -500.0,
    *,
    table_radius_mm: float = 4.0,
) -> np.ndarray:
    """Boolean mask of the patient's body in a CT (HU), the table and air excluded, cavities filled.

    Steps: threshold at `threshold` HU and keep the largest component; open each axial slice with a
    disc of radius `table_radius_mm` (removes plates and bridges thinner than twice that); keep the
    largest component of the result; add back the removed pieces that stay close to it (skin detail)
    but not those reaching far from it (the table with whatever bridged it to the patient); fill
    holes per axial slice (lungs, bowel gas).
    """
    ct = np.asarray(ct_hu)
    affine = np.asarray(affine, dtype=np.float64)
    if ct.ndim != 3:
        raise MaisiError(f"the CT must be 3D, got shape {ct.shape}", "give a 3D CT volume")
    if affine.shape != (4, 4):
        raise MaisiError("the CT affine must be 4x4", "read the CT with its NIfTI header")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    axis = axial_axis(affine)
    sampling = spacing[[a for a in range(3) if a != axis]]

    above = ct > threshold
    if not above.any():
        raise MaisiError(
            f"no CT voxel is above {threshold:g} HU",
            "give a CT in Hounsfield units (air about -1000, soft tissue about 40)",
        )
    body = _largest_component(above)
    core = _largest_component(_per_slice(body, axis, lambda s: _open_disc(s, table_radius_mm, sampling)))
    if core.any():
        body = core | _surface_detail(body & ~core, core, axis, 2.0 * table_radius_mm + float(sampling.max()), sampling)
    return _per_slice(body, axis, ndimage.binary_fill_holes)


def _surface_detail(
    residual: np.ndarray, core: np.ndarray, axis: int, reach_mm: float, sampling: np.ndarray
) -> np.ndarray:
    """The pieces the opening removed that stay within `reach_mm` of the body: skin detail, not table.

    A table plate (with any cushion or strap bridging it to the patient) forms one residual piece
    reaching far from the body, so it goes as a whole; a bump on the skin never reaches that far.
    """
    pieces, count = ndimage.label(residual)
    if count == 0:
        return residual
    far = _per_slice(core, axis, lambda s: ~_dilate_disc(s, reach_mm, sampling) if s.any() else np.ones_like(s))
    reaching = np.unique(pieces[far & residual])
    return (pieces > 0) & ~np.isin(pieces, reaching[reaching > 0])


def add_body(labels: np.ndarray, body_mask: np.ndarray) -> np.ndarray:
    """A copy of `labels` with body (200) written where the body mask is set and no label is."""
    labels = np.asarray(labels)
    body_mask = np.asarray(body_mask).astype(bool)
    if labels.shape != body_mask.shape:
        raise MaisiError(
            f"the body mask has shape {body_mask.shape} but the label map has {labels.shape}",
            "give the CT on the label map's grid",
        )
    out = labels.copy() if np.can_cast(np.uint8, labels.dtype) else labels.astype(np.uint8)
    out[body_mask & (labels == 0)] = BODY
    return out
