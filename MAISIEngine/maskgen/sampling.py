"""From noise to class map: DDPM sampling in the mask latent space, memory-bounded decode, argmax, remap.

Sampling follows MONAI's DDPM: start from unit Gaussian latents, and at each of the scheduler's steps
predict the noise with the U-Net (cross-attention context: the 10 anatomy sizes) and step back; with fewer
steps than trained, over the respaced chain (`respaced_chain`). The latents are divided by the latent
scale factor and decoded by the mask VAE through the tensor-splitting executor, so the 125-class logits
of a 256^3 map never need the whole decoder in memory at once; the class of each voxel is the argmax of
its logits (softmax does not change it), then its MAISI id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

Progress = Callable[[str, int, int], None]

LOGITS_FLOAT16_ABOVE = 1 << 31
"""Bytes of float32 logits above which they are kept in float16 (the official 125 x 256^3 map: 8 GB)."""


def respaced_chain(scheduler, num_steps: int) -> tuple[Any, list[int]]:
    """A DDPM chain over `num_steps` of the trained timesteps, and those timesteps (ascending).

    MONAI's `DDPMScheduler.step` goes from t to t - 1: it assumes every trained timestep is visited. In a
    loop over every 10th timestep each step removes one timestep's worth of noise while the U-Net is next
    told the sample is ten timesteps cleaner, so a learned network keeps seeing samples noisier than it is
    told (the demo model's draws decoded to noise-like specks). Respacing (Nichol & Dhariwal 2021) keeps
    the trained cumulative alphas at the visited timesteps and gives each step the beta that joins them,
    beta_i = 1 - abar(t_i) / abar(t_(i-1)); with every timestep visited it is the original chain.
    """
    from monai.networks.schedulers import DDPMScheduler

    scheduler.set_timesteps(num_inference_steps=int(num_steps))
    visited = sorted({int(t) for t in scheduler.timesteps})
    if len(visited) == scheduler.num_train_timesteps:
        return scheduler, visited  # the trained chain itself, as NVIDIA's reference samples it
    abar = scheduler.alphas_cumprod[torch.tensor(visited)].double()
    previous = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    betas = (1.0 - abar / previous).float()
    chain = DDPMScheduler(num_train_timesteps=len(visited), clip_sample=scheduler.clip_sample,
                          prediction_type=scheduler.prediction_type, variance_type=scheduler.variance_type)
    chain.betas = betas
    chain.alphas = 1.0 - betas
    chain.alphas_cumprod = torch.cumprod(chain.alphas, dim=0)
    chain.set_timesteps(len(visited))
    return chain, visited


def sample_latents(unet: torch.nn.Module, scheduler, condition: Sequence[float], latent_shape: Sequence[int],
                   num_steps: int, seed: int, device: torch.device | str = "cpu",
                   progress: Progress | None = None) -> torch.Tensor:
    """DDPM sampling of one latent of `latent_shape` (channels, x, y, z), conditioned on the size vector."""
    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    latents = torch.randn((1, *[int(s) for s in latent_shape]), generator=generator).to(device)
    context = torch.tensor([list(condition)], dtype=torch.float32, device=device).unsqueeze(1)  # (1, 1, 10)
    chain, visited = respaced_chain(scheduler, num_steps)
    with torch.inference_mode():
        for done, index in enumerate(reversed(range(len(visited))), start=1):
            timestep = torch.tensor([visited[index]], device=device)
            noise = unet(latents, timesteps=timestep, context=context)
            latents, _ = chain.step(noise, index, latents, generator)
            latents = latents.to(device)
            if progress is not None:
                progress("sampling", done, len(visited))
    return latents


def decode_classes(autoencoder: torch.nn.Module, latents: torch.Tensor, scale_factor: float, num_classes: int,
                   progress: Progress | None = None) -> np.ndarray:
    """Class index per voxel: tensor-split decode of latents / scale_factor, then argmax over the logits."""
    from MAISIEngine.tsp.api import decode

    factor = 2 ** sum(type(b).__name__ == "MaisiUpsample" for b in autoencoder.decoder.blocks)
    voxels = int(np.prod([s * factor for s in latents.shape[2:]]))
    out_dtype = torch.float16 if num_classes * voxels * 4 > LOGITS_FLOAT16_ABOVE else torch.float32
    z = (latents.float() / float(scale_factor)).to(out_dtype).cpu()

    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress("decoding", done, total)

    logits = decode(autoencoder, z, dtype=torch.float32, progress=tick)
    return torch.argmax(logits[0], dim=0).to(torch.int16).numpy()


def classes_to_maisi(class_map: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Class index -> MAISI id through the model's table (official: 124 classes + body -> the 132-id space)."""
    table = np.asarray(classes, dtype=np.int16)
    index = np.asarray(class_map)
    if index.size and (int(index.min()) < 0 or int(index.max()) >= len(table)):
        raise ValueError(f"class index outside 0..{len(table) - 1}")
    return table[index]
