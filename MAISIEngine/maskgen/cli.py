"""`maisi masks generate` (a label map from anatomy sizes) and `maisi generate --mask generated` (map, then CT).

Both check every argument before loading a network: an unknown structure, a size outside [0, 1], a grid
the mask model cannot fill, or missing weights end in one `error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from MAISIEngine.errors import MaisiError
from MAISIEngine.maskgen import anatomy
from MAISIEngine.maskgen.model import LoadedMaskModel, load_mask_model, load_mask_preset, shipped_mask_models
from MAISIEngine.maskgen.pipeline import REGIONS, GeneratedMask, check_mask_grid, generate_mask

GENERATED = "generated"
"""The value of `maisi generate --mask` that asks for a generated label map."""

DEFAULT_MASK_MODEL = "mask-ct"


def _sizes_help() -> str:
    return (f"NAME=SIZE pairs, SIZE a percentile in [0, 1] of that structure's size in the model's training "
            f"population (0 smallest, 1 largest; a tumor may be -1: none). Structures: {anatomy.accepted_names()}. "
            "The others are taken from the closest case in the model's size database.")


def add_generate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`maisi masks generate`."""
    p = sub.add_parser("generate", help="generate a label map from anatomy sizes (MAISI mask-generation model)",
                       description="Generate a MAISI label map from nothing, with control over anatomy sizes.")
    p.add_argument("--anatomy-size", nargs="+", default=[], metavar="NAME=SIZE", help=_sizes_help())
    p.add_argument("--region", choices=REGIONS, help="centre the field of view on this body region")
    p.add_argument("--size", nargs=3, type=int, metavar=("X", "Y", "Z"), help="voxels (default: the model's)")
    p.add_argument("--spacing", nargs=3, type=float, metavar=("SX", "SY", "SZ"), help="mm (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=DEFAULT_MASK_MODEL,
                   help="mask-ct (NVIDIA's weights, `maisi weights download mask-generation`), mask-demo "
                        f"(small, shipped), or a folder holding mask_preset.json (default {DEFAULT_MASK_MODEL})")
    p.add_argument("--steps", type=int, help="DDPM steps (default: the model's; fewer is faster and rougher)")
    p.add_argument("--attempts", type=int, default=3,
                   help="draw again (next seed) while a requested structure is missing, up to N draws in all")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (labels.nii.gz, provenance.json)")
    return p


def add_generated_mask_arguments(p: argparse.ArgumentParser) -> None:
    """The options `maisi generate` takes with `--mask generated`."""
    p.add_argument("--anatomy-size", nargs="+", default=[], metavar="NAME=SIZE",
                   help="with --mask generated: " + _sizes_help())
    p.add_argument("--mask-model",
                   help=f"with --mask generated: the mask model ({', '.join(shipped_mask_models())} or a folder; "
                        "default mask-demo with the demo CT model, else mask-ct)")
    p.add_argument("--mask-steps", type=int, help="with --mask generated: DDPM steps of the mask model")


def _grid(preset, size, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    size = tuple(int(s) for s in size) if size else preset.default_size
    spacing = tuple(float(s) for s in spacing) if spacing else preset.default_spacing
    check_mask_grid(preset, size, spacing)
    return size, spacing  # type: ignore[return-value]


def _check_steps(steps: int | None, preset) -> None:
    top = int(preset.scheduler["num_train_timesteps"])
    if steps is not None and not 1 <= steps <= top:
        raise MaisiError(f"--steps {steps} is outside 1..{top}", f"the model's default is {preset.num_inference_steps}")


def draw_mask(model: LoadedMaskModel, pairs, size, spacing, seed: int, region: str | None, steps: int | None,
              attempts: int, log=None, progress=None) -> GeneratedMask:
    """Draw maps with seeds seed, seed+1, ... until every requested structure is there (at most `attempts`)."""
    if attempts < 1:
        raise MaisiError(f"--attempts {attempts} is not positive", "use 1 or more")
    database = anatomy.load_size_database(model.files["size_database"])
    tried: list[dict[str, Any]] = []
    for k in range(attempts):
        result = generate_mask(model, pairs, size, spacing, seed + k, region, steps, database, progress)
        tried.append({"seed": seed + k, "missing": result.missing})
        if not result.missing:
            break
        if log is not None and k + 1 < attempts:
            log(f"warning: seed {seed + k} lacks {', '.join(result.missing)}; drawing again with seed {seed + k + 1}")
    result.provenance["draws"] = tried
    return result


def write_mask(out_dir: Path, result: GeneratedMask) -> dict[str, str]:
    """labels.nii.gz and provenance.json, each written atomically."""
    from MAISIEngine.io.atomic import write_text_atomic
    from MAISIEngine.io.nifti import write_volume

    out_dir.mkdir(parents=True, exist_ok=True)
    labels, provenance = out_dir / "labels.nii.gz", out_dir / "provenance.json"
    write_volume(labels, result.volume.array, result.volume.affine, dtype=np.uint8,
                 description=f"maisi {result.provenance.get('model', '')} generated label map seed {result.provenance.get('seed')}")
    write_text_atomic(provenance, json.dumps({"synthetic": True, **result.provenance}, indent=2) + "\n")
    return {"labels": str(labels), "provenance": str(provenance)}


def run_generate(args: argparse.Namespace) -> None:
    """`maisi masks generate`; MaisiErrors propagate to the caller, which prints them."""
    from MAISIEngine.commands.common import ensure_writable_dir
    from MAISIEngine.models import resolve_device

    pairs = anatomy.parse_anatomy_sizes(args.anatomy_size)
    preset = load_mask_preset(args.model)
    size, spacing = _grid(preset, args.size, args.spacing)
    _check_steps(args.steps, preset)
    model = load_mask_model(preset, resolve_device(args.device))
    ensure_writable_dir(args.output)
    result = draw_mask(model, pairs, size, spacing, args.seed, args.region, args.steps, args.attempts,
                       log=lambda m: print(m, file=sys.stderr))
    paths = write_mask(args.output, result)
    if result.missing:
        print(f"warning: the map lacks {', '.join(result.missing)} after {args.attempts} draws", file=sys.stderr)
    print(json.dumps({"seed": result.provenance["seed"], "seconds": result.provenance["seconds"],
                      "condition": result.provenance["condition"], **paths}, indent=2))


def default_mask_model(ct_model: str) -> str:
    """The mask model that goes with a CT model: the shipped demo pair together, NVIDIA's otherwise."""
    return "mask-demo" if ct_model == "demo" else DEFAULT_MASK_MODEL


def generate_ct_with_generated_mask(request, mask_model: str | None, anatomy_sizes: list[str], mask_steps: int | None,
                                    progress=None, log=None):
    """Label map, then CT, in one process. A failed quality check draws a new map (and CT) with the next
    seed, as the reference regenerates the pair; the provenance records every draw and the map's own."""
    from dataclasses import replace

    from MAISIEngine.models import load_model, resolve_device
    from MAISIEngine.pipeline import generate
    from MAISIEngine.presets import load_preset

    pairs = anatomy.parse_anatomy_sizes(anatomy_sizes)
    ct_preset = load_preset(request.model)
    mask_preset = load_mask_preset(mask_model or default_mask_model(ct_preset.name))
    size, spacing = _grid(mask_preset, request.size or ct_preset.default_size,
                          request.spacing or ct_preset.default_spacing)
    _check_steps(mask_steps, mask_preset)
    device = resolve_device(request.device)
    masks = load_mask_model(mask_preset, device)
    ct_model = load_model(ct_preset, device)
    draws: list[dict[str, Any]] = []
    for attempt in range(int(request.quality_retries) + 1):
        seed = int(request.seed) + attempt
        mask = draw_mask(masks, pairs, size, spacing, seed, None, mask_steps, attempts=1)
        one = replace(request, mask=mask.volume, mask_source="generated label map", seed=seed, quality_retries=0,
                      size=None, spacing=None)
        result = generate(one, progress=progress, log=log, model=ct_model)
        passed = (result.provenance.get("quality") or {}).get("passed")
        draws.append({"seed": seed, "mask_missing": mask.missing, "quality_passed": passed})
        if passed is None or passed or attempt == request.quality_retries:
            break
        if log is not None:
            log(f"warning: seed {seed} failed the HU quality check; drawing a new label map with seed {seed + 1}")
    result.provenance["requested_seed"] = int(request.seed)
    result.provenance["attempts"] = draws
    result.provenance["mask_generation"] = mask.provenance
    return result
