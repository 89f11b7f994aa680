"""Acceptance figures of a demo-sized model: VAE PSNR/SSIM on held-out phantoms, and generated CTs
whose organ medians must sit near the phantom's nominal HU and pass the paper's quality check.

    python bench/demo_quality.py                      # the shipped demo model, on CPU
    python bench/demo_quality.py --model DIR --seeds 10 --size 128 128 128 --spacing 3 3 3 --json out.json

Prints one line per seed and a summary; exit 0 when every acceptance line holds, 1 otherwise.
The held-out phantoms use seeds far from those the demo was trained on (`HELD_OUT_SEED`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from MAISIEngine.phantom.fidelity import ORGAN_TOLERANCES, organ_errors  # noqa: E402

HELD_OUT_SEED = 900_000
"""Phantom seeds from here on were never in a training pool of bench/train_demo.py."""

PSNR_MIN_DB = 30.0
SSIM_MIN = 0.90
QUALITY_MIN_PASS = 0.9
REGIONS = ("chest-abdomen", "chest", "abdomen")


@dataclass
class HeldOut:
    """One held-out phantom: labels, CT in HU, nominal HU per label id, spacing."""

    labels: np.ndarray
    ct: np.ndarray
    nominal: dict[int, float]
    affine: np.ndarray
    seed: int
    region: str


def held_out_phantom(index: int, size=(128, 128, 128), spacing=(3.0, 3.0, 3.0), region: str | None = None,
                     noise_hu: float | None = None) -> HeldOut:
    """`noise_hu`: the CT's noise (None: the phantom's default)."""
    from MAISIEngine.phantom import make_phantom

    seed = HELD_OUT_SEED + index
    region = region or REGIONS[index % len(REGIONS)]
    noise = {} if noise_hu is None else {"noise_hu": noise_hu}
    phantom = make_phantom(size=tuple(size), spacing=tuple(spacing), region=region, seed=seed, **noise)
    return HeldOut(np.asarray(phantom.labels), np.asarray(phantom.ct, np.float32), dict(phantom.nominal_hu),
                   np.asarray(phantom.affine), seed, region)


def vae_figures(autoencoder: torch.nn.Module, volumes: list[np.ndarray], device: torch.device,
                amp: bool = False) -> dict[str, Any]:
    """MONAI PSNR and SSIM (data range 1) of posterior-mean reconstructions of whole [0, 1] volumes."""
    from monai.metrics import PSNRMetric, SSIMMetric

    from MAISIEngine.train.data import pad_to_multiple
    from MAISIEngine.train.precision import autocast

    psnr_metric = PSNRMetric(max_val=1.0)
    ssim_metric = SSIMMetric(spatial_dims=3, data_range=1.0)
    psnrs, ssims = [], []
    autoencoder = autoencoder.to(device).eval()
    for volume in volumes:
        shape = volume.shape
        padded = pad_to_multiple(volume.astype(np.float32), 4, 0.0)
        x = torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(device)
        with torch.no_grad(), autocast(device, amp):
            z_mu, _ = autoencoder.encode(x)
            reconstruction = autoencoder.decode(z_mu)
        reconstruction = reconstruction.float().clamp(0, 1)[..., : shape[0], : shape[1], : shape[2]].cpu()
        target = torch.from_numpy(volume.astype(np.float32))[None, None]
        psnrs.append(float(psnr_metric(reconstruction, target).mean()))
        ssims.append(float(ssim_metric(reconstruction, target).mean()))
    return {"psnr_db": round(float(np.mean(psnrs)), 2), "ssim": round(float(np.mean(ssims)), 4),
            "psnr_each": [round(v, 2) for v in psnrs], "ssim_each": [round(v, 4) for v in ssims],
            "volumes": len(volumes), "ok": float(np.mean(psnrs)) >= PSNR_MIN_DB and float(np.mean(ssims)) >= SSIM_MIN}


def generate_one(model: Any, held: HeldOut, seed: int, steps: int | None, device: str) -> tuple[np.ndarray, float]:
    """Generate a CT from a held-out phantom mask through the engine's normal pipeline."""
    from MAISIEngine.io.nifti import Volume
    from MAISIEngine.pipeline import GenerationRequest, generate

    request = GenerationRequest(model=model.preset.name, mask=Volume(held.labels, held.affine),
                                mask_source="held-out phantom", seed=seed, steps=steps, device=device)
    started = time.perf_counter()
    result = generate(request, model=model)
    return np.asarray(result.image.array, np.float32), time.perf_counter() - started


def generation_figures(model_ref: str | Path, seeds: int, size=(128, 128, 128), spacing=(3.0, 3.0, 3.0),
                       steps: int | None = None, device: str = "cpu", log=print) -> dict[str, Any]:
    """For each seed: a held-out phantom mask -> generated CT; organ errors and the quality check."""
    from MAISIEngine.models import load_model
    from MAISIEngine.quality import check_quality

    model = load_model(str(model_ref), device)
    rows = []
    for index in range(seeds):
        held = held_out_phantom(index, size, spacing)
        image, seconds = generate_one(model, held, seed=index, steps=steps, device=device)
        errors = organ_errors(image, held.labels, held.nominal)
        quality = check_quality(image, held.labels)
        row = {"seed": index, "phantom_seed": held.seed, "region": held.region, "seconds": round(seconds, 2),
               "organs": errors, "organs_ok": all(e["ok"] for e in errors.values()),
               "quality_passed": quality.passed, "quality_failed": list(quality.failed)}
        rows.append(row)
        log(f"seed {index} ({held.region}): {seconds:.1f} s, quality {'pass' if quality.passed else 'FAIL'}, "
            + ", ".join(f"{k} {v['median_hu']:.0f}/{v['nominal_hu']:.0f}{'' if v['ok'] else '!'}"
                        for k, v in errors.items()))
    passed = sum(r["quality_passed"] for r in rows)
    worst: dict[str, float] = {}
    for row in rows:
        for group, entry in row["organs"].items():
            worst[group] = max(worst.get(group, 0.0), entry["error_hu"])
    median_error: dict[str, float] = {}
    for group in ORGAN_TOLERANCES:
        values = [r["organs"][group]["error_hu"] for r in rows if group in r["organs"]]
        if values:
            median_error[group] = round(float(np.median(values)), 1)
    return {"seeds": seeds, "size": list(size), "spacing": list(spacing),
            "steps": steps or model.preset.num_inference_steps,
            "quality_passed": passed, "quality_ok": passed >= int(np.ceil(QUALITY_MIN_PASS * seeds)),
            "organs_ok_seeds": sum(r["organs_ok"] for r in rows), "worst_error_hu": worst,
            "median_error_hu": median_error, "seconds_mean": round(float(np.mean([r["seconds"] for r in rows])), 2),
            "rows": rows}


def vae_figures_for_model(model_ref: str | Path, volumes: int, size=(128, 128, 128), spacing=(3.0, 3.0, 3.0),
                          device: str = "cpu") -> dict[str, Any]:
    from MAISIEngine.networks import load_network
    from MAISIEngine.presets import load_preset
    from MAISIEngine.train.data import hu_to_unit
    from MAISIEngine.weights.resolve import resolve_weight_path

    preset = load_preset(str(model_ref))
    autoencoder, _ = load_network("autoencoder", preset, resolve_weight_path(preset, "autoencoder"), device)
    unit = [hu_to_unit(held_out_phantom(i, size, spacing).ct) for i in range(volumes)]
    return vae_figures(autoencoder, unit, torch.device(device)) | {"size": list(size), "spacing": list(spacing)}


CARD_BEGIN = "<!-- cpu-figures:begin -->"
CARD_END = "<!-- cpu-figures:end -->"


def figure_lines(figures: dict[str, Any]) -> list[str]:
    """Markdown bullets for VAE and generation figures (the model card's CPU section and `bench/train_demo.py`)."""
    lines = []
    vae = figures.get("vae")
    if vae:
        lines.append(f"- VAE, {vae['volumes']} held-out phantoms {vae['size']} at {vae['spacing']} mm (MONAI "
                     f"`PSNRMetric`, `SSIMMetric`, data range 1): PSNR {vae['psnr_db']} dB, SSIM {vae['ssim']} "
                     f"({'meets' if vae['ok'] else 'misses'} PSNR >= {PSNR_MIN_DB}, SSIM >= {SSIM_MIN}).")
    gen = figures.get("generation")
    if gen:
        lines.append(f"- {gen['seeds']} generations {gen['size']} at {gen['spacing']} mm, {gen['steps']} steps: "
                     f"{gen['seconds_mean']} s each; quality check passed {gen['quality_passed']}/{gen['seeds']}; "
                     f"organ tolerances (liver, spleen, kidneys, heart 50 HU; lungs 100; bone 150) met on "
                     f"{gen['organs_ok_seeds']}/{gen['seeds']}; median |error| {gen['median_error_hu']} HU; "
                     f"worst |error| {gen['worst_error_hu']} HU.")
    return lines


def card_section(figures: dict[str, Any]) -> str:
    """Markdown lines with the CPU acceptance figures (what `--card` writes into the model card)."""
    import platform

    lines = [f"Measured on CPU ({platform.processor() or platform.machine()}, {figures['threads']} threads) with "
             f"`python bench/demo_quality.py` ({figures['seconds_total']} s in all):", ""]
    lines += figure_lines(figures)
    return "\n".join(lines)


def update_card(path: Path, figures: dict[str, Any]) -> None:
    """Replace the text between the card's CPU-figure markers (atomically)."""
    from MAISIEngine.io.atomic import write_text_atomic

    text = path.read_text()
    if CARD_BEGIN not in text or CARD_END not in text:
        raise SystemExit(f"{path} has no {CARD_BEGIN} ... {CARD_END} section")
    head, rest = text.split(CARD_BEGIN, 1)
    _, tail = rest.split(CARD_END, 1)
    write_text_atomic(path, f"{head}{CARD_BEGIN}\n{card_section(figures)}\n{CARD_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="demo (shipped) or a model directory")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--size", type=int, nargs=3, default=(128, 128, 128))
    parser.add_argument("--spacing", type=float, nargs=3, default=(3.0, 3.0, 3.0))
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's, at most 30)")
    parser.add_argument("--vae-volumes", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--card", type=Path, help="write the figures into this model card's CPU section")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    figures: dict[str, Any] = {"model": args.model, "device": args.device, "threads": torch.get_num_threads()}
    started = time.perf_counter()
    if args.vae_volumes > 0:
        figures["vae"] = vae_figures_for_model(args.model, args.vae_volumes, args.size, args.spacing, args.device)
        print(f"VAE on {args.vae_volumes} held-out phantoms: PSNR {figures['vae']['psnr_db']} dB "
              f"(>= {PSNR_MIN_DB}), SSIM {figures['vae']['ssim']} (>= {SSIM_MIN})")
    if args.seeds > 0:
        figures["generation"] = generation_figures(args.model, args.seeds, args.size, args.spacing, args.steps,
                                                   args.device)
        gen = figures["generation"]
        print(f"generation {gen['size']} at {gen['spacing']} mm, {gen['steps']} steps: quality check passed "
              f"{gen['quality_passed']}/{gen['seeds']}; organ tolerances met on {gen['organs_ok_seeds']}/{gen['seeds']} "
              f"seeds; worst |error| HU {gen['worst_error_hu']}; median |error| HU {gen['median_error_hu']}; "
              f"{gen['seconds_mean']} s per CT")
    figures["seconds_total"] = round(time.perf_counter() - started, 1)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.card:
        update_card(args.card, figures)
    ok = figures.get("vae", {}).get("ok", True) and figures.get("generation", {}).get("quality_ok", True) \
        and figures.get("generation", {}).get("organs_ok_seeds", 0) == figures.get("generation", {}).get("seeds", 0)
    print("ACCEPTANCE MET" if ok else "ACCEPTANCE NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
