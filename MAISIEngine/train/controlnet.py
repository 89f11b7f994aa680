"""Stage 3: ControlNet with the diffusion U-Net frozen (paper Fig. 2c).

Two conditioning modes share one trainer:
- `generate`: the label map's 8 bit-planes at image resolution (MAISI's CT ControlNet);
- `inpaint`: the paper's inpainting ControlNet (section 3.3): the image with a region blanked out, that
  region, and the 8 bit-planes of the tumor label inside it (10 channels), so the network learns to
  paint a tumor of the given type where the mask says and healthy tissue around it.
The ControlNet starts from the U-Net's weights; MONAI's ControlNet zero-initialises the residual
paths, so training starts exactly at the frozen U-Net's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.inpaint_controlnet import build_inpaint_controlnet, inpaint_network_kwargs
from MAISIEngine.masks import label_bitplanes
from MAISIEngine.networks import Checkpoint, build_network, init_controlnet_from_unet
from MAISIEngine.presets import Preset
from MAISIEngine.sampling import make_scheduler
from MAISIEngine.train.checkpoints import INPAINT_KEY, write_inpaint_role, write_role
from MAISIEngine.train.config import CONTROLNET_TASKS, TrainConfig
from MAISIEngine.train.data import TensorStore, VolumeSource, crop, slot_seed
from MAISIEngine.train.diffusion import LatentDraw, LatentSampler, class_labels, unet_inputs
from MAISIEngine.train.distributed import DistContext, wrap_ddp
from MAISIEngine.train.latents import LatentCache
from MAISIEngine.train.losses import diffusion_target, optimizer_step, per_slot_noise, sample_timesteps, weighted_l1
from MAISIEngine.train.model_sources import ModelSources, initial_checkpoint, load_into
from MAISIEngine.train.precision import autocast

INPAINT_CONDITION = {
    "channels": ["masked_image", "region"] + [f"tumor_label_bit{b}" for b in range(8)],
    "image": "HU clipped to [-1000, 1000] scaled to [0, 1]; 0 inside the region",
    "region": "1 where the network paints (the tumor dilated by a margin), 0 elsewhere",
    "tumor_labels": "MAISI tumor id inside the tumor, 0 elsewhere, as 8 bit-planes",
}
TUMOR_IDS = frozenset(maisi_labels.TUMOR_TYPES.values())


def inpaint_condition(image: torch.Tensor, tumor_labels: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B, 10, X, Y, Z): image blanked inside `region`, the region, the tumor label's bit-planes.

    image: (B, 1, ...) in [0, 1]; tumor_labels: (B, 1, ...) integer tumor ids (0 elsewhere);
    region: (B, 1, ...) where the network may paint.
    """
    region = region.to(image.dtype)
    return torch.cat([image * (1.0 - region), region, label_bitplanes(tumor_labels).to(image.dtype)], dim=1)


def label_loss_weights(labels: torch.Tensor, weights: dict[frozenset[int], float],
                       factor: int) -> torch.Tensor | None:
    """Per latent voxel: 1 + the sum of (weight - 1) over the label groups it holds any voxel of.

    None when every weight is 1 (the plain L1). Small structures the loss hardly sees otherwise
    (tumors, bone) get weight where they are.
    """
    weight_map = None
    for ids, weight in weights.items():
        if weight == 1.0:
            continue
        inside = torch.isin(labels, torch.tensor(sorted(ids), device=labels.device))
        term = (weight - 1.0) * to_latent_grid(inside, factor)
        weight_map = term if weight_map is None else weight_map + term
    return None if weight_map is None else 1.0 + weight_map


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of (B, 1, ...) masks by a cube of half-width `radius` voxels."""
    if radius <= 0:
        return mask
    return F.max_pool3d(mask.float(), kernel_size=2 * radius + 1, stride=1, padding=radius)


def to_latent_grid(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A latent voxel counts as inside when any of its image voxels is."""
    return F.max_pool3d(mask.float(), kernel_size=factor, stride=factor)


class ControlledUNet(torch.nn.Module):
    """ControlNet residuals added into the frozen U-Net's skips: one forward for DDP."""

    def __init__(self, controlnet: torch.nn.Module, unet: torch.nn.Module) -> None:
        super().__init__()
        self.controlnet = controlnet
        self.unet = unet

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, controlnet_cond: torch.Tensor,
                class_labels: torch.Tensor | None = None, **unet_kwargs: torch.Tensor) -> torch.Tensor:
        extra = {"class_labels": class_labels} if class_labels is not None else {}
        down, mid = self.controlnet(x=x, timesteps=timesteps, controlnet_cond=controlnet_cond, **extra)
        return self.unet(x=x, timesteps=timesteps, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, **extra, **unet_kwargs)


def inpaint_checkpoint_of(model_preset: Preset) -> Checkpoint:
    """The inpainting ControlNet weights a model describes (package, cache or model directory)."""
    from MAISIEngine.networks import extract_checkpoint, read_checkpoint_file
    from MAISIEngine.weights.resolve import resolve_model_file

    section = model_preset.to_dict()[INPAINT_KEY]
    path = resolve_model_file(model_preset, str(section["weights"]), "inpainting ControlNet")
    return extract_checkpoint(read_checkpoint_file(path), "controlnet")


def carry_inpaint_controlnet(model_preset: Preset, out_dir: Path, base: Preset) -> Path | None:
    """Copy a model's inpainting ControlNet (weights and preset section) into a model directory."""
    section = model_preset.to_dict().get(INPAINT_KEY)
    if not section:
        return None
    network = build_inpaint_controlnet(base)
    load_into(network, inpaint_checkpoint_of(model_preset), "controlnet", f"model {model_preset.name}")
    return write_inpaint_role(out_dir, base, inpaint_network_kwargs(base), network, dict(section["condition"]))


def make_controlnet(task: str, sources: ModelSources, unet: torch.nn.Module,
                    device: torch.device) -> tuple[torch.nn.Module, str]:
    """The ControlNet to train: U-Net weights first, then --init weights when given."""
    preset = sources.preset
    if task == "inpaint":
        controlnet: torch.nn.Module = build_inpaint_controlnet(preset, device)
    else:
        controlnet = build_network("controlnet", preset, device)
    init_controlnet_from_unet(controlnet, unet)
    origin = "U-Net"
    if task == "inpaint":
        checkpoint = None
        if sources.init_file is not None:
            checkpoint, origin = initial_checkpoint("controlnet", sources)
        elif sources.init_model is not None and sources.init_model.to_dict().get(INPAINT_KEY):
            checkpoint = inpaint_checkpoint_of(sources.init_model)
            origin = f"--init model {sources.init_model.name}"
    else:
        checkpoint, found = initial_checkpoint("controlnet", sources)
        if checkpoint is not None:
            origin = found
    if checkpoint is not None:
        load_into(controlnet, checkpoint, "controlnet", origin)
    return controlnet.to(device), origin


class ControlNetStage:
    log_keys = ("loss",)
    exported = ("controlnet",)

    def __init__(self, config: TrainConfig, ctx: DistContext, preset: Preset, source: VolumeSource,
                 cache: LatentCache, unet: torch.nn.Module, controlnet: torch.nn.Module, scale_factor: float) -> None:
        if config.task not in CONTROLNET_TASKS:
            raise MaisiError(f"unknown ControlNet task '{config.task}'", f"use one of {', '.join(CONTROLNET_TASKS)}")
        if not source.has_labels:
            raise MaisiError("ControlNet training needs a label map for every image",
                             "put label maps in labels/ under the images' file names (or 'label' in the datalist)")
        self.key = "controlnet" if config.task == "generate" else "controlnet_inpaint"
        self.config, self.ctx, self.preset, self.source, self.cache = config, ctx, preset, source, cache
        self.scale_factor = float(scale_factor)
        self.factor = preset.latent_downsample
        self.scheduler = make_scheduler(preset)
        self.unet = unet.to(ctx.device).eval().requires_grad_(False)
        self.controlnet = controlnet.to(ctx.device).train()
        self.model = wrap_ddp(ControlledUNet(self.controlnet, self.unet), ctx)
        self.optimizer = torch.optim.AdamW(self.controlnet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sampler = LatentSampler(cache, config, self.factor, ctx.device, preset.size_divisor)
        self.store = TensorStore(source, ctx.device, config.data_on_device)
        self.needs_region = bool(preset.diffusion_unet.get("include_top_region_index_input"))
        self._tumor_points: dict[int, np.ndarray] = {}
        self.tumor_ids_seen: set[int] = set()
        if config.task == "inpaint":
            for index in range(len(source)):
                self.tumor_ids_seen |= set(source.get(index).tumor_ids())

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"controlnet": self.controlnet}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"controlnet": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        return {"scale_factor": self.scale_factor, "cache": self.cache.fingerprint}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        return None

    # -- data

    def _tumor_centre(self, index: int, rng: np.random.Generator) -> tuple[float, float, float] | None:
        """Inpainting crops sit on a tumor most of the time (latent voxel coordinates)."""
        if index not in self._tumor_points:
            labels = self.source.get(index).labels
            points = np.argwhere(np.isin(labels, list(TUMOR_IDS))) if labels is not None else np.zeros((0, 3))
            self._tumor_points[index] = points[:: max(1, len(points) // 256)]
        points = self._tumor_points[index]
        if len(points) == 0 or rng.random() >= 0.85:
            return None
        return tuple(float(v) / self.factor for v in points[int(rng.integers(len(points)))])  # type: ignore[return-value]

    def _image_crops(self, draws: list[LatentDraw], size: tuple[int, ...], attribute: str, fill: float) -> torch.Tensor:
        """(B, 1, ...) crops at image resolution matching the latent crops, on the training device."""
        crops = [crop(self.store.get(d.volume_index, attribute), [s * self.factor for s in d.start],
                      [s * self.factor for s in size], fill) for d in draws]
        return torch.stack(crops)[:, None].to(self.ctx.device)

    def _inpaint_inputs(self, step: int, slots: range, labels: torch.Tensor,
                        image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tumor = torch.isin(labels, torch.tensor(sorted(TUMOR_IDS), device=labels.device))
        regions = []
        for row, slot in enumerate(slots):
            rng = np.random.default_rng(slot_seed(self.config.seed, step, slot, stream=3))
            if tumor[row].any():
                regions.append(dilate(tumor[row : row + 1], int(rng.integers(1, 4))))
            else:
                regions.append(self._healthy_region(labels[row : row + 1], rng))
        region = torch.cat(regions).clamp(0, 1)
        tumor_labels = torch.where(tumor, labels, torch.zeros_like(labels))
        return inpaint_condition(image, tumor_labels, region), region

    def _healthy_region(self, labels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A ball inside the body where no tumor is: the network learns to fill healthy tissue too."""
        inside = torch.nonzero(labels[0, 0] > 0)
        shape = labels.shape[2:]
        if len(inside):
            centre = inside[int(rng.integers(len(inside)))].tolist()
        else:
            centre = [n // 2 for n in shape]
        radius = float(rng.uniform(2.0, 6.0))
        grids = torch.meshgrid(*[torch.arange(n, device=labels.device, dtype=torch.float32) for n in shape], indexing="ij")
        distance = sum((g - c) ** 2 for g, c in zip(grids, centre))
        return (distance <= radius**2).float()[None, None]

    # -- step

    def loss_weights(self, labels: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor | None:
        """Per latent voxel L1 weights: tumors (and bone and chosen organs for the CT ControlNet) up; for
        inpainting, the region to paint up as well, the terms adding where they overlap."""
        config = self.config
        groups = {TUMOR_IDS: config.tumor_loss_weight}
        if region is None:
            groups[maisi_labels.BONE_IDS] = config.bone_loss_weight
            for group, weight in config.organ_loss_weights:
                groups[maisi_labels.ORGAN_GROUPS[group]] = weight
        weights = label_loss_weights(labels, groups, self.factor)
        if region is not None and config.inpaint_region_weight != 1.0:
            region_term = (config.inpaint_region_weight - 1.0) * to_latent_grid(region, self.factor)
            weights = 1.0 + region_term if weights is None else weights + region_term
        return weights

    def batch_loss(self, step: int, slots: range) -> torch.Tensor:
        """L1 (optionally weighted) between prediction and target on the batch of `step`."""
        config, device = self.config, self.ctx.device
        size = self.sampler.size_for(step)
        centre = self._tumor_centre if config.task == "inpaint" else None
        draws = [self.sampler.draw(step, slot, size, centre_of=centre) for slot in slots]
        x0 = torch.stack([d.latent for d in draws]).to(device) * self.scale_factor
        labels = self._image_crops(draws, size, "labels", 0).long()
        if config.task == "inpaint":
            image = self._image_crops(draws, size, "image", 0.0).float()
            cond, region = self._inpaint_inputs(step, slots, labels, image)
        else:
            cond, region = label_bitplanes(labels), None
        weights = self.loss_weights(labels, region)
        noise = per_slot_noise(tuple(x0.shape), config.seed, step, slots, device)
        timesteps = sample_timesteps(self.scheduler, x0, config.seed, step, slots)
        noisy = self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=timesteps)
        modality = class_labels(self.preset, slots, config.seed, step, 0.0, device)
        inputs = unet_inputs(self.preset, [d.spacing for d in draws], None,
                             [c[0].cpu().numpy() for c in labels] if self.needs_region else None, device)
        with autocast(device, config.amp):
            prediction = self.model(noisy, timesteps, cond, modality, **inputs)
        return weighted_l1(prediction, diffusion_target(self.scheduler, x0, noise, timesteps), weights)

    def train_step(self, step: int, slots: range, progress: float) -> dict[str, torch.Tensor | float]:
        loss = self.batch_loss(step, slots)
        optimizer_step(loss, self.optimizer, list(self.controlnet.parameters()), self.config.grad_clip)
        return {"loss": loss.detach()}

    def evaluate(self, step: int, slots: range) -> float:
        with torch.no_grad():
            return float(self.batch_loss(step, slots).item())

    def export(self) -> dict[str, str]:
        if self.config.task == "inpaint":
            condition = dict(INPAINT_CONDITION, tumor_ids=sorted(self.tumor_ids_seen), region_margin_voxels=[1, 3])
            path = write_inpaint_role(self.config.out_dir, self.preset, inpaint_network_kwargs(self.preset),
                                      self.controlnet, condition)
            return {"controlnet_inpaint": str(path)}
        path = write_role(self.config.out_dir, self.preset, "controlnet", self.controlnet)
        return {"controlnet": str(path)}
