"""`maisi generate`: a synthetic CT and its label map from a mask (or a phantom template)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from MAISIEngine.commands.common import StageBars, add_device_arguments, check_model_argument, read_mask, warn
from MAISIEngine.conditioning import CT_MODALITIES as MODALITY_CHOICES
from MAISIEngine.conditioning import parse_regions
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.privacy import describe_source
from MAISIEngine.maskgen import cli as maskgen_cli
from MAISIEngine.pipeline import OUTPUT_GRIDS, GenerationRequest, generate
from MAISIEngine.validation import (check_device, check_devices, check_guidance, check_memory, check_output_dir,
                                    check_retries, check_seed, check_size, check_spacing, check_steps)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate a synthetic CT from a label map",
                              description="Generate a synthetic CT and its label map. Outputs are marked SYNTHETIC.")
    p.add_argument("--model", default="demo", help="rflow-ct, ddpm-ct, demo, or a model directory (default demo)")
    p.add_argument("--mask", type=Path, help="label map with MAISI ids (NIfTI, DICOM SEG, or a CT+SEG folder), "
                   "or 'generated' to generate one first (see --anatomy-size)")
    maskgen_cli.add_generated_mask_arguments(p)
    p.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="output size in voxels")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), help="output spacing in mm")
    p.add_argument("--region", nargs="+", help="body region(s): head-neck, chest, abdomen, lower-body")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, metavar="S",
                   help="classifier-free guidance scale s as in NVIDIA's reference: uncond + s * (cond - uncond), "
                        "the unconditional branch with modality class 0 and the mask's tumors replaced by their "
                        "host organs; 0 = off (the default for CT), 1 = same as off at twice the cost, >1 stronger")
    p.add_argument("--modality", metavar="|".join(MODALITY_CHOICES),
                   help="modality class for models that take one (rflow-ct): ct (default), ct_wo_contrast, ct_contrast")
    p.add_argument("--output-grid", default="model", choices=OUTPUT_GRIDS,
                   help="model: write on the grid generated (RAS voxel order; a mask grid the model does not take "
                        "is fitted to the nearest one it does); input: resample the CT (linear) and labels "
                        "(nearest) back onto the mask's own grid")
    p.add_argument("--quality-retries", type=int, default=0,
                   help="regenerate with the next seed while the HU quality check fails, up to N times")
    p.add_argument("--format", default="nifti", choices=("nifti", "dicom"),
                   help="nifti, or dicom (a CT series + DICOM SEG beside the NIfTI files)")
    add_device_arguments(p)
    p.add_argument("-o", "--output", required=True, help="output directory (created when the result is complete)")


def check_arguments(args: argparse.Namespace) -> None:
    """Every flag checked before anything is read, created or computed."""
    args.output = check_output_dir(args.output)
    args.size = check_size(args.size)
    args.spacing = check_spacing(args.spacing)
    check_seed(args.seed)
    check_steps(args.steps)
    check_guidance(args.guidance)
    check_retries(args.quality_retries)
    check_device(args.device)
    args.devices = check_devices(args.devices)
    args.max_gpu_memory = check_memory(args.max_gpu_memory)
    check_model_argument(args.model)


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    generated = args.mask is not None and str(args.mask) == maskgen_cli.GENERATED
    if args.anatomy_size and not generated:
        raise MaisiError("--anatomy-size needs --mask generated", "add --mask generated, or leave out --anatomy-size")
    request = GenerationRequest(
        model=args.model,
        mask=read_mask(args.mask) if args.mask and not generated else None,
        mask_source="generated" if generated else describe_source(args.mask),
        size=args.size,
        spacing=args.spacing,
        region=parse_regions(args.region),
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance,
        modality=args.modality,
        output_grid=args.output_grid,
        device=args.device,
        precision=args.precision,
        quality_retries=args.quality_retries,
        max_gpu_memory=args.max_gpu_memory,
        tsp_devices=args.devices,
    )
    bars = StageBars()
    try:
        if generated:
            result = maskgen_cli.generate_ct_with_generated_mask(request, args.mask_model, args.anatomy_size,
                                                                 args.mask_steps, progress=bars, log=warn)
        else:
            result = generate(request, progress=bars, log=warn)
    finally:
        bars.close()
    paths = result.write(args.output, args.format)
    quality = result.provenance.get("quality") or {}
    summary = {"seed": result.provenance["seed"], "timings_s": result.provenance["timings_s"],
               "quality_passed": quality.get("passed"), **paths}
    print(json.dumps(summary, indent=2))
    return 0
