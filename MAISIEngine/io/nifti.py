"""NIfTI reading and writing (nibabel), atomic, with the synthetic marker in every file we write.

Arrays are kept in nibabel's (i, j, k) voxel order with the 4x4 RAS affine beside them; nothing is
reoriented on read, so the output of a generation sits exactly where its mask was in the world.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import atomic_path

SYNTHETIC_MARK = "SYNTHETIC"


@dataclass
class Volume:
    """A 3D array in (i, j, k) order and the affine mapping its voxel indices to RAS millimetres."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Length in mm of each voxel axis (columns of the affine's 3x3 part)."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


def read_volume(path: str | Path, what: str = "image") -> Volume:
    """Read a 3D NIfTI; a 4D file with one volume is accepted, anything else is refused with a hint."""
    path = Path(path)
    if not path.is_file():
        raise MaisiError(f"{what} file {path} does not exist", "check the path")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt or foreign files
        raise MaisiError(
            f"cannot read {what} {path.name} as NIfTI ({exc.__class__.__name__})",
            "give a .nii or .nii.gz file",
        ) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise MaisiError(
            f"{what} {path.name} has {data.ndim} dimensions {tuple(data.shape)}, a 3D volume is needed",
            "give a single 3D volume",
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MaisiError(f"{what} {path.name} has an invalid affine", "fix the header's qform/sform")
    return Volume(np.asarray(data), affine)


def same_grid(a: Volume, b: Volume, atol: float = 1e-3) -> bool:
    """True when two volumes share shape and affine (within `atol` mm)."""
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, atol=atol))


def write_volume(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray,
    description: str | None = None,
    dtype: type | np.dtype | None = None,
) -> Path:
    """Write a NIfTI atomically, qform and sform both set, "SYNTHETIC" leading the description."""
    path = Path(path)
    data = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(data.dtype)
    img.set_qform(np.asarray(affine), code=1)
    img.set_sform(np.asarray(affine), code=1)
    img.header.set_xyzt_units("mm", "sec")
    text = SYNTHETIC_MARK if not description else f"{SYNTHETIC_MARK} {description}"
    img.header["descrip"] = text.encode("ascii", "replace")[:79]
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
