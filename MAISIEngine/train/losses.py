"""The paper's objectives (Fig. 2): VAE reconstruction + KL + adversarial (+ perceptual), diffusion L1.

Noise and timesteps are drawn per sample from generators seeded by (seed, step, slot), so a batch
split over processes is noised exactly as the same batch in one process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler
from monai.networks.schedulers.ddpm import DDPMPredictionType
from monai.networks.schedulers.rectified_flow import timestep_transform

from MAISIEngine.errors import MaisiError
from MAISIEngine.train.data import slot_generator


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) summed over latent voxels, averaged over the batch."""
    mu = z_mu.float()
    var = z_sigma.float().pow(2)
    per_voxel = mu.pow(2) + var - torch.log(var.clamp_min(1e-12)) - 1.0
    return 0.5 * per_voxel.flatten(1).sum(1).mean()


def per_slot_noise(shape: Sequence[int], seed: int, step: int, slots: Sequence[int],
                   device: torch.device) -> torch.Tensor:
    """Standard normal noise of `shape` (batch first), one seeded generator per global slot."""
    parts = [torch.randn(tuple(shape[1:]), generator=slot_generator(seed, step, slot, device), device=device)
             for slot in slots]
    return torch.stack(parts)


def per_slot_uniform(seed: int, step: int, slots: Sequence[int], device: torch.device, stream: int = 1) -> torch.Tensor:
    """One U[0, 1) number per slot (timesteps), independent of the noise draws."""
    values = []
    for slot in slots:
        generator = slot_generator(seed * 31 + stream, step, slot, device)
        values.append(torch.rand((1,), generator=generator, device=device))
    return torch.cat(values)


def sample_timesteps(scheduler: RFlowScheduler | DDPMScheduler, latents: torch.Tensor, seed: int, step: int,
                     slots: Sequence[int]) -> torch.Tensor:
    """Training timesteps as MONAI's schedulers draw them, but from the per-slot generators.

    rflow: uniform in [0, T) (or discrete), shifted by the latent size when the scheduler's timestep
    transform is on (as `RFlowScheduler.sample_timesteps` does); DDPM: integers in [0, T).
    """
    uniform = per_slot_uniform(seed, step, slots, latents.device)
    total = scheduler.num_train_timesteps
    if isinstance(scheduler, RFlowScheduler):
        if scheduler.sample_method != "uniform":
            # logit-normal: the logistic of a normal draw, made from two uniforms (Box-Muller).
            other = per_slot_uniform(seed, step, slots, latents.device, stream=2)
            normal = torch.sqrt(-2.0 * torch.log(uniform.clamp_min(1e-12))) * torch.cos(2 * math.pi * other)
            uniform = torch.sigmoid(normal)
        t = uniform * total
        if scheduler.use_discrete_timesteps:
            t = t.long()
        if scheduler.use_timestep_transform:
            numel = int(math.prod(latents.shape[2:]))
            t = timestep_transform(t, input_img_size_numel=torch.tensor(numel),
                                   base_img_size_numel=scheduler.base_img_size_numel,
                                   num_train_timesteps=total, spatial_dim=latents.ndim - 2)
        return t
    return (uniform * total).long().clamp(max=total - 1)


def diffusion_target(scheduler: RFlowScheduler | DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor,
                     timesteps: torch.Tensor) -> torch.Tensor:
    """What the network must predict: velocity x0 - noise for rflow (MONAI's sign), else per prediction type."""
    prediction = scheduler.prediction_type
    if prediction == DDPMPredictionType.EPSILON:
        return noise
    if prediction == DDPMPredictionType.SAMPLE:
        return x0
    if prediction == DDPMPredictionType.V_PREDICTION:
        if isinstance(scheduler, RFlowScheduler):
            return x0 - noise
        return scheduler.get_velocity(x0, noise, timesteps)
    raise MaisiError(f"unsupported prediction type {prediction}", "use an rflow or DDPM (epsilon) preset")


def weighted_l1(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error in float32, optionally weighted per voxel (e.g. tumors, inpainted regions)."""
    error = (prediction.float() - target.float()).abs()
    if weights is None:
        return error.mean()
    return (error * weights).mean()


SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)
"""Window (level 40, width 400) in which soft-tissue organs and tumors differ by tens of HU."""


def window_l1(prediction: torch.Tensor, target: torch.Tensor,
              window_hu: tuple[float, float] = SOFT_TISSUE_WINDOW_HU) -> torch.Tensor:
    """L1 between images in [0, 1] (HU [-1000, 1000]) seen through an HU window.

    A 60 HU error in the liver is 0.03 of the full range, which the plain L1 hardly notices next to
    edges of bone and air; inside a 400 HU window it weighs five times as much, and voxels far outside
    the window (air, cortical bone) stop counting, so the edges do not drown it out.
    """
    lo, hi = ((w + 1000.0) / 2000.0 for w in window_hu)
    def view(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
    return (view(prediction) - view(target)).abs().mean()


CLIP_BAND = 0.02
"""How far beyond a bound (in [0, 1] units, 40 HU) an output may sit for free where the target is on it."""


def clip_where_target_at_bounds(prediction: torch.Tensor, target: torch.Tensor,
                                band: float = CLIP_BAND) -> torch.Tensor:
    """The prediction as the loss should see it when outputs are clipped to [0, 1] on inference.

    Air is exactly -1000 HU (0) and the densest bone may reach 1000 HU (1): there an output up to `band`
    beyond the bound becomes the target after clipping, so it costs nothing here. The L1 alone pulls
    those outputs onto the bound itself, where a jitter of a few HU survives the clip: grey air in every
    reconstruction (generation sets air outside the body afterwards; reconstructions and encoded inputs
    to inpainting keep it). Outputs further out still cost their distance to the band: unbounded air
    features would shift the decoder's group-norm statistics, and with them the HU of every organ, by
    how much air a field of view holds. Voxels whose target lies inside the range keep the raw output.
    """
    floor_view = torch.where(prediction > 0.0, prediction, (prediction + band).clamp_max(0.0))
    ceiling_view = torch.where(prediction < 1.0, prediction, (prediction - band).clamp_min(1.0))
    return torch.where(target <= 0.0, floor_view, torch.where(target >= 1.0, ceiling_view, prediction))


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter],
                   clip: float) -> None:
    """Backward, optional gradient-norm clipping, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(parameters, clip)
    optimizer.step()


def psnr_unit(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [0, 1] (a cheap training log; the model card uses MONAI's metric)."""
    mse = F.mse_loss(reconstruction.float().clamp(0, 1), target.float())
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def make_perceptual_loss(weights_path: str | None, device: torch.device) -> torch.nn.Module | None:
    """MONAI's 2.5D perceptual loss with a ResNet-50 backbone read from a local file; None without one.

    Nothing is ever downloaded: without a weights file on disk the VAE trains on L1 + KL + adversarial.
    """
    if not weights_path:
        return None
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise MaisiError(f"perceptual backbone weights {path} do not exist",
                         "give a local ResNet-50 state dict (.pth), or leave out --perceptual-weights")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        raise MaisiError("the perceptual loss needs torchvision, which is not installed",
                         "pip install torchvision, or leave out --perceptual-weights") from None
    from monai.losses import PerceptualLoss

    try:
        loss = PerceptualLoss(spatial_dims=3, network_type="resnet50", is_fake_3d=True, fake_3d_ratio=0.2,
                              pretrained=True, pretrained_path=str(path))
    except Exception as exc:  # torch/torchvision raise various types for a wrong file
        raise MaisiError(f"cannot load perceptual backbone {path.name}: {exc.__class__.__name__}",
                         "give a torchvision ResNet-50 state dict saved with torch.save") from None
    return loss.to(device).eval()
