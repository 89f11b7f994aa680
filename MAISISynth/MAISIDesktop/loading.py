"""Read the files a user opens (NIfTI, NRRD) and check them before anything is shown.

Every problem a user can fix (not an image, not 3D, labels on another grid than the CT, ids MAISI does
not define) becomes one `MaisiError` with a hint, which the window shows in a dialog.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from nibabel import orientations

from MAISIEngine.errors import MaisiError
from MAISIEngine.masks import validate_label_ids
from MAISIEngine.io.nifti import Volume, read_volume, same_grid

from MAISIDesktop.study import Study

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
FILE_FILTER = "Images (*.nii *.nii.gz *.nrrd *.nhdr);;All files (*)"

_NRRD_SPACES_TO_RAS_SIGNS = {
    "right-anterior-superior": (1, 1, 1),
    "ras": (1, 1, 1),
    "left-posterior-superior": (-1, -1, 1),
    "lps": (-1, -1, 1),
    "left-anterior-superior": (-1, 1, 1),
    "las": (-1, 1, 1),
}


def _lower_name(path: Path) -> str:
    return path.name.lower()


def read_nrrd(path: Path, what: str) -> Volume:
    """A 3D NRRD as a RAS volume (pynrrd reads the data; the header's space gives the affine)."""
    import nrrd

    try:
        data, header = nrrd.read(str(path))
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, OSError for foreign or broken files
        raise MaisiError(f"cannot read {what} {path.name} as NRRD ({exc})", "give a .nrrd or .nhdr file") from None
    if data.ndim == 4 and 1 in (data.shape[0], data.shape[3]):
        data = data[0] if data.shape[0] == 1 else data[..., 0]
    if data.ndim != 3:
        raise MaisiError(
            f"{what} {path.name} has {data.ndim} dimensions {tuple(data.shape)}, a 3D volume is needed",
            "give a single 3D volume",
        )
    affine = np.eye(4)
    directions = header.get("space directions")
    if directions is not None:
        rows = [np.asarray(row, dtype=np.float64) for row in directions if row is not None and np.all(np.isfinite(row))]
        if len(rows) != 3:
            raise MaisiError(f"{what} {path.name} lacks three spatial axes in its header", "give a 3D volume")
        affine[:3, :3] = np.stack(rows, axis=1)
        affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
        space = str(header.get("space", "right-anterior-superior")).lower()
        if space not in _NRRD_SPACES_TO_RAS_SIGNS:
            raise MaisiError(f"{what} {path.name} uses the space '{space}'", "save it in RAS or LPS space")
        affine[:3, :] *= np.asarray(_NRRD_SPACES_TO_RAS_SIGNS[space], dtype=np.float64)[:, None]
    elif header.get("spacings") is not None:
        affine[:3, :3] = np.diag(np.asarray(header["spacings"], dtype=np.float64)[:3])
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MaisiError(f"{what} {path.name} has an invalid geometry", "fix its space directions")
    return Volume(np.asarray(data), affine)


def check_gzip(path: Path, what: str) -> None:
    """A .gz that does not decompress to its end gets its own message (it is the right kind of file)."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        reason = "it ends early" if isinstance(exc, EOFError) else "its compressed data is damaged"
        raise MaisiError(f"{what} {path.name} is a damaged gzip file: {reason}",
                         "the file was cut short or corrupted on the way; copy or export it again") from None


def _starts_like_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_image_file(path: str | Path, what: str = "image") -> Volume:
    """Read a NIfTI or NRRD volume, refusing anything that is not a 3D image."""
    path = Path(path)
    if not path.is_file():
        raise MaisiError(f"{what} file {path} does not exist", "check the path")
    name = _lower_name(path)
    if name.endswith(NRRD_SUFFIXES):
        return read_nrrd(path, what)
    if name.endswith(NIFTI_SUFFIXES):
        try:
            return read_volume(path, what)
        except MaisiError:
            if name.endswith(".gz") and _starts_like_gzip(path):
                check_gzip(path, what)  # says what is wrong with the compressed file, if that is it
            raise
    raise MaisiError(
        f"{path.name} is not a NIfTI or NRRD file",
        "open a .nii, .nii.gz, .nrrd or .nhdr file",
    )


def to_canonical(volume: Volume) -> Volume:
    """Flip/transpose the axes to the closest RAS orientation; the world position of every voxel stays."""
    ornt = orientations.io_orientation(volume.affine)
    array = orientations.apply_orientation(volume.array, ornt)
    affine = volume.affine @ orientations.inv_ornt_aff(ornt, volume.array.shape)
    return Volume(np.asarray(array), affine)


CT_LIKE_MIN_HU = -200
"""A 'label map' with values this low (air and fat in HU) is a CT opened with the wrong command."""


def looks_like_ct(array: np.ndarray) -> bool:
    """Values far below zero, or many distinct values past 255: intensities, not label ids."""
    if array.size == 0 or not np.issubdtype(array.dtype, np.number):
        return False
    low, high = float(np.min(array)), float(np.max(array))
    if low <= CT_LIKE_MIN_HU:
        return True
    return high > 255 and np.unique(array[:: max(1, array.size // 200_000)]).size > 64


def check_label_ids(array: np.ndarray, what: str = "label map") -> np.ndarray:
    """The array as MAISI ids (uint8), refusing non-integer values and ids MAISI does not define."""
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise MaisiError(f"the {what} holds values of type {array.dtype}", "give an integer label map")
    if looks_like_ct(array):
        raise MaisiError(
            f"the {what} looks like a CT (values from {float(np.min(array)):.0f} to {float(np.max(array)):.0f}), "
            "not MAISI label ids",
            "open it with File > Open CT (+ labels), or choose a MAISI label map")
    validate_label_ids(array, what=what)
    return array.astype(np.uint8)


def load_label_map(path: str | Path) -> Study:
    """A label map alone (the usual start of a generation)."""
    path = Path(path)
    volume = to_canonical(read_image_file(path, "label map"))
    labels = check_label_ids(volume.array, f"label map {path.name}")
    return Study(labels=labels, affine=volume.affine, name=_stem(path), sources={"labels": str(path)})


def load_ct(ct_path: str | Path, labels_path: str | Path | None = None) -> Study:
    """A CT, with its label map when given; both must share one voxel grid."""
    ct_path = Path(ct_path)
    ct_volume = read_image_file(ct_path, "CT")
    if not np.issubdtype(ct_volume.array.dtype, np.number) or np.issubdtype(ct_volume.array.dtype, np.complexfloating):
        raise MaisiError(f"CT {ct_path.name} holds values of type {ct_volume.array.dtype}", "give a CT in HU")
    sources = {"ct": str(ct_path)}
    if labels_path is not None:
        labels_path = Path(labels_path)
        label_volume = read_image_file(labels_path, "label map")
        if not same_grid(ct_volume, label_volume):
            raise MaisiError(
                f"the labels {labels_path.name} ({_grid_text(label_volume)}) are not on the CT's grid "
                f"({_grid_text(ct_volume)})",
                "resample the labels onto the CT (nearest neighbour), e.g. with `maisi masks resample`, or open them alone",
            )
        labels = check_label_ids(to_canonical(label_volume).array, f"label map {labels_path.name}")
        sources["labels"] = str(labels_path)
    else:
        labels = np.zeros(ct_volume.shape, dtype=np.uint8)
    canonical_ct = to_canonical(ct_volume)
    return Study(
        labels=labels, affine=canonical_ct.affine, ct=canonical_ct.array.astype(np.float32),
        name=_stem(ct_path), sources=sources,
    )


def load_result(event: dict[str, Any]) -> Study:
    """The image and labels a worker's result event points to, with its provenance."""
    image = event.get("image")
    labels = event.get("labels")
    if not image:
        raise MaisiError("the generation finished without an image file", "see the log of the run")
    study = load_ct(image, labels) if labels else load_ct(image)
    study.provenance = event.get("provenance_data")
    where = Path(str(event.get("output_dir") or image))
    # A run's outputs sit in <run folder>/output: the run folder's name says which run it was.
    study.name = str(event.get("name") or (where.parent.name if where.name == "output" else where.name))
    return study


def _grid_text(volume: Volume) -> str:
    spacing = " x ".join(f"{s:g}" for s in volume.spacing)
    size = " x ".join(str(s) for s in volume.shape)
    origin = ", ".join(f"{v:.1f}" for v in volume.affine[:3, 3])
    return f"{size} voxels of {spacing} mm at ({origin})"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, *NRRD_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
