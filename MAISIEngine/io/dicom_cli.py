"""`maisi export-dicom IMAGE.nii.gz [LABELS.nii.gz] -o DIR`: a generation's NIfTI files as DICOM.

Writes a synthetic CT series and, with labels, a DICOM SEG. The provenance (model, weights, seed)
comes from `--provenance`, else from the `provenance.json` a generation leaves beside its image.
`--send AE@HOST:PORT` (C-STORE) and `--stow URL` (STOW-RS) then push the export to a PACS and report
every instance's status; the exit code is 1 when any instance was refused.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    p.add_argument("--new-study", action="store_true",
                   help="give this export a new Study Instance UID (default: the generation's own study, so a "
                        "re-export adds series to the study it already has in the PACS)")
    p.add_argument("--synthetic-data-element", action="store_true",
                   help="also write SyntheticData (0008,001C) = YES (DICOM 2023; validators and PACS with older "
                        "dictionaries report it as an unknown attribute)")
    send = p.add_argument_group("send to a PACS")
    send.add_argument("--send", metavar="AE@HOST:PORT", help="C-STORE the export to this DICOM node")
    send.add_argument("--calling-ae", default="MAISISYNTH", help="our AE title for --send (default MAISISYNTH)")
    send.add_argument("--stow", metavar="URL", help="STOW-RS the export to this DICOMweb service root")
    send.add_argument("--token-file", type=Path, help="file holding a bearer token for --stow (first line)")
    send.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")


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


def _report(item: Any) -> None:
    print(f"{item.outcome:8s} {item.status:8s} {item.file}{'  ' + item.detail if item.detail else ''}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from MAISIEngine.io.dicom import export_dicom
    from MAISIEngine.io.dicom.send import parse_destination, read_token, send_cstore, send_stow
    from MAISIEngine.io.nifti import read_volume

    # Check what can be checked before writing anything.
    destination = parse_destination(args.send) if args.send else None
    token = read_token(args.token_file) if args.stow else None
    if args.token_file and not args.stow:
        raise MaisiError("--token-file is only used with --stow", "add --stow URL or drop --token-file")
    image = read_volume(args.image, what="image")
    labels = read_volume(args.labels, what="labels") if args.labels else None
    provenance = load_provenance(args.provenance, args.image)
    result = export_dicom(image, labels, args.output, provenance=provenance, overwrite=args.overwrite,
                          new_study=args.new_study, synthetic_data_element=args.synthetic_data_element)
    summary: dict[str, Any] = {
        "output_dir": str(result.out_dir), "ct_slices": len(result.ct_files),
        "seg": str(result.seg_file) if result.seg_file else None, "segments": len(result.segments),
        "patient_id": result.patient_id, "study_uid": result.study_uid, "series_uid": result.series_uid,
    }
    files = result.ct_files + ([result.seg_file] if result.seg_file else [])
    failed = 0
    if destination is not None:
        sent = send_cstore(files, destination, args.calling_ae, args.timeout, progress=_report)
        summary["send"] = {"destination": str(destination), "instances": [s.to_dict() for s in sent]}
        failed += sum(not s.ok for s in sent)
    if args.stow:
        stored = send_stow(files, args.stow, token, args.timeout, progress=_report)
        summary["stow"] = {"url": args.stow, "instances": [s.to_dict() for s in stored]}
        failed += sum(not s.ok for s in stored)
    print(json.dumps(summary, indent=2))
    if failed:
        print(f"error: {failed} instance(s) were refused (see the statuses above); the export in {result.out_dir} is "
              "complete and can be sent again", file=sys.stderr)
        return 1
    return 0
