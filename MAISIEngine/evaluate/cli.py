"""`maisi evaluate fid | vae | quality`: a one-screen table on stdout, the full report as JSON with --json.
Bad input (empty sets, mixed modalities, images smaller than the crop, missing feature weights) ends in one
line and exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError


def _triple(text: str, kind: type, what: str) -> tuple | None:
    """'1x1x1', '1,1,1' or '1' (all axes) -> a triple; 'none' -> None."""
    if text.strip().lower() in ("none", "off", ""):
        return None
    parts = text.replace(",", "x").split("x")
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        raise MaisiError(f"cannot read {what} '{text}'", f"write it as AxBxC, a single number, or none") from None
    values = values * 3 if len(values) == 1 else values
    if len(values) != 3 or any(v <= 0 for v in values):
        raise MaisiError(f"{what} '{text}' needs three positive values", "write it as AxBxC, a single number, or none")
    return values


def _ratio(text: str) -> float | None:
    if text.strip().lower() in ("none", "all", "1", "1.0"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise MaisiError(f"--center-slices '{text}' is not a fraction in (0, 1]", "e.g. 0.4 (the reference's), or all")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    parser = subparsers.add_parser("evaluate", help="FID, VAE reconstruction and quality-check measures of CT sets",
                                   description=__doc__)
    commands = parser.add_subparsers(dest="evaluate_command", metavar="MEASURE", required=True)

    fid = commands.add_parser("fid", help="2.5D FID of a synthetic CT set against a real one (per plane and average)",
                              description="2.5D FID with RadImageNet ResNet-50 features and the preprocessing of "
                              "NVIDIA's compute_fid_2-5d_ct.py. Sets: a folder of NIfTI files, a `maisi batch` "
                              "folder, or a MONAI datalist JSON.")
    fid.add_argument("--real", required=True, help="real CTs: folder or datalist")
    fid.add_argument("--synthetic", required=True, help="synthetic CTs: folder or datalist")
    fid.add_argument("--features", default="radimagenet-resnet50",
                     help="radimagenet-resnet50 (the cached published file) or a weights FILE (.pth / .safetensors)")
    fid.add_argument("--download-features", action="store_true",
                     help="download the RadImageNet weights into the cache first if they are missing")
    fid.add_argument("--planes", default="axial,coronal,sagittal", help="comma-separated planes (default all three)")
    fid.add_argument("--spacing", default="1x1x1", help="resample to this spacing in mm, or none (default 1x1x1)")
    fid.add_argument("--center-crop", default="512x512x512", help="crop to this size in voxels, or none (default 512^3)")
    fid.add_argument("--no-pad", action="store_true", help="do not pad smaller images with air up to the crop")
    fid.add_argument("--center-slices", default="0.4", help="central fraction of each plane's slices, or all (default 0.4)")
    fid.add_argument("--max-images", type=int, help="use at most this many images of each set (sorted by path)")
    fid.add_argument("--feature-cache", type=Path, metavar="DIR",
                     help="keep each image's features here and reuse them (a real set featurised once)")
    fid.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    fid.add_argument("--json", type=Path, help="write the full report here")

    vae = commands.add_parser("vae", help="PSNR / SSIM of the VAE's encode-decode (TSP path) on CTs")
    vae.add_argument("--images", required=True, help="CTs in HU: folder or datalist")
    vae.add_argument("--model", default="demo", help="model name or directory (default demo)")
    vae.add_argument("--features", help="RadImageNet weights (radimagenet-resnet50 or FILE) to add a perceptual distance")
    vae.add_argument("--device", default="cpu")
    vae.add_argument("--json", type=Path, help="write the full report here")

    quality = commands.add_parser("quality", help="the HU quality check over a set, pass rate per organ group")
    quality.add_argument("source", help="folder (`maisi batch` output, or CTs with case_label.nii.gz) or datalist")
    quality.add_argument("--json", type=Path, help="write the full report here")
    return parser


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        from MAISIEngine.io.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(report, indent=2))


def _feature_network(spec: str, download: bool, device: str):
    from MAISIEngine.evaluate.radimagenet import MANIFEST_NAME, load_radimagenet, resolve_features

    if download and spec.strip().lower() == MANIFEST_NAME:
        from MAISIEngine.weights.cache import MISSING, status_of
        from MAISIEngine.weights.download import download_weights
        from MAISIEngine.weights.manifest import entry_by_name

        if status_of(entry_by_name(MANIFEST_NAME)).status == MISSING:
            download_weights([MANIFEST_NAME])
    path = resolve_features(spec)
    return path, load_radimagenet(path, device)


def _run_fid(args: argparse.Namespace) -> int:
    from MAISIEngine.evaluate.fid import evaluate_fid, fid_table
    from MAISIEngine.evaluate.preprocess import Preprocessing
    from MAISIEngine.evaluate.sources import read_set

    settings = Preprocessing(spacing=_triple(args.spacing, float, "--spacing"),
                             crop=_triple(args.center_crop, int, "--center-crop"),
                             pad=not args.no_pad, center_ratio=_ratio(args.center_slices))
    planes = tuple(p.strip().lower() for p in args.planes.split(",") if p.strip())
    real, synthetic = read_set(args.real, "real set"), read_set(args.synthetic, "synthetic set")
    if args.max_images:
        real, synthetic = sorted(real, key=lambda c: str(c.image))[: args.max_images], \
            sorted(synthetic, key=lambda c: str(c.image))[: args.max_images]
    path, network = _feature_network(args.features, args.download_features, args.device)
    report = evaluate_fid(real, synthetic, network, settings, planes, args.device, str(path), _log, args.feature_cache)
    _write_json(args.json, report)
    print(fid_table(report))
    return 0


def _run_vae(args: argparse.Namespace) -> int:
    from MAISIEngine.evaluate.sources import read_set
    from MAISIEngine.evaluate.vae import evaluate_vae, vae_table

    cases = read_set(args.images, "image set")
    perceptual = _feature_network(args.features, False, args.device)[1] if args.features else None
    report = evaluate_vae(cases, args.model, args.device, perceptual, _log)
    _write_json(args.json, report)
    print(vae_table(report))
    return 0


def _run_quality(args: argparse.Namespace) -> int:
    from MAISIEngine.evaluate.batch_quality import evaluate_quality, quality_table
    from MAISIEngine.evaluate.sources import read_set

    report = evaluate_quality(read_set(args.source, "set"), _log)
    _write_json(args.json, report)
    print(quality_table(report))
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {"fid": _run_fid, "vae": _run_vae, "quality": _run_quality}
    try:
        return handlers[args.evaluate_command](args)
    except MaisiError as error:
        print(f"error: {error.one_line()}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maisi")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
