"""Stage 2: the latent diffusion U-Net (paper Fig. 2b) on cached latents, rflow (velocity) or DDPM
(epsilon) with an L1 loss, conditioned on spacing (x100) and modality class (rflow) or body region (DDPM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from MAISIEngine import conditioning
from MAISIEngine.errors import MaisiError
from MAISIEngine.presets import Preset
from MAISIEngine.sampling import make_scheduler
from MAISIEngine.train.checkpoints import write_role
from MAISIEngine.train.config import TrainConfig
from MAISIEngine.train.data import BATCH_SHAPE_SLOT, TensorStore, VolumeSource, crop, crop_start, slot_rng
from MAISIEngine.train.distributed import DistContext, wrap_ddp
from MAISIEngine.train.latents import LatentCache
from MAISIEngine.train.losses import diffusion_target, optimizer_step, per_slot_noise, sample_timesteps, weighted_l1
from MAISIEngine.train.precision import autocast

CentreChooser = Callable[[int, np.random.Generator], "tuple[float, float, float] | None"]
"""Optional crop centre (latent voxels) for a volume, e.g. on a tumor; None for a random crop."""

@dataclass
class LatentDraw:
    latent: torch.Tensor
    spacing: tuple[float, float, float]
    start: tuple[int, ...]
    volume_index: int


class LatentSampler:
    """Latent crops for a step: one size per step (a batch shares a shape), position per sample."""

    def __init__(self, cache: LatentCache, config: TrainConfig, downsample: int, device: torch.device,
                 size_divisor: int = 1) -> None:
        latent_divisor = max(1, size_divisor // downsample)
        wanted = list(config.latent_sizes) or [tuple(max(1, s // downsample) for s in config.size)]
        bad = [tuple(int(v) * downsample for v in size) for size in wanted if any(int(v) % latent_divisor for v in size)]
        if bad:
            raise MaisiError(f"crop size {bad[0]} (image voxels) does not fit the U-Net: each axis must be a multiple "
                             f"of {size_divisor}", f"use e.g. --size {4 * size_divisor} {4 * size_divisor} {4 * size_divisor}")
        self.cache = cache
        where = device if config.data_on_device else torch.device("cpu")
        self.latents = [torch.from_numpy(a).to(where) for a in cache.latents]
        self.config = config
        self.downsample = downsample
        smallest = tuple(min(a.shape[1 + axis] for a in cache.latents) for axis in range(3))
        # A crop never exceeds the smallest cached latent, so every sample of a batch has the same shape.
        self.sizes = [tuple(min(int(w), m) for w, m in zip(size, smallest)) for size in wanted]

    def size_for(self, step: int) -> tuple[int, int, int]:
        rng = slot_rng(self.config.seed, step, BATCH_SHAPE_SLOT)
        return self.sizes[int(rng.integers(len(self.sizes)))]  # type: ignore[return-value]

    def draw(self, step: int, slot: int, size: tuple[int, int, int],
             centre_of: CentreChooser | None = None) -> LatentDraw:
        rng = slot_rng(self.config.seed, step, slot)
        index = int(rng.integers(len(self.cache)))
        latent = self.latents[index]
        centre = centre_of(index, rng) if centre_of is not None else None
        start = crop_start(tuple(latent.shape[1:]), size, rng, centre=centre)
        return LatentDraw(crop(latent, start, size, fill=0.0), self.cache.spacings[index], start, index)


def class_labels(preset: Preset, slots: range, seed: int, step: int, dropout: float,
                 device: torch.device) -> torch.Tensor | None:
    """The modality class per sample (CT = 1), set to 0 ("unconditional") with probability `dropout`."""
    labels = conditioning.modality_tensor(preset, len(slots), device)
    if labels is None or dropout <= 0:
        return labels
    keep = [float(slot_rng(seed, step, slot).random() >= dropout) for slot in slots]
    return labels * torch.tensor(keep, device=device).long()


def region_conditions(label_crops: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Top/bottom body-region one-hots (x100) from the labels present in each crop (DDPM models)."""
    tops, bottoms = [], []
    for labels in label_crops:
        regions = conditioning.regions_from_labels(int(v) for v in np.unique(labels))
        top, bottom = conditioning.region_tensors(regions, 1, device)
        tops.append(top)
        bottoms.append(bottom)
    return torch.cat(tops), torch.cat(bottoms)


def unet_inputs(preset: Preset, spacings: list[tuple[float, float, float]], labels: torch.Tensor | None,
                label_crops: list[np.ndarray] | None, device: torch.device) -> dict[str, torch.Tensor]:
    """Spacing (mm x 100), modality and/or region tensors, as the preset's U-Net expects them."""
    kwargs: dict[str, torch.Tensor] = {}
    if preset.diffusion_unet.get("include_spacing_input"):
        kwargs["spacing_tensor"] = torch.tensor(spacings, dtype=torch.float32, device=device) * conditioning.CONDITION_SCALE
    if labels is not None:
        kwargs["class_labels"] = labels
    if preset.diffusion_unet.get("include_top_region_index_input"):
        if label_crops is None:
            raise MaisiError(f"the {preset.name} U-Net is conditioned on body region, which needs label maps",
                             "give label maps with the images (labels/ folder or 'label' in the datalist)")
        kwargs["top_region_index_tensor"], kwargs["bottom_region_index_tensor"] = region_conditions(label_crops, device)
    return kwargs


class DiffusionStage:
    key = "diffusion"
    log_keys = ("loss",)
    exported = ("diffusion_unet",)

    def __init__(self, config: TrainConfig, ctx: DistContext, preset: Preset, source: VolumeSource,
                 cache: LatentCache, unet: torch.nn.Module, scale_factor: float | None) -> None:
        self.config, self.ctx, self.preset, self.source, self.cache = config, ctx, preset, source, cache
        self.scale_factor = float(scale_factor) if scale_factor is not None else cache.scale_factor()
        self.scheduler = make_scheduler(preset)
        self.unet = unet.to(ctx.device).train()
        self.unet_ddp = wrap_ddp(self.unet, ctx)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sampler = LatentSampler(cache, config, preset.latent_downsample, ctx.device, preset.size_divisor)
        self.store = TensorStore(source, ctx.device, config.data_on_device)
        self.needs_labels = bool(preset.diffusion_unet.get("include_top_region_index_input"))
        if self.needs_labels and not source.has_labels:
            raise MaisiError(f"the {preset.name} U-Net is conditioned on body region, which needs label maps",
                             "give label maps with the images (labels/ folder or 'label' in the datalist)")

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"diffusion_unet": self.unet}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"diffusion_unet": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        return {"scale_factor": self.scale_factor, "cache": self.cache.fingerprint}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        if "scale_factor" in extra:
            self.scale_factor = float(extra["scale_factor"])

    def _label_crops(self, draws: list[LatentDraw], size: tuple[int, int, int]) -> list[np.ndarray] | None:
        if not self.needs_labels:
            return None
        factor = self.preset.latent_downsample
        return [crop(self.store.get(d.volume_index, "labels"), [s * factor for s in d.start],
                     [s * factor for s in size], fill=0).cpu().numpy() for d in draws]

    def batch_loss(self, step: int, slots: range) -> torch.Tensor:
        """L1 between prediction and target on the batch of `step` (deterministic in seed and step)."""
        config, device = self.config, self.ctx.device
        size = self.sampler.size_for(step)
        draws = [self.sampler.draw(step, slot, size) for slot in slots]
        x0 = torch.stack([d.latent for d in draws]).to(device) * self.scale_factor
        noise = per_slot_noise(tuple(x0.shape), config.seed, step, slots, device)
        timesteps = sample_timesteps(self.scheduler, x0, config.seed, step, slots)
        noisy = self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=timesteps)
        inputs = unet_inputs(self.preset, [d.spacing for d in draws],
                             class_labels(self.preset, slots, config.seed, step, config.class_dropout, device),
                             self._label_crops(draws, size), device)
        with autocast(device, config.amp):
            prediction = self.unet_ddp(x=noisy, timesteps=timesteps, **inputs)
        return weighted_l1(prediction, diffusion_target(self.scheduler, x0, noise, timesteps))

    def train_step(self, step: int, slots: range, progress: float) -> dict[str, torch.Tensor | float]:
        loss = self.batch_loss(step, slots)
        optimizer_step(loss, self.optimizer, list(self.unet.parameters()), self.config.grad_clip)
        return {"loss": loss.detach()}

    def evaluate(self, step: int, slots: range) -> float:
        """The loss on the batch of `step` without training (to check learning on a fixed batch)."""
        with torch.no_grad():
            return float(self.batch_loss(step, slots).item())

    def export(self) -> dict[str, str]:
        path = write_role(self.config.out_dir, self.preset, "diffusion_unet", self.unet, self.scale_factor)
        return {"diffusion_unet": str(path)}
