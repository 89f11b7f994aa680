"""How far a VAE is from what its compression allows: the demo VAE's PSNR/SSIM on the held-out phantoms next
to ideal linear codecs of the same and lower compression, and next to the phantom's own noise floor.

    python bench/vae_bounds.py                   # the shipped demo model
    python bench/vae_bounds.py --model DIR       # a retrained one

A MAISI VAE keeps 4 latent channels per 4x4x4 voxels: 1/16 of the numbers in the volume. The ideal linear
codec of that size keeps the 1/16 of the Fourier coefficients with the lowest frequencies (a box of
16^(-1/3) of each axis's band; at 128^3 that is 51 of 128 frequencies per axis, 6.3 %) and drops the rest; every learned codec is measured against it here. A VAE
that beats it does so by being non-linear (sharp edges drawn from what it learned), which takes capacity.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from demo_quality import HELD_OUT_SEED, REGIONS, held_out_phantom, vae_figures

KEPT_FRACTIONS = (1 / 16, 1 / 8, 1 / 4)
"""1/16: the MAISI VAE's compression; 1/8 and 1/4: what 8 or 16 latent channels would keep."""


def unit_range(ct_hu: np.ndarray) -> np.ndarray:
    """The paper's preprocessing: HU clipped to [-1000, 1000], scaled to [0, 1]."""
    return ((np.clip(ct_hu, -1000, 1000) + 1000) / 2000).astype(np.float32)


def ideal_linear_codec(volume: np.ndarray, kept_fraction: float) -> np.ndarray:
    """Keep the lowest-frequency box holding `kept_fraction` of the Fourier coefficients, drop the rest."""
    band = kept_fraction ** (1 / 3)
    keep = np.ones(volume.shape, bool)
    for axis, length in enumerate(volume.shape):
        shape = [1] * volume.ndim
        shape[axis] = length
        keep &= (np.abs(np.fft.fftfreq(length)) <= 0.5 * band).reshape(shape)
    return np.clip(np.real(np.fft.ifftn(np.fft.fftn(volume) * keep)), 0, 1).astype(np.float32)


def metrics(reconstruction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """MONAI PSNR and SSIM, data range 1, as `bench/demo_quality.py` measures the VAE."""
    from monai.metrics import PSNRMetric, SSIMMetric

    a = torch.from_numpy(reconstruction)[None, None]
    b = torch.from_numpy(target)[None, None]
    return float(PSNRMetric(max_val=1.0)(a, b)), float(SSIMMetric(spatial_dims=3, data_range=1.0)(a, b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="model name or directory (default: demo)")
    parser.add_argument("--phantoms", type=int, default=3, help="held-out phantoms (default 3, as demo_quality)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from MAISIEngine.models import load_model

    helds = [held_out_phantom(index) for index in range(args.phantoms)]
    volumes = [unit_range(held.ct) for held in helds]
    autoencoder = load_model(args.model, device="cpu").autoencoder.float()
    vae = vae_figures(autoencoder, volumes, torch.device("cpu"))
    rows = {f"{args.model} VAE (posterior mean)": list(zip(vae["psnr_each"], vae["ssim_each"]))}
    for fraction in KEPT_FRACTIONS:
        rows[f"ideal linear codec, 1/{round(1 / fraction)}"] = [
            metrics(ideal_linear_codec(volume, fraction), volume) for volume in volumes]
    rows["noise-free phantom (noise floor)"] = [
        metrics(unit_range(held_out_phantom(index, noise_hu=0.0).ct), volume) for index, volume in enumerate(volumes)]
    print(f"{args.phantoms} held-out phantoms (seeds {HELD_OUT_SEED}+, regions {', '.join(REGIONS)}), "
          "128^3 at 3 mm; MONAI PSNR/SSIM, data range 1")
    for name, values in rows.items():
        psnr, ssim = np.mean(values, axis=0)
        each = ", ".join(f"{s:.4f}" for _, s in values)
        print(f"  {name:38s} PSNR {psnr:6.2f} dB  SSIM {ssim:.4f}  (each: {each})")
    ideal = np.mean(rows["ideal linear codec, 1/16"], axis=0)
    print(f"VAE / ideal linear codec at its compression: PSNR {vae['psnr_db'] - ideal[0]:+.2f} dB, "
          f"SSIM {vae['ssim'] - ideal[1]:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
