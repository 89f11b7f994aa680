"""`maisi masks ...`: find a mask in the official database, import TotalSegmentator labels, add a tumor.

Each sub-command reads NIfTI files, writes NIfTI atomically on the input's grid and prints what it
did; a bad input ends with one `error: <what> (<how to fix>)` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from MAISIEngine import labels as label_table
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import write_text_atomic
from MAISIEngine.io.nifti import read_volume, same_grid, write_volume
from MAISIEngine.maskgen import cli as maskgen_cli
from MAISIEngine.masktools import body, maskdb, totalseg, tumors


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `masks` command and its sub-commands to a `maisi` argument parser."""
    masks = subparsers.add_parser(
        "masks",
        help="make label maps: official mask database, TotalSegmentator import, tumors",
        description="Make the label maps that drive generation.",
    )
    sub = masks.add_subparsers(dest="masks_command", metavar="{find,import-totalseg,tumor,generate}")
    sub.required = True

    find = sub.add_parser("find", help="pick a mask from the official database and resample it to a grid")
    find.add_argument("--anatomy", nargs="+", required=True, help="structures the mask must hold (names or ids)")
    find.add_argument("--region", nargs="+", help="body regions it must span: head-neck, chest, abdomen, lower-body")
    find.add_argument("--size", nargs=3, type=int, required=True, metavar=("X", "Y", "Z"))
    find.add_argument("--spacing", nargs=3, type=float, required=True, metavar=("SX", "SY", "SZ"))
    find.add_argument("--db-dir", help="folder holding the candidate JSON and the zip (default: the weights cache)")
    find.add_argument("--list", type=int, default=0, metavar="N", help="also print the N best candidates")
    find.add_argument("--augment", action="store_true",
                      help="randomly move its tumor within the host organ, or zoom it slightly, as the reference "
                           "does before generating from a database mask (`maisi batch` does this by default)")
    find.add_argument("--seed", type=int, default=0, help="seed of --augment")
    find.add_argument("-o", "--output", required=True, help="output label map (.nii.gz)")

    imp = sub.add_parser("import-totalseg", help="turn a TotalSegmentator label map into MAISI labels")
    imp.add_argument("input", help="TotalSegmentator multi-label map (.nii.gz)")
    imp.add_argument("--ct", help="the CT it was segmented from, to add the body envelope (label 200)")
    imp.add_argument("--ts-version", default="v2", choices=["v1", "v2"], help="TotalSegmentator class table")
    imp.add_argument("--threshold", type=float, default=-500.0, help="body HU threshold (default -500)")
    imp.add_argument("--report", help="also write the import report as JSON here")
    imp.add_argument("-o", "--output", required=True, help="output MAISI label map (.nii.gz)")

    tumor = sub.add_parser("tumor", help="add a tumor grown from a point inside its host organ")
    tumor.add_argument("--labels", required=True, help="MAISI label map (.nii.gz)")
    tumor.add_argument("--type", required=True, choices=sorted(label_table.TUMOR_TYPES))
    tumor.add_argument("--point", nargs=3, type=float, required=True, metavar=("X", "Y", "Z"), help="centre, RAS mm")
    tumor.add_argument("--voxel", action="store_true", help="--point is a voxel index (i j k), not RAS mm")
    tumor.add_argument("--size-mm", nargs="+", type=float, required=True, help="diameter, or three diameters, in mm")
    tumor.add_argument("--seed", type=int, default=0)
    tumor.add_argument("--irregularity", type=float, default=0.25, help="boundary irregularity, 0 = smooth ellipsoid")
    tumor.add_argument("--augment", action="store_true", help="also move, scale, erode/dilate and deform it")
    tumor.add_argument("--mask-out", help="also write the tumor alone as a 0/1 mask here")
    tumor.add_argument("-o", "--output", required=True, help="output label map with the tumor (.nii.gz)")
    maskgen_cli.add_generate_parser(sub)
    return masks


def _check_output(path: str) -> None:
    if not (path.endswith(".nii.gz") or path.endswith(".nii")):
        raise MaisiError(f"output {path} must be a NIfTI file", "end the name with .nii.gz")


def _label_array(array: np.ndarray, name: str) -> np.ndarray:
    """A MAISI label map as uint8, refusing fractional or out-of-range values."""
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise MaisiError(f"{name} holds non-integer values", "give a label map, not an image")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise MaisiError(f"{name} holds values outside 0..255", "give a MAISI label map (ids 0-132 and 200)")
    return array.astype(np.uint8)


def _find(args: argparse.Namespace) -> None:
    _check_output(args.output)
    index, archive = maskdb.locate_database(args.db_dir)
    if args.list > 0:
        ranked = maskdb.find_masks(index, archive, args.anatomy, args.region, size=args.size, spacing=args.spacing)
        for rank, candidate in enumerate(ranked[: args.list], start=1):
            entry = candidate.entry
            print(
                f"{rank}. {entry.mask_path} dim {list(entry.dim)} spacing {list(entry.spacing)} "
                f"field-of-view error {candidate.fov_error:.1%}"
            )
    with tempfile.TemporaryDirectory(prefix="maisi-masks-") as work:
        selection = maskdb.select_mask(
            index, archive, args.anatomy, args.region, size=args.size, spacing=args.spacing, work_dir=work
        )
    for candidate, reason in selection.refused:
        print(f"refused {candidate.entry.mask_path}: {reason}")
    volume = selection.volume
    array = volume.array
    if args.augment:
        from MAISIEngine.masktools.augment import augment_retrieved_mask

        array, done = augment_retrieved_mask(np.asarray(array), args.seed)
        print(f"augmented: {done} (seed {args.seed})")
    write_volume(args.output, array, volume.affine, description="mask from MAISI database", dtype=np.uint8)
    entry = selection.candidate.entry
    print(f"chose {entry.mask_path} (dim {list(entry.dim)}, spacing {list(entry.spacing)}), wrote {args.output}")


def _import_totalseg(args: argparse.Namespace) -> None:
    _check_output(args.output)
    source = read_volume(args.input, what="TotalSegmentator label map")
    labels, report = totalseg.totalseg_to_maisi(source.array, args.ts_version)
    if args.ct:
        ct = read_volume(args.ct, what="CT")
        if not same_grid(ct, source):
            raise MaisiError(
                f"the CT {Path(args.ct).name} and the label map are on different grids "
                f"(shape {ct.shape} vs {source.shape})",
                "give the CT the label map was segmented from",
            )
        envelope = body.body_envelope_from_ct(ct.array, ct.affine, args.threshold) | (labels > 0)
        labels = body.add_body(labels, envelope)
        report.body_voxels = int(np.count_nonzero(labels == label_table.BODY))
    write_volume(args.output, labels, source.affine, description="labels from TotalSegmentator", dtype=np.uint8)
    if args.report:
        write_text_atomic(args.report, json.dumps(report.to_dict(), indent=2) + "\n")
    for line in report.lines():
        print(line)
    if not args.ct:
        print("note: no body envelope (label 200) added; give --ct so the model sees the body contour")
    print(f"wrote {args.output}")


def _tumor(args: argparse.Namespace) -> None:
    _check_output(args.output)
    if args.mask_out:
        _check_output(args.mask_out)
    source = read_volume(args.labels, what="label map")
    labels = _label_array(source.array, Path(args.labels).name)
    size = args.size_mm[0] if len(args.size_mm) == 1 else args.size_mm
    mask = tumors.tumor_from_point(
        labels, source.affine, args.point, size, args.type, args.seed,
        point_space="voxel" if args.voxel else "ras", irregularity=args.irregularity,
    )
    if args.augment:
        mask = tumors.augment_tumor(labels, mask, args.type, args.seed, spacing=source.spacing)
    out = tumors.apply_tumor(labels, mask, args.type)
    write_volume(args.output, out, source.affine, description=f"labels with {args.type} tumor", dtype=np.uint8)
    if args.mask_out:
        write_volume(
            args.mask_out, mask.astype(np.uint8), source.affine, description=f"{args.type} tumor mask", dtype=np.uint8
        )
    millilitres = np.count_nonzero(mask) * float(np.prod(source.spacing)) / 1000.0
    voxels = np.count_nonzero(mask)
    print(f"{args.type} tumor: {voxels} voxels ({millilitres:.2f} ml), seed {args.seed}; wrote {args.output}")


_HANDLERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "find": _find,
    "import-totalseg": _import_totalseg,
    "tumor": _tumor,
    "generate": lambda args: maskgen_cli.run_generate(args),
}


def run(args: argparse.Namespace) -> int:
    """Run a parsed `masks` command; a `MaisiError` becomes one `error:` line and its exit code."""
    try:
        _HANDLERS[args.masks_command](args)
    except MaisiError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (`python -m MAISIEngine.masktools.cli masks ...`)."""
    parser = argparse.ArgumentParser(prog="maisi")
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser(commands)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
