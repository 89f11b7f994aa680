"""`maisi export-dicom IMAGE.nii.gz [LABELS.nii.gz] -o DIR`: a generation's NIfTI files as DICOM.

Writes a synthetic CT series and, with labels, a DICOM SEG. The provenance (model, weights, seed)
comes from `--provenance`, else from the `provenance.json` a generation leaves beside its image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError

PROVENANCE_NAME = "provenance.json"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-dicom", help="export a CT (and its label map) as a synthetic DICOM series + DICOM SEG",
        description="Export a NIfTI CT, and optionally its MAISI label map, as a DICOM CT series and a DICOM "
                    "SEG. Every object is marked SYNTHETIC (patient SYNTHETIC^MAISI, new UIDs).")
    p.add_argument("image", type=Path, help="CT image in HU (NIfTI)")
    p.add_argument("labels", type=Path, nargs="?", help="MAISI label map on the image grid (NIfTI)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder for the DICOM files")
    p.add_argument("--provenance", type=Path,
                   help=f"provenance JSON (default: {PROVENANCE_NAME} beside the image, when present)")
    p.add_argument("--overwrite", action="store_true", help="replace the DICOM files of an earlier export in the folder")


def load_provenance(path: Path | None, image: Path) -> dict[str, Any] | None:
    """The provenance given, or the generation's sidecar beside the image, or None."""
    explicit = path is not None
    path = path if explicit else image.parent / PROVENANCE_NAME
    if not path.is_file():
        if explicit:
            raise MaisiError(f"provenance file {path} does not exist", "check the --provenance path")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MaisiError(f"cannot read provenance {path} as JSON ({exc})", "give the provenance.json of a generation") from None
    if not isinstance(data, dict):
        raise MaisiError(f"provenance {path} is not a JSON object", "give the provenance.json of a generation")
    return data


def run(args: argparse.Namespace) -> int:
    from MAISIEngine.io.dicom import export_dicom
    from MAISIEngine.io.nifti import read_volume

    image = read_volume(args.image, what="image")
    labels = read_volume(args.labels, what="labels") if args.labels else None
    provenance = load_provenance(args.provenance, args.image)
    result = export_dicom(image, labels, args.output, provenance=provenance, overwrite=args.overwrite)
    summary = {
        "output_dir": str(result.out_dir), "ct_slices": len(result.ct_files),
        "seg": str(result.seg_file) if result.seg_file else None, "segments": len(result.segments),
        "patient_id": result.patient_id, "study_uid": result.study_uid, "series_uid": result.series_uid,
    }
    print(json.dumps(summary, indent=2))
    return 0
