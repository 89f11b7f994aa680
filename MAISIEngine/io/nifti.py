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
from MAISIEngine.geometry import SPACING_RANGE_MM
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


MAX_INPUT_VOXELS = 2 * 512 * 512 * 768
"""Largest volume read: twice the largest output grid of any shipped preset (512 x 512 x 768)."""
MAX_INPUT_BYTES = 4 * 512 * 512 * 768
"""Largest voxel payload read: the largest output grid as float32 (805 MB)."""
"""Voxel sizes outside this range are header errors (a CT voxel is 0.2-10 mm)."""
GZIP_CHUNK = 1 << 20
TRAILING_BYTES_ALLOWED = 1 << 16


def _header_error(what: str, path: Path, problem: str, hint: str) -> MaisiError:
    return MaisiError(f"{what} {path.name} {problem}", hint)


def check_header(img: "nib.spatialimages.SpatialImage", path: Path, what: str, labels: bool = False,
                 max_voxels: int = MAX_INPUT_VOXELS, max_bytes: int = MAX_INPUT_BYTES) -> None:
    """Refuse a volume from its header alone: shape, data type, size, spacing and affine."""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise _header_error(what, path, f"has {len(shape)} dimensions {shape}, a 3D volume is needed",
                            "give a single 3D volume")
    if min(shape) < 1:
        raise _header_error(what, path, f"has an empty dimension {shape}", "give a volume with voxels")
    dtype = np.dtype(img.get_data_dtype())
    if dtype.kind not in "biuf" or dtype.fields is not None:
        kind = "complex" if dtype.kind == "c" else str(dtype)
        raise _header_error(what, path, f"holds {kind} voxels",
                            "give integer label ids" if labels else "give a real-valued (integer or float) volume")
    slope, inter = (img.header.get_slope_inter() if hasattr(img.header, "get_slope_inter") else (None, None))
    if labels and not _integral_scaling(slope, inter):
        raise _header_error(what, path, "stores labels with a non-integer scaling",
                            "save the label map as integers without scl_slope / scl_inter")
    voxels = int(np.prod(shape, dtype=object))
    stored = voxels * dtype.itemsize
    if voxels > max_voxels or stored > max_bytes:
        raise _header_error(what, path, f"is too large: {shape} voxels of {dtype} ({stored / 1e9:.2f} GB)",
                            f"the largest volume read is {max_voxels} voxels or {max_bytes / 1e9:.2f} GB; "
                            "crop or resample it")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise _header_error(what, path, "has an invalid affine (not finite, or singular)", "fix the header's qform/sform")
    spacing = voxel_spacing(affine)
    low, high = SPACING_RANGE_MM
    if not all(low <= s <= high for s in spacing):
        raise _header_error(what, path, f"has a voxel spacing of {tuple(round(s, 6) for s in spacing)} mm",
                            f"each spacing must lie within {low}-{high} mm; fix the header's pixdim / affine")


def _integral_scaling(slope: float | None, inter: float | None) -> bool:
    """Scaling that maps integers to integers (or none) keeps a label map integral."""
    import math

    slope = 1.0 if slope is None or not math.isfinite(slope) else slope
    inter = 0.0 if inter is None or not math.isfinite(inter) else inter
    return float(slope).is_integer() and float(inter).is_integer() and slope != 0


def _verified_gzip_payload(path: Path, limit: int, what: str) -> bytes:
    """Decompress a .gz whole, checking CRC and length, and refusing more than `limit` bytes (gzip bombs)."""
    import gzip
    import zlib

    out = bytearray()
    try:
        with gzip.open(path, "rb") as stream:  # reading to the end checks the trailer's CRC32 and ISIZE
            while True:
                chunk = stream.read(GZIP_CHUNK)
                if not chunk:
                    break
                out += chunk
                if len(out) > limit:
                    raise _header_error(what, path, f"decompresses to more than its header declares ({limit} bytes)",
                                        "the file is damaged or not a NIfTI volume; export it again")
    except (OSError, EOFError, zlib.error) as exc:
        raise _header_error(what, path, f"is a damaged gzip file ({exc})",
                            "the file was truncated or altered; copy or export it again") from None
    return bytes(out)


def read_volume(path: str | Path, what: str = "image", labels: bool = False) -> Volume:
    """Read a 3D NIfTI; a 4D file with one volume is accepted, anything else is refused with a hint.

    Everything the header says is checked before a voxel is read (so a 100-byte file claiming 4 billion
    voxels is refused without allocating them), and a .nii.gz is decompressed with its CRC and length
    checked and no more than the header promises.
    """
    path = Path(path)
    if not path.is_file():
        raise MaisiError(f"{what} file {path} does not exist", "check the path")
    try:
        img = nib.load(str(path))  # lazy: reads the header only
    except Exception as exc:  # nibabel raises many types for corrupt or foreign files
        raise MaisiError(
            f"cannot read {what} {path.name} as NIfTI ({exc.__class__.__name__})",
            "give a .nii or .nii.gz file",
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise MaisiError(f"{what} {path.name} is not a NIfTI file ({type(img).__name__})", "give a .nii or .nii.gz file")
    check_header(img, path, what, labels=labels)
    offset = int(getattr(img.dataobj, "offset", 0))
    expected = offset + int(np.prod(img.shape, dtype=object)) * np.dtype(img.get_data_dtype()).itemsize
    try:
        if _is_gzip(path):
            payload = _verified_gzip_payload(path, expected + TRAILING_BYTES_ALLOWED, what)
            if len(payload) < expected:
                raise _header_error(what, path, f"holds {len(payload)} bytes, its header needs {expected}",
                                    "the file was truncated; copy or export it again")
            data = np.asanyarray(type(img).from_bytes(payload).dataobj)
            del payload
        else:
            if path.stat().st_size < expected:
                raise _header_error(what, path, f"holds {path.stat().st_size} bytes, its header needs {expected}",
                                    "the file was truncated; copy or export it again")
            data = np.asanyarray(img.dataobj)
    except MaisiError:
        raise
    except Exception as exc:
        raise MaisiError(f"cannot read the voxels of {what} {path.name} ({exc.__class__.__name__})",
                         "the file is damaged; export it again") from None
    data = np.asarray(data)
    if data.ndim == 4:
        data = data[..., 0]
    if labels and np.issubdtype(data.dtype, np.floating) and (
            not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data))):
        raise _header_error(what, path, "holds non-integer values",
                            "give a label map of integer MAISI ids (0..132, 200), not an intensity image")
    return Volume(data, np.asarray(img.affine, dtype=np.float64))


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


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
