"""`maisi inpaint`: put a tumor of a chosen type into a real or synthetic CT."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from MAISIEngine import validation as v
from MAISIEngine.commands.common import StageBars, add_device_arguments, check_model_argument, warn
from MAISIEngine.labels import TUMOR_TYPES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inpaint", help="inpaint a tumor into a CT",
                              description="Inpaint a tumor where the tumor mask says; voxels farther than the margin "
                                          "from it are left exactly as they were. Outputs are marked SYNTHETIC.")
    p.add_argument("--image", type=Path, required=True, help="CT in HU (NIfTI)")
    p.add_argument("--labels", type=Path, required=True, help="its MAISI label map, on the same grid")
    p.add_argument("--tumor", type=Path, help="tumor mask on the same grid (default: voxels already labelled as the tumor)")
    p.add_argument("--type", dest="tumor_type", required=True, choices=sorted(TUMOR_TYPES), help="tumor type")
    p.add_argument("--method", default="controlnet-repaint", choices=("controlnet-repaint", "inpaint-controlnet"))
    p.add_argument("--margin-mm", type=float, default=10.0, help="margin around the tumor that is regenerated")
    p.add_argument("--model", default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int)
    p.add_argument("--modality", metavar="ct|ct_wo_contrast|ct_contrast",
                   help="modality class for models that take one (rflow-ct); default ct")
    p.add_argument("--format", default="nifti", choices=("nifti", "dicom"))
    add_device_arguments(p)
    p.add_argument("-o", "--output", required=True, help="output directory (created when the result is complete)")


def run(args: argparse.Namespace) -> int:
    from MAISIEngine.inpaint import run_inpaint_job

    args.output = v.check_output_dir(args.output)
    v.check_seed(args.seed)
    v.check_steps(args.steps)
    v.check_device(args.device)
    v.check_float(args.margin_mm, "--margin-mm", 0.0, 200.0)
    check_model_argument(args.model)
    job = SimpleNamespace(image=str(args.image), labels=str(args.labels), tumor=str(args.tumor) if args.tumor else None,
                          tumor_type=args.tumor_type, model=args.model, method=args.method, margin_mm=args.margin_mm,
                          seed=args.seed, steps=args.steps, device=args.device, precision=args.precision,
                          output_dir=str(args.output), format=args.format, modality=args.modality)
    bars = StageBars()
    try:
        result = run_inpaint_job(job, progress=bars, log=warn)
    finally:
        bars.close()
    result.pop("provenance_data", None)
    print(json.dumps(result, indent=2))
    return 0
