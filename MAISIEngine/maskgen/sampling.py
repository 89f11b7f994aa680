"""From noise to class map: DDPM sampling in the mask latent space, memory-bounded decode, argmax, remap.

Sampling follows MONAI's DDPM: start from unit Gaussian latents, and at each of the scheduler's steps
predict the noise with the U-Net (cross-attention context: the 10 anatomy sizes) and step back. The
latents are divided by the latent scale factor and decoded by the mask VAE through the tensor-splitting
executor, so the 125-class logits of a 256^3 map never need the whole decoder in memory at once; the
class of each voxel is the argmax of its logits (softmax does not change it), then its MAISI id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Progress = Callable[[str, int, int], None]

LOGITS_FLOAT16_ABOVE = 1 << 31
"""Bytes of float32 logits above which they are kept in float16 (the official 125 x 256^3 map: 8 GB)."""


def sample_latents(unet: torch.nn.Module, scheduler, condition: Sequence[float], latent_shape: Sequence[int],
                   num_steps: int, seed: int, device: torch.device | str = "cpu",
                   progress: Progress | None = None) -> torch.Tensor:
    """DDPM sampling of one latent of `latent_shape` (channels, x, y, z), conditioned on the size vector."""
    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    latents = torch.randn((1, *[int(s) for s in latent_shape]), generator=generator).to(device)
    context = torch.tensor([list(condition)], dtype=torch.float32, device=device).unsqueeze(1)  # (1, 1, 10)
    scheduler.set_timesteps(num_inference_steps=int(num_steps))
    steps = list(scheduler.timesteps)
    with torch.inference_mode():
        for i, t in enumerate(steps):
            timestep = torch.tensor([int(t)], device=device)
            noise = unet(latents, timesteps=timestep, context=context)
            latents, _ = scheduler.step(noise, int(t), latents, generator)
            latents = latents.to(device)
            if progress is not None:
                progress("sampling", i + 1, len(steps))
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
