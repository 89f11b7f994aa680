"""Reconstruction quality of a model's VAE on the user's CTs, through the tensor-splitting (TSP) encoder and
decoder that generation and inpainting use, so the figures hold for volumes of any size.

Definitions (as the model card's `bench/demo_quality.py`): HU clipped to [-1000, 1000] and scaled to
[0, 1]; the volume padded at its far ends with 0 up to a multiple of 4; posterior mean z_mu encoded and
decoded; the reconstruction clamped to [0, 1] and cropped back; MONAI `PSNRMetric(max_val=1)` and 3D
`SSIMMetric(data_range=1)` against the unpadded input. The overall figure is the mean over images.

With RadImageNet feature weights, a 2.5D perceptual distance is added: MONAI's `PerceptualLoss`
definition for RadImageNet (channel-normalised feature maps, squared differences summed over channels,
averaged over space) on every axial, coronal and sagittal slice, averaged over the three planes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.evaluate.slicing import CHANNEL_MEANS, PLANES, plane_slices
from MAISIEngine.evaluate.sources import Case

Log = Callable[[str], None]
VAE_MULTIPLE = 4


def reconstruct(autoencoder: torch.nn.Module, unit: np.ndarray, device: torch.device) -> torch.Tensor:
    """Encode-decode a [0, 1] volume with the TSP path; returns (1, 1, X, Y, Z) in [0, 1] on the CPU."""
    from MAISIEngine import tsp
    from MAISIEngine.train.data import pad_to_multiple

    shape = unit.shape
    padded = np.ascontiguousarray(pad_to_multiple(unit.astype(np.float32), VAE_MULTIPLE, 0.0))
    x = torch.from_numpy(padded)[None, None].to(device)
    z_mu = tsp.encode(autoencoder, x, dtype=torch.float32)
    output = tsp.decode(autoencoder, z_mu, dtype=torch.float32)
    return output.float().clamp(0, 1)[..., : shape[0], : shape[1], : shape[2]].cpu()


def _perceptual_input(slices: torch.Tensor) -> torch.Tensor:
    means = torch.tensor(CHANNEL_MEANS, dtype=slices.dtype).view(1, 3, 1, 1)
    return slices.unsqueeze(1).expand(-1, 3, -1, -1) - means


@torch.no_grad()
def perceptual_distance(network: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, batch: int = 32,
                        device: torch.device | str = "cpu") -> float:
    """2.5D RadImageNet perceptual distance between two [0, 1] volumes (1, 1, X, Y, Z)."""
    per_plane = []
    for plane in PLANES:
        sa, sb = plane_slices(a[0], plane), plane_slices(b[0], plane)
        values = []
        for i in range(0, sa.shape[0], batch):
            fa = network(_perceptual_input(sa[i: i + batch]).to(device))
            fb = network(_perceptual_input(sb[i: i + batch]).to(device))
            fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
            fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
            values.append((fa - fb).square().sum(1).mean(dim=(1, 2)).cpu())
        per_plane.append(float(torch.cat(values).mean()))
    return float(np.mean(per_plane))


def evaluate_vae(cases: list[Case], model: str, device: str = "cpu", perceptual: torch.nn.Module | None = None,
                 log: Log = print) -> dict[str, Any]:
    """PSNR / SSIM (and perceptual distance) per image and their means."""
    from monai.metrics import PSNRMetric, SSIMMetric

    from MAISIEngine.io.nifti import read_volume
    from MAISIEngine.networks import load_network
    from MAISIEngine.presets import load_preset
    from MAISIEngine.train.data import hu_to_unit
    from MAISIEngine.weights.resolve import resolve_weight_path

    preset = load_preset(model)
    torch_device = torch.device(device)
    autoencoder, _ = load_network("autoencoder", preset, resolve_weight_path(preset, "autoencoder"), torch_device)
    autoencoder = autoencoder.float().eval()
    psnr_metric, ssim_metric = PSNRMetric(max_val=1.0), SSIMMetric(spatial_dims=3, data_range=1.0)
    rows = []
    for number, case in enumerate(cases, start=1):
        started = time.perf_counter()
        volume = read_volume(case.image, "image")
        if min(volume.shape) < 11:
            raise MaisiError(f"{case.image.name} is {volume.shape}, too small for 3D SSIM (its window is 11 voxels a side)",
                             "give whole CT volumes")
        unit = hu_to_unit(np.asarray(volume.array, dtype=np.float32))
        recon = reconstruct(autoencoder, unit, torch_device)
        target = torch.from_numpy(unit)[None, None]
        row = {"image": str(case.image), "shape": list(volume.shape),
               "psnr_db": float(psnr_metric(recon, target).mean()), "ssim": float(ssim_metric(recon, target).mean())}
        if perceptual is not None:
            row["perceptual"] = perceptual_distance(perceptual, recon, target, device=torch_device)
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        log(f"{number}/{len(cases)} {case.image.name}: PSNR {row['psnr_db']:.2f} dB, SSIM {row['ssim']:.4f}"
            + (f", perceptual {row['perceptual']:.4f}" if "perceptual" in row else "") + f" ({row['seconds']} s)")
    overall = {"psnr_db": float(np.mean([r["psnr_db"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows]))}
    if perceptual is not None:
        overall["perceptual"] = float(np.mean([r["perceptual"] for r in rows]))
    return {"measure": "VAE reconstruction (posterior mean, TSP encode/decode; MONAI PSNR/SSIM, data range 1)",
            "model": model, "device": device, "images": rows, "overall": overall,
            "perceptual": "RadImageNet ResNet-50, MONAI PerceptualLoss definition, 2.5D" if perceptual is not None
            else "not computed (pass --features to add it)"}


def vae_table(report: dict[str, Any]) -> str:
    has_perceptual = "perceptual" in report["overall"]
    head = f"{'image':<40}{'PSNR dB':>10}{'SSIM':>10}" + (f"{'perceptual':>12}" if has_perceptual else "")
    lines = [f"VAE of {report['model']}: encode-decode through the TSP path", head]

    def row(name: str, values: dict) -> str:
        text = f"{name[-40:]:<40}{values['psnr_db']:>10.2f}{values['ssim']:>10.4f}"
        return text + (f"{values['perceptual']:>12.4f}" if has_perceptual else "")

    lines += [row(r["image"].rsplit("/", 1)[-1], r) for r in report["images"][:20]]
    if len(report["images"]) > 20:
        lines.append(f"... {len(report['images']) - 20} more in the JSON report")
    lines.append(row(f"mean of {len(report['images'])}", report["overall"]))
    return "\n".join(lines)
