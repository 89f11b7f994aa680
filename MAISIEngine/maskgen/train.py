"""What training a mask-generation model on procedural phantoms needs: the data, the two objectives, the export.

`maisi train mask-vae|mask-diffusion` (`train_runner`) runs the stages; this module holds their parts.

Data: phantom label maps (`MAISIEngine.phantom`) on the model's native grid; each map's classes are
indices into the preset's class table, fed to the VAE as 8 bit-planes (as MAISI's mask VAE reads them)
and reconstructed as per-class logits (cross-entropy and soft Dice, plus a KL term). Each map's condition is its
10 anatomy sizes: for each of the five organs the rank of its volume among the training maps, as a
percentile in [0, 1], and -1 for the tumors (the phantoms used here carry none); that table is the size
database shipped with the model. The U-Net learns DDPM noise (or, when its preset says so, velocity)
prediction on posterior-mean latents scaled by 1/std (the `scale_factor`), with the sizes as cross-attention
context.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from MAISIEngine.maskgen import anatomy
from MAISIEngine.maskgen.model import MaskPreset
from MAISIEngine.labels import BODY
from MAISIEngine.masks import label_bitplanes


@dataclass
class MaskDataset:
    classes: np.ndarray  # (N, X, Y, Z) class indices (int64)
    conditions: np.ndarray  # (N, 10) anatomy sizes
    seeds: list[int]


def phantom_maps(preset: MaskPreset, seeds: Sequence[int], region: str = "chest-abdomen") -> list[np.ndarray]:
    """Phantom label maps (MAISI ids) on the preset's native grid."""
    from MAISIEngine.phantom import make_phantom

    return [make_phantom(preset.image_shape, preset.spacing, region, int(s), supersample=1, noise_hu=0.0).labels
            for s in seeds]


def size_percentiles(maps: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 10) conditions: per organ, the rank of its voxel count among the maps / (N - 1); tumors -1."""
    n = len(maps)
    out = np.full((n, len(anatomy.CONTROLLABLE)), anatomy.ABSENT_TUMOR, dtype=np.float64)
    for j, name in enumerate(anatomy.ORGANS):
        counts = np.array([np.isin(m, anatomy.STRUCTURE_LABELS[name]).sum() for m in maps], dtype=np.float64)
        ranks = counts.argsort(kind="stable").argsort(kind="stable")
        out[:, j] = ranks / max(n - 1, 1)
    return out


def to_class_indices(maps: Sequence[np.ndarray], classes: Sequence[int]) -> np.ndarray:
    """MAISI ids -> class indices; ids outside the table become body (200) when the table has it."""
    body = list(classes).index(BODY) if BODY in classes else None
    lookup = np.full(256, -1, dtype=np.int64)
    for index, label in enumerate(classes):
        lookup[int(label)] = index
    stack = lookup[np.stack([np.asarray(m, dtype=np.int64) for m in maps])]
    if (stack < 0).any():
        if body is None:
            raise ValueError("the maps hold labels outside the preset's class table, which has no body class")
        stack[stack < 0] = body
    return stack


def build_dataset(preset: MaskPreset, seeds: Sequence[int], region: str = "chest-abdomen") -> MaskDataset:
    maps = phantom_maps(preset, seeds, region)
    return MaskDataset(to_class_indices(maps, preset.classes), size_percentiles(maps), list(map(int, seeds)))


MASK_KL_WEIGHT = 1e-4
"""Weight of the KL term against the per-voxel reconstruction terms. Strong enough that the posterior keeps
a spread (sigma about 1 in latent units) and the decoder learns to read latents that are near, not at, an
encoded map: a diffusion model's draws are such latents. With 1e-6 the latents drifted to a mean of -3 and
a spread of 9, and the U-Net's draws decoded to scattered islands."""


def vae_objective(recon: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor,
                  kl_weight: float = MASK_KL_WEIGHT) -> torch.Tensor:
    """Cross-entropy + soft Dice over the classes present in the batch + KL.

    Cross-entropy alone is ruled by the large classes (body, lungs, liver); the Dice term gives a
    pancreas or a kidney the same say as the liver, so the latent keeps the small organs too.
    """
    ce = F.cross_entropy(recon, target)
    probs = torch.softmax(recon, dim=1)
    onehot = F.one_hot(target, recon.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, recon.ndim))
    present = onehot.sum(dim=dims) > 0
    inter = (probs * onehot).sum(dim=dims)
    denom = probs.sum(dim=dims) + onehot.sum(dim=dims)
    dice = 1.0 - ((2 * inter + 1e-5) / (denom + 1e-5))[present].mean()
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-8) - 1).mean()
    return ce + dice + kl_weight * kl


def diffusion_objective(scheduler, prediction: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor,
                        noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """MSE to what the scheduler's prediction type asks for: the noise (MAISI's), or the velocity."""
    pred = prediction(scheduler.add_noise(x0, noise, t))
    target = scheduler.get_velocity(x0, noise, t) if scheduler.prediction_type == "v_prediction" else noise
    return F.mse_loss(pred, target)


def _cosine_lr(step: int, total: int, peak: float, warmup: int = 20) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, data: MaskDataset) -> torch.Tensor:
    """Posterior means of every map (N, 4, x, y, z)."""
    out = []
    for i in range(len(data.classes)):
        target = torch.from_numpy(data.classes[i : i + 1]).unsqueeze(1)
        z_mu, _ = vae.encode(label_bitplanes(target))
        out.append(z_mu)
    return torch.cat(out)


def export_package(out_dir: str | Path, vae: torch.nn.Module, unet: torch.nn.Module, scale: float,
                   conditions: np.ndarray) -> dict[str, Path]:
    """fp16 safetensors (the U-Net's carrying the scale factor) and the size database, as the demo ships them."""
    from MAISIEngine.networks import save_safetensors

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"mask_autoencoder": out / "mask_autoencoder.safetensors",
             "mask_diffusion_unet": out / "mask_diffusion_unet.safetensors",
             "size_database": out / "mask_anatomy_sizes.json"}
    save_safetensors(paths["mask_autoencoder"], vae, dtype=torch.float16)
    save_safetensors(paths["mask_diffusion_unet"], unet, {"scale_factor": repr(float(scale))}, dtype=torch.float16)
    rows = [{"organ_size": [round(float(v), 4) for v in row]} for row in conditions]
    paths["size_database"].write_text(json.dumps(rows) + "\n")
    return paths


def package_model_folder(folder: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """A trained model folder (`maisi train mask-vae|mask-diffusion --out FOLDER`) as the demo ships it."""
    from MAISIEngine.maskgen.model import load_mask_networks, load_mask_preset, weight_path

    preset = load_mask_preset(folder)
    vae, unet, scale = load_mask_networks(preset, weight_path(preset, "mask_autoencoder"),
                                          weight_path(preset, "mask_diffusion_unet"))
    rows = json.loads(weight_path(preset, "size_database").read_text())
    conditions = np.array([row["organ_size"] for row in rows], dtype=np.float64)
    return export_package(out_dir, vae, unet, scale, conditions)
