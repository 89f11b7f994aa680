"""Latents encoded once and cached (paper: the diffusion model trains on pre-computed VAE latents).

Each training volume is encoded whole with the VAE's posterior mean. The cache is written to the
output folder (keyed by a fingerprint of the VAE weights and the data), so resumed runs and the
ControlNet stage reuse it. The latent scale factor is 1 / std of all cached latents.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import atomic_path
from MAISIEngine.train.data import VolumeSource, pad_to_multiple
from MAISIEngine.train.distributed import DistContext, barrier
from MAISIEngine.train.precision import autocast

CACHE_FORMAT = "maisi-latent-cache/1"


@dataclass
class LatentCache:
    """Unscaled posterior-mean latents (C, x, y, z), one per volume, with the volume's spacing."""

    latents: list[np.ndarray]
    spacings: list[tuple[float, float, float]]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.latents)

    def scale_factor(self) -> float:
        """1 / std over every cached latent value (MAISI's `scale_factor`)."""
        count = sum(a.size for a in self.latents)
        mean = sum(float(a.sum(dtype=np.float64)) for a in self.latents) / count
        var = sum(float(((a.astype(np.float64) - mean) ** 2).sum()) for a in self.latents) / max(count - 1, 1)
        std = float(np.sqrt(var))
        if not np.isfinite(std) or std <= 0:
            raise MaisiError("the VAE latents have no spread (std 0)", "train the VAE longer or check the data")
        return 1.0 / std


def fingerprint(autoencoder: torch.nn.Module, source: VolumeSource, names: list[str]) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(autoencoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(str(len(source)).encode())
    for name in names:
        digest.update(name.encode())
    return digest.hexdigest()[:32]


def encode_volume(autoencoder: torch.nn.Module, image: np.ndarray, multiple: int, device: torch.device,
                  amp: bool) -> np.ndarray:
    """Posterior mean of one whole volume (padded at its end to a multiple of the VAE's downsampling)."""
    padded = pad_to_multiple(image, multiple, fill=0.0)
    tensor = torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(device)
    with torch.no_grad(), autocast(device, amp):
        z_mu, _ = autoencoder.encode(tensor)
    return z_mu[0].float().cpu().numpy()


def build_latent_cache(autoencoder: torch.nn.Module, source: VolumeSource, multiple: int, out_dir: Path,
                       ctx: DistContext, amp: bool, log: object = None) -> LatentCache:
    """Load the cache for this VAE and data from `out_dir/cache`, or encode (on rank 0) and write it."""
    names = [source.name(i) for i in range(len(source))]
    key = fingerprint(autoencoder, source, names)
    path = Path(out_dir) / "cache" / f"latents_{key}.pt"
    if ctx.is_main and not path.is_file():
        autoencoder.eval()
        latents, spacings = [], []
        for index in range(len(source)):
            volume = source.get(index)
            if volume.image is None:
                raise MaisiError(f"case '{volume.name}' has no image to encode", "give images for every case")
            latents.append(encode_volume(autoencoder, volume.image, multiple, ctx.device, amp))
            spacings.append(volume.spacing)
            if callable(log):
                log(f"encoded {index + 1}/{len(source)} volumes")
        payload = {"format": CACHE_FORMAT, "fingerprint": key,
                   "latents": [torch.from_numpy(a) for a in latents],
                   "spacings": torch.tensor(spacings, dtype=torch.float64)}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        for stale in path.parent.glob("latents_*.pt"):
            if stale != path:
                stale.unlink(missing_ok=True)  # latents of an earlier VAE: never valid again
    barrier(ctx)
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    if payload.get("format") != CACHE_FORMAT or payload.get("fingerprint") != key:
        raise MaisiError(f"latent cache {path.name} is damaged", f"delete {path} and run again")
    return LatentCache([t.numpy() for t in payload["latents"]],
                       [tuple(float(v) for v in row) for row in payload["spacings"].tolist()], key)
