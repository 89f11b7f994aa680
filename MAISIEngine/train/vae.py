"""Stage 1: the VAE-GAN (paper Fig. 2a): L1 reconstruction + KL toward N(0, 1) + patch adversarial loss,
plus the perceptual loss when a backbone is available on disk.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator

from MAISIEngine.errors import MaisiError
from MAISIEngine.presets import Preset
from MAISIEngine.train.checkpoints import write_role
from MAISIEngine.train.config import TrainConfig
from MAISIEngine.train.data import BATCH_SHAPE_SLOT, TensorStore, VolumeSource, image_batch, slot_rng
from MAISIEngine.train.distributed import DistContext, wrap_ddp
from MAISIEngine.train.losses import (
    clip_where_target_at_bounds,
    kl_divergence,
    make_perceptual_loss,
    optimizer_step,
    per_slot_noise,
    psnr_unit,
    window_l1,
)
from MAISIEngine.train.precision import autocast


MIN_ADVERSARIAL_CROP = 32
"""The patch discriminator halves each axis four times; smaller crops leave it a single voxel."""


def disable_cache_flushing(model: torch.nn.Module) -> torch.nn.Module:
    """MONAI's MAISI VAE empties the CUDA cache after every block (`save_mem`): right for huge
    inference volumes, ruinous for training speed. Turning it off leaves the weights untouched."""
    for module in model.modules():
        if hasattr(module, "save_mem"):
            module.save_mem = False
    return model


def make_discriminator(channels: int = 32) -> PatchDiscriminator:
    """MAISI's patch discriminator (3 layers, 32 channels); instance norm keeps samples independent."""
    return PatchDiscriminator(spatial_dims=3, num_layers_d=3, channels=channels, in_channels=1, out_channels=1,
                              norm="INSTANCE")


ENCODER_PARTS = ("encoder", "quant_conv_mu", "quant_conv_log_sigma")
"""Submodules of MONAI's AutoencoderKL that map an image to its posterior: the latent space."""


def freeze_encoder(autoencoder: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Stop gradients into the encoder side and return the decoder's parameters (the ones left to train)."""
    for name in ENCODER_PARTS:
        getattr(autoencoder, name).requires_grad_(False)
    return [p for p in autoencoder.parameters() if p.requires_grad]


class VAEPass(torch.nn.Module):
    """Encode, draw z = mu + sigma * eps with the given eps, decode: one module so DDP sees one forward."""

    def __init__(self, autoencoder: torch.nn.Module, encoder_frozen: bool = False) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.encoder_frozen = encoder_frozen

    def forward(self, images: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            z_mu, z_sigma = self.autoencoder.encode(images)
        reconstruction = self.autoencoder.decode(z_mu + eps * z_sigma)
        return reconstruction, z_mu, z_sigma


class VAEStage:
    key = "vae"
    log_keys = ("loss", "l1", "kl", "perceptual", "adv_g", "d_loss", "psnr", "window_l1", "mse")
    exported = ("autoencoder",)

    def __init__(self, config: TrainConfig, ctx: DistContext, preset: Preset, source: VolumeSource,
                 autoencoder: torch.nn.Module) -> None:
        if not source.has_images:
            raise MaisiError("VAE training needs CT images", "give --data/--datalist with images, or --phantoms N")
        divisor = preset.latent_downsample
        self.sizes = [tuple(size) for size in (config.crop_sizes or (config.size,))]
        for size in self.sizes:
            if any(s % divisor for s in size):
                raise MaisiError(f"--size {size} is not a multiple of {divisor} on every axis",
                                 f"use multiples of {divisor}, e.g. 64 64 64")
            if config.adv_weight > 0 and min(size) < MIN_ADVERSARIAL_CROP:
                raise MaisiError(f"the adversarial loss needs crops of at least {MIN_ADVERSARIAL_CROP} voxels per axis "
                                 f"(--size {size})",
                                 f"use --size {MIN_ADVERSARIAL_CROP} {MIN_ADVERSARIAL_CROP} {MIN_ADVERSARIAL_CROP} or larger, "
                                 "or --adv-weight 0")
        self.config, self.ctx, self.preset, self.source = config, ctx, preset, source
        self.store = TensorStore(source, ctx.device, config.data_on_device)
        self.latent_channels = int(preset.autoencoder["latent_channels"])
        self.divisor = divisor
        self.autoencoder = disable_cache_flushing(autoencoder).to(ctx.device).train()
        self.discriminator = make_discriminator(config.disc_channels).to(ctx.device).train()
        self.generator_parameters = freeze_encoder(self.autoencoder) if config.freeze_encoder \
            else list(self.autoencoder.parameters())
        self.vae_pass = wrap_ddp(VAEPass(self.autoencoder, config.freeze_encoder), ctx)
        self.discriminator_ddp = wrap_ddp(self.discriminator, ctx)
        self.opt_g = torch.optim.AdamW(self.generator_parameters, lr=config.lr, weight_decay=config.weight_decay)
        self.opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.adversarial = PatchAdversarialLoss(criterion="least_squares")
        self.perceptual = make_perceptual_loss(config.perceptual_weights_path, ctx.device) \
            if config.perceptual_weight > 0 else None

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"autoencoder": self.autoencoder, "discriminator": self.discriminator}

    def size_for(self, step: int) -> tuple[int, ...]:
        """The crop size of a step (one per step, so a batch shares a shape; the same in every process)."""
        if len(self.sizes) == 1:
            return self.sizes[0]
        return self.sizes[int(slot_rng(self.config.seed, step, BATCH_SHAPE_SLOT).integers(len(self.sizes)))]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"autoencoder": self.opt_g, "discriminator": self.opt_d}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        return None

    def train_step(self, step: int, slots: range, progress: float) -> dict[str, torch.Tensor | float]:
        config, device = self.config, self.ctx.device
        size = self.size_for(step)
        images = image_batch(self.store, config.seed, step, slots, size, config.augment_flips).to(device)
        latent_shape = (len(slots), self.latent_channels) + tuple(s // self.divisor for s in size)
        eps = torch.zeros(latent_shape, device=device) if config.decode_posterior_mean \
            else per_slot_noise(latent_shape, config.seed, step, slots, device)
        adversarial_on = config.adv_weight > 0 and progress >= config.adv_start
        with autocast(device, config.amp):
            reconstruction, z_mu, z_sigma = self.vae_pass(images, eps)
        reconstruction = reconstruction.float()
        if config.clip_aware_loss:
            reconstruction = clip_where_target_at_bounds(reconstruction, images)
        l1 = (reconstruction - images).abs().mean()
        kl = kl_divergence(z_mu, z_sigma)
        loss = l1 + config.kl_weight * kl
        zero = torch.zeros((), device=device)
        values: dict[str, torch.Tensor | float] = {"l1": l1.detach(), "kl": kl.detach(), "perceptual": zero,
                                                   "adv_g": zero, "d_loss": zero, "window_l1": zero, "mse": zero}
        if config.window_weight > 0:
            windowed = window_l1(reconstruction, images)
            loss = loss + config.window_weight * windowed
            values["window_l1"] = windowed.detach()
        if config.mse_weight > 0:
            squared = (reconstruction - images).square().mean()
            loss = loss + config.mse_weight * squared
            values["mse"] = squared.detach()
        if self.perceptual is not None:
            perceptual = self.perceptual(reconstruction, images)
            loss = loss + config.perceptual_weight * perceptual
            values["perceptual"] = perceptual.detach()
        if adversarial_on:
            # Gradients reach the generator through the discriminator, whose own weights stay out of it.
            self.discriminator.requires_grad_(False)
            with autocast(device, config.amp):
                logits = self.discriminator(reconstruction)[-1]
            adv_g = self.adversarial(logits.float(), target_is_real=True, for_discriminator=False)
            self.discriminator.requires_grad_(True)
            loss = loss + config.adv_weight * adv_g
            values["adv_g"] = adv_g.detach()
        optimizer_step(loss, self.opt_g, self.generator_parameters, config.grad_clip)
        if adversarial_on:
            batch = len(slots)
            with autocast(device, config.amp):
                logits = self.discriminator_ddp(torch.cat([reconstruction.detach(), images]))[-1].float()
            d_loss = 0.5 * (self.adversarial(logits[:batch], target_is_real=False, for_discriminator=True)
                            + self.adversarial(logits[batch:], target_is_real=True, for_discriminator=True))
            optimizer_step(d_loss, self.opt_d, list(self.discriminator.parameters()), config.grad_clip)
            values["d_loss"] = d_loss.detach()
        values["loss"] = loss.detach()
        values["psnr"] = psnr_unit(reconstruction.detach(), images)
        return values

    def evaluate(self, step: int, slots: range) -> float:
        """Reconstruction L1 (posterior mean) on the batch of `step`, without training."""
        config, device = self.config, self.ctx.device
        images = image_batch(self.store, config.seed, step, slots, self.size_for(step), config.augment_flips).to(device)
        with torch.no_grad(), autocast(device, config.amp):
            z_mu, _ = self.autoencoder.encode(images)
            reconstruction = self.autoencoder.decode(z_mu)
        return float((reconstruction.float() - images).abs().mean().item())

    def export(self) -> dict[str, str]:
        path = write_role(self.config.out_dir, self.preset, "autoencoder", self.autoencoder)
        return {"autoencoder": str(path)}
