"""`export_dicom`: a synthetic CT series plus a DICOM SEG of its labels, written all or nothing.

Every file is first written into a hidden staging folder beside the target; only when the whole
export is complete are the files moved into the output folder. An error (bad input, full disk,
SIGTERM) therefore leaves no partial export, and a folder that already holds a DICOM series is
refused unless `overwrite=True`, in which case only its DICOM files are replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from MAISIEngine.errors import MaisiError
from MAISIEngine.masks import validate_label_ids
from MAISIEngine.io.dicom.ct import ct_slices
from MAISIEngine.io.dicom.geometry import slice_geometry
from MAISIEngine.io.dicom.identity import SyntheticIdentity
from MAISIEngine.io.dicom.orientation import to_export_order
from MAISIEngine.io.dicom.seg import build_segmentation

SEG_FILE_NAME = "SEG.dcm"


@dataclass
class ExportResult:
    """What one export wrote (final paths) and the identifiers it created."""

    out_dir: Path
    ct_files: list[Path]
    seg_file: Path | None
    study_uid: str
    series_uid: str
    seg_series_uid: str | None
    frame_of_reference_uid: str
    patient_id: str
    segments: dict[int, str] = field(default_factory=dict)  # segment number -> MAISI label name

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "ct_files": [str(p) for p in self.ct_files],
            "seg_file": str(self.seg_file) if self.seg_file else None, "study_uid": self.study_uid,
            "series_uid": self.series_uid, "seg_series_uid": self.seg_series_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid, "patient_id": self.patient_id,
            "segments": {str(k): v for k, v in self.segments.items()},
        }


def _as_array_and_affine(image: Any, affine: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Accept a Volume-like object (`.array`, `.affine`) or a bare array plus an affine."""
    if hasattr(image, "array") and hasattr(image, "affine"):
        return np.asarray(image.array), np.asarray(image.affine, dtype=np.float64)
    if affine is None:
        raise MaisiError("an image array was given without its affine", "pass a Volume or affine=4x4 RAS matrix")
    return np.asarray(image), np.asarray(affine, dtype=np.float64)


def _check_labels(labels: Any, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    if hasattr(labels, "array") and hasattr(labels, "affine"):
        if not np.allclose(np.asarray(labels.affine), affine, atol=1e-3):
            raise MaisiError("the label map lies on another grid than the image (affines differ)",
                             "resample the labels onto the image grid, e.g. with the image as reference")
        labels = labels.array
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise MaisiError(f"the label map has shape {labels.shape} but the image has {shape}: they are on different grids",
                         "resample the labels onto the image grid, e.g. with the image as reference")
    validate_label_ids(labels, what="label map")
    return labels.astype(np.uint8)


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def existing_dicom_files(folder: Path) -> list[Path]:
    """DICOM files directly inside `folder` (what an earlier export would have left there)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_dicom_file(p))


def _save(dataset: Dataset, path: Path) -> None:
    dataset.save_as(path, enforce_file_format=True)


def _install(staging: Path, out_dir: Path, old_files: list[Path]) -> None:
    """Move the complete staged export into place, replacing `old_files` (an earlier export)."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
        os.replace(staging, out_dir)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    moved: list[tuple[Path, Path]] = []
    installed: list[Path] = []
    try:
        for old in old_files:
            target = trash / old.name
            os.replace(old, target)
            moved.append((target, old))
        for new in sorted(staging.iterdir()):
            final = out_dir / new.name
            if final.exists():
                raise MaisiError(f"{final} already exists and is not a DICOM file", "remove it or choose another folder")
            os.replace(new, final)
            installed.append(final)
    except BaseException:
        for path in installed:
            with contextlib.suppress(OSError):
                path.unlink()
        for target, original in moved:
            with contextlib.suppress(OSError):
                os.replace(target, original)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def export_dicom(
    image: Any,
    labels: Any = None,
    out_dir: str | Path = "dicom",
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    affine: np.ndarray | None = None,
    new_study: bool = False,
    synthetic_data_element: bool = False,
) -> ExportResult:
    """Write `image` (HU, (i, j, k), RAS affine) as a synthetic CT series, and `labels` as a DICOM SEG.

    `image` is a Volume (`.array`, `.affine`) or an array with `affine=`; `labels` is an (i, j, k) array
    of MAISI ids on the same grid (or a Volume), or None for the CT series alone. Files: one
    `CT_#####.dcm` per slice and `SEG.dcm`, directly in `out_dir`. Voxels are written in the order
    scanners use (see `orientation`); the Study Instance UID follows the provenance unless `new_study`;
    `synthetic_data_element` adds SyntheticData = YES (see `identity` for why it is not the default).
    """
    hu, affine = _as_array_and_affine(image, affine)
    if hu.ndim != 3:
        raise MaisiError(f"the image has {hu.ndim} dimensions {hu.shape}, a 3D volume is needed", "give a 3D image")
    label_map = None if labels is None else _check_labels(labels, hu.shape, affine)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MaisiError(f"output {out_dir} exists and is not a folder", "choose a folder with -o")
    old_files = existing_dicom_files(out_dir)
    if old_files and not overwrite:
        raise MaisiError(f"output folder {out_dir} already holds {len(old_files)} DICOM files (another series)",
                         "choose an empty folder or pass --overwrite to replace them")
    width = max(5, len(str(hu.shape[2])))
    names = [f"CT_{k + 1:0{width}d}.dcm" for k in range(hu.shape[2])] + ([SEG_FILE_NAME] if label_map is not None else [])
    clashes = [n for n in names if (out_dir / n).exists() and out_dir / n not in old_files]
    if clashes:
        raise MaisiError(f"{out_dir / clashes[0]} already exists and is not a DICOM file",
                         "remove it or choose another output folder")

    content_hash = hashlib.sha256(np.ascontiguousarray(hu).tobytes()).hexdigest()
    source_affine = affine
    hu, affine = to_export_order(hu, source_affine)
    if label_map is not None:
        label_map, _ = to_export_order(label_map, source_affine)
    geometry = slice_geometry(affine, hu.shape)
    label_ids = set() if label_map is None else {int(v) for v in np.unique(label_map)}
    identity = SyntheticIdentity.create(provenance, content_hash, label_ids, new_study=new_study,
                                       synthetic_data_element=synthetic_data_element)
    slices = ct_slices(hu, geometry, identity)
    seg = None
    if label_map is not None and np.any(label_map):
        seg = build_segmentation(slices, label_map, identity)

    names = names[: len(slices)]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        for name, dataset in zip(names, slices):
            _save(dataset, staging / name)
        if seg is not None:
            _save(seg, staging / SEG_FILE_NAME)
        _install(staging, out_dir, old_files)
    except OSError as exc:
        raise MaisiError(f"cannot write the DICOM export to {out_dir} ({exc.strerror or exc})",
                         "check free disk space and write permission") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    segments = {}
    if seg is not None:
        segments = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    return ExportResult(
        out_dir=out_dir,
        ct_files=[out_dir / n for n in names],
        seg_file=out_dir / SEG_FILE_NAME if seg is not None else None,
        study_uid=identity.study_uid,
        series_uid=identity.ct_series_uid,
        seg_series_uid=identity.seg_series_uid if seg is not None else None,
        frame_of_reference_uid=identity.frame_of_reference_uid,
        patient_id=identity.patient_id,
        segments=segments,
    )
