"""Label maps that drive generation: validation, body envelope, resampling, ControlNet bit-planes.

A MAISI label map holds ids of the MAISI dictionary (0 background, 1..132 anatomy, 200 body). Masks
may come with any orientation and spacing; resampling keeps the world position of the input (the
centre of the field of view and the axis directions stay, only voxel size and count change).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.nifti import Volume

if TYPE_CHECKING:  # torch is imported lazily: front ends validate masks without it
    import torch

BODY_HU_THRESHOLD = -500.0
"""HU above which a voxel of a reference CT counts as inside the body."""


def validate_label_ids(array: np.ndarray, what: str = "mask") -> list[int]:
    """Return the sorted ids present; refuse non-integer values and ids MAISI does not define."""
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise MaisiError(
                f"the {what} holds non-integer values",
                "give a label map of integer MAISI ids (0..132, 200), not an intensity image",
            )
    present = [int(v) for v in np.unique(array)]
    unknown = [v for v in present if v not in maisi_labels.valid_ids()]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        raise MaisiError(
            f"the {what} holds label ids MAISI does not know: {shown}",
            "map them to MAISI ids (see `maisi masks import-totalseg` for TotalSegmentator maps) or set them to 0",
        )
    return present


def _ball(radius_vox: tuple[int, int, int]) -> np.ndarray:
    rx, ry, rz = (max(int(r), 1) for r in radius_vox)
    x, y, z = np.ogrid[-rx : rx + 1, -ry : ry + 1, -rz : rz + 1]
    return (x / rx) ** 2 + (y / ry) ** 2 + (z / rz) ** 2 <= 1.0


def envelope_from_organs(labels: np.ndarray, spacing: tuple[float, float, float], margin_mm: float = 15.0) -> np.ndarray:
    """Body envelope from the organs alone: their union closed, holes filled, dilated by a margin."""
    organs = labels > 0
    if not organs.any():
        raise MaisiError("the mask holds no labels to derive a body envelope from", "draw at least one organ")
    radius = tuple(max(1, round(margin_mm / s)) for s in spacing)
    closed = ndimage.binary_closing(organs, structure=_ball(radius), iterations=1, border_value=0)
    filled = np.stack([ndimage.binary_fill_holes(closed[:, :, k]) for k in range(closed.shape[2])], axis=2)
    return ndimage.binary_dilation(filled, structure=_ball(radius)) | organs


def add_body_envelope(
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    body_mask: np.ndarray | None = None,
    reference_ct: Volume | None = None,
) -> np.ndarray:
    """Give every unlabelled voxel inside the body the body id (200), which MAISI's ControlNet expects.

    Masks that already hold body voxels are returned unchanged. Otherwise the envelope comes from a
    given body mask, else from a reference CT on the same grid (HU threshold, scanner table removed),
    else from the organs' union closed and dilated.
    """
    if (labels == maisi_labels.BODY).any():
        return labels
    if body_mask is not None:
        envelope = body_mask.astype(bool)
    elif reference_ct is not None:
        from MAISIEngine.masktools.body import body_envelope_from_ct

        envelope = body_envelope_from_ct(np.asarray(reference_ct.array), reference_ct.affine, BODY_HU_THRESHOLD)
    else:
        envelope = envelope_from_organs(labels, spacing)
    out = labels.copy()
    out[(labels == 0) & envelope] = maisi_labels.BODY
    return out


def grid_affine(source_affine: np.ndarray, source_shape: tuple[int, ...], size: tuple[int, int, int],
                spacing: tuple[float, float, float]) -> np.ndarray:
    """Affine of a grid of `size` x `spacing` with the source's axis directions and world centre."""
    source_affine = np.asarray(source_affine, dtype=np.float64)
    directions = source_affine[:3, :3] / np.linalg.norm(source_affine[:3, :3], axis=0)
    centre = source_affine @ np.append((np.asarray(source_shape[:3], dtype=np.float64) - 1) / 2.0, 1.0)
    out = np.eye(4)
    out[:3, :3] = directions * np.asarray(spacing, dtype=np.float64)
    out[:3, 3] = centre[:3] - out[:3, :3] @ ((np.asarray(size, dtype=np.float64) - 1) / 2.0)
    return out


def resample_labels(volume: Volume, size: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    """Nearest-neighbour resampling onto a grid of `size` and `spacing` centred where the input was."""
    size = tuple(int(s) for s in size)  # type: ignore[assignment]
    target = grid_affine(volume.affine, volume.shape, size, spacing)
    if volume.shape == size and np.allclose(target, volume.affine, atol=1e-6):
        return Volume(volume.array.copy(), volume.affine.copy())
    target_to_source = np.linalg.inv(volume.affine) @ target
    resampled = ndimage.affine_transform(
        volume.array,
        target_to_source[:3, :3],
        offset=target_to_source[:3, 3],
        output_shape=size,
        order=0,
        mode="constant",
        cval=0,
        prefilter=False,
    )
    return Volume(resampled.astype(volume.array.dtype), target)


def resample_to_reference(volume: Volume, reference_affine: np.ndarray, reference_shape: tuple[int, int, int],
                          order: int = 0, cval: float = 0.0) -> np.ndarray:
    """Resample onto an arbitrary reference grid (nearest for labels, linear for images)."""
    target_to_source = np.linalg.inv(volume.affine) @ np.asarray(reference_affine, dtype=np.float64)
    return ndimage.affine_transform(
        volume.array.astype(np.float32) if order > 0 else volume.array,
        target_to_source[:3, :3],
        offset=target_to_source[:3, 3],
        output_shape=tuple(int(s) for s in reference_shape),
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )


def label_bitplanes(labels: "torch.Tensor") -> "torch.Tensor":
    """(B, 1, X, Y, Z) integer labels 0..255 -> (B, 8, X, Y, Z) float bit-planes (bit b -> channel b)."""
    import torch

    if labels.ndim != 5 or labels.shape[1] != 1:
        raise ValueError(f"expected (B, 1, X, Y, Z) labels, got {tuple(labels.shape)}")
    as_int = labels.to(torch.int64)
    bits = torch.arange(8, device=labels.device, dtype=torch.int64).view(1, 8, 1, 1, 1)
    return ((as_int >> bits) & 1).to(torch.float32)



TUMOR_TO_HOST = {26: 1, 24: 4, 27: 62, 116: 14, 117: 5}
"""Tumor (and cyst) ids replaced by their host organ in the unconditional guidance mask, as NVIDIA's
reference does: hepatic tumor -> liver, pancreatic tumor -> pancreas, colon cancer -> colon, kidney cysts
-> kidneys."""
LUNG_TUMOR = 23
LUNG_LOBES = (28, 29, 30, 31, 32)


def remove_tumors(labels: np.ndarray) -> np.ndarray:
    """The label map with tumors replaced by their host organ: the unconditional mask of guidance.

    Lung tumors take the commonest lobe id in the one-voxel ring around them (a 3x3x3 dilation in which
    the outside of the volume counts as tumor, so voxels on the border join the ring), or the commonest
    lobe of the whole map when the ring has none; bone lesions stay (the reference keeps them too).
    """
    labels = np.asarray(labels)
    out = labels.copy()
    for tumor, host in TUMOR_TO_HOST.items():
        out[labels == tumor] = host
    tumor = out == LUNG_TUMOR
    if tumor.any():
        ring = ndimage.binary_dilation(tumor, structure=np.ones((3, 3, 3), bool), border_value=1) & ~tumor
        ring_labels = out[ring & np.isin(out, LUNG_LOBES)]
        if ring_labels.size:
            host = int(np.bincount(ring_labels.astype(np.int64)).argmax())
        else:
            host = LUNG_LOBES[int(np.argmax([(out == lobe).sum() for lobe in LUNG_LOBES]))]
        out[tumor] = host
    return out
