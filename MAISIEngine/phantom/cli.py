"""`maisi phantom`: write a seeded torso phantom (mask.nii.gz + ct.nii.gz) into a folder."""

from __future__ import annotations

import argparse
import sys
import time

from MAISIEngine.errors import MaisiError
from MAISIEngine.labels import TUMOR_TYPES
from MAISIEngine.phantom.make import DEFAULT_NOISE_HU, DEFAULT_SUPERSAMPLE, REGION_CENTERS, make_phantom, write_phantom


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "phantom",
        help="write a procedural torso phantom: MAISI label mask and CT",
        description="Write mask.nii.gz (MAISI labels) and ct.nii.gz (HU) of a seeded torso phantom. "
        "The same seed gives the same anatomy at any size, spacing and region.",
    )
    parser.add_argument(
        "--size",
        nargs=3,
        type=int,
        default=[128, 128, 128],
        metavar=("X", "Y", "Z"),
        help="voxels per axis (default 128 128 128)",
    )
    parser.add_argument(
        "--spacing",
        nargs=3,
        type=float,
        default=[3.0, 3.0, 3.0],
        metavar=("SX", "SY", "SZ"),
        help="mm per voxel (default 3 3 3)",
    )
    parser.add_argument(
        "--region", default="chest-abdomen", help="body level at the volume centre: " + ", ".join(REGION_CENTERS)
    )
    parser.add_argument("--seed", type=int, default=0, help="which person (default 0)")
    parser.add_argument(
        "--tumor",
        action="append",
        default=[],
        metavar="TYPE",
        help="add a tumor inside its organ; repeatable: " + ", ".join(TUMOR_TYPES),
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=DEFAULT_NOISE_HU,
        help=f"image noise, HU standard deviation (default {DEFAULT_NOISE_HU:g})",
    )
    parser.add_argument(
        "--supersample",
        type=int,
        default=DEFAULT_SUPERSAMPLE,
        metavar="N",
        help=f"samples per voxel and axis for partial volume (default {DEFAULT_SUPERSAMPLE}; 1: voxel centres only)",
    )
    parser.add_argument(
        "--psf-fwhm",
        type=float,
        default=None,
        metavar="MM",
        help="scanner point spread, full width at half maximum in mm (default: the spacing; 0: none)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        start = time.perf_counter()
        phantom = make_phantom(args.size, args.spacing, args.region, args.seed, tuple(args.tumor), noise_hu=args.noise,
                               supersample=args.supersample, psf_fwhm_mm=args.psf_fwhm)
        paths = write_phantom(phantom, args.output)
    except MaisiError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    size = "x".join(map(str, phantom.size))
    spacing = "x".join(f"{s:g}" for s in phantom.spacing)
    print(f"phantom seed {phantom.seed}, {phantom.region}, {size} at {spacing} mm ({elapsed:.1f} s)")
    for tumor in phantom.tumors:
        center = ", ".join(f"{c:.1f}" for c in tumor.center_ras)
        print(f"  {tumor.kind} tumor (label {tumor.label}) at RAS ({center}) mm, radius {tumor.radius_mm:.1f} mm")
    print(f"mask: {paths['mask']}")
    print(f"ct:   {paths['ct']}")
    return 0
