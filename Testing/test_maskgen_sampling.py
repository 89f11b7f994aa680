"""The mask model's sampler with fewer steps than trained (respaced DDPM), the demo's training objectives,
and the shipped demo mask model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.networks.schedulers import DDPMScheduler
from scipy import ndimage

from MAISIEngine.maskgen.cli import default_mask_model
from MAISIEngine.maskgen.model import build_mask_scheduler, load_mask_model, load_mask_preset
from MAISIEngine.maskgen.pipeline import CHECKED_ORGANS, generate_mask
from MAISIEngine.maskgen.sampling import respaced_chain, sample_latents
from MAISIEngine.maskgen.train import diffusion_objective, vae_objective


def official_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                         schedule="scaled_linear_beta", clip_sample=False, prediction_type=prediction_type)


class ExactDenoiser(torch.nn.Module):
    """The optimal predictor when every training sample is the same latent `x0`: the noise (or velocity)
    that explains x_t exactly. Sampling with it must land on x0 whatever the step count."""

    def __init__(self, scheduler: DDPMScheduler, x0: torch.Tensor):
        super().__init__()
        self.abar, self.x0, self.kind = scheduler.alphas_cumprod, x0, scheduler.prediction_type

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        a = self.abar[int(timesteps[0])]
        eps = (x - a.sqrt() * self.x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * self.x0 if self.kind == "v_prediction" else eps


def test_a_chain_visiting_every_step_is_the_trained_chain():
    scheduler = official_scheduler()
    chain, visited = respaced_chain(scheduler, 1000)
    assert visited == list(range(1000)) and chain is scheduler
    reduced, _ = respaced_chain(official_scheduler(), 999)  # the respacing formula gives the same chain
    assert len(reduced.betas) == 999
    abar = scheduler.alphas_cumprod.double()
    betas = 1 - abar[1:] / abar[:-1]
    torch.testing.assert_close(betas.float(), scheduler.betas[1:], rtol=1e-5, atol=1e-7)


def test_a_respaced_chain_keeps_the_trained_noise_levels_at_the_visited_steps():
    scheduler = official_scheduler()
    chain, visited = respaced_chain(scheduler, 100)
    assert len(visited) == 100 and visited[0] == 0 and visited[-1] == 999
    assert visited[1] == 10 and visited[50] == 505
    torch.testing.assert_close(chain.alphas_cumprod, scheduler.alphas_cumprod[visited], rtol=1e-5, atol=1e-9)
    assert chain.prediction_type == "epsilon" and float(chain.betas[-1]) > 0.1  # a big jump per step


def test_fewer_steps_land_on_the_data_for_both_prediction_types():
    x0 = torch.linspace(-1.5, 1.5, 4 * 4 * 4 * 4).reshape(1, 4, 4, 4, 4)
    for kind in ("epsilon", "v_prediction"):
        scheduler = official_scheduler(kind)
        unet = ExactDenoiser(scheduler, x0)
        for steps in (10, 100):
            out = sample_latents(unet, scheduler, [0.5] * 10, (4, 4, 4, 4), steps, seed=1)
            assert float((out - x0).abs().max()) < 1e-3, (kind, steps)


def test_the_demo_preset_trains_velocity_prediction():
    scheduler = build_mask_scheduler(load_mask_preset("mask-demo"))
    assert scheduler.prediction_type == "v_prediction" and scheduler.num_train_timesteps == 1000
    x0 = torch.full((2, 4, 2, 2, 2), 0.5)
    noise = torch.full_like(x0, -1.0)
    t = torch.tensor([0, 999])
    velocity = scheduler.get_velocity(x0, noise, t)
    assert diffusion_objective(scheduler, lambda x: velocity, x0, noise, t).item() == 0.0
    assert diffusion_objective(official_scheduler(), lambda x: noise, x0, noise, t).item() == 0.0
    a = scheduler.alphas_cumprod[999]
    expected = float(a.sqrt() * -1.0 - (1 - a).sqrt() * 0.5)
    assert abs(float(velocity[1, 0, 0, 0, 0]) - expected) < 1e-6


def test_vae_objective_values():
    target = torch.tensor([[[[0, 1], [2, 2]], [[0, 0], [1, 2]]]])  # (1, 2, 2, 2), classes 0..2 of 4
    perfect = torch.nn.functional.one_hot(target, 4).movedim(-1, 1).float() * 40.0
    zeros = torch.zeros(1, 4, 1, 1, 1)
    assert vae_objective(perfect, zeros, torch.ones_like(zeros), target).item() < 1e-4
    uniform = torch.zeros(1, 4, 2, 2, 2)
    value = vae_objective(uniform, zeros, torch.ones_like(zeros), target, kl_weight=0.0).item()
    # CE = ln 4; Dice per present class c with n_c voxels: 2 * n_c/4 / (8/4 + n_c); classes 0, 1, 2 have 3, 2, 3
    dice = np.mean([1 - 2 * (n / 4) / (2 + n) for n in (3, 2, 3)])
    assert abs(value - (np.log(4) + dice)) < 1e-5
    kl = vae_objective(perfect, torch.full_like(zeros, 2.0), torch.ones_like(zeros), target, kl_weight=1.0).item()
    assert abs(kl - 2.0) < 1e-3  # 0.5 * mu^2 with sigma 1


def test_the_demo_ct_model_goes_with_the_demo_mask_model():
    assert default_mask_model("demo") == "mask-demo"
    assert default_mask_model("rflow-ct") == "mask-ct" and default_mask_model("ddpm-ct") == "mask-ct"


def test_the_shipped_demo_mask_model_draws_every_checked_organ_at_phantom_size():
    model = load_mask_model("mask-demo")
    first = generate_mask(model, [], (128, 128, 128), (3.0, 3.0, 3.0), seed=0, region="chest-abdomen")
    labels = first.volume.array
    voxel_ml = 27.0 / 1000.0
    for organ, ids in CHECKED_ORGANS.items():
        assert np.isin(labels, ids).any(), organ
    liver = labels == 1
    assert 1000.0 < liver.sum() * voxel_ml < 1800.0  # training phantoms: 1260-1710 ml (10th-90th percentile)
    assert ndimage.label(liver)[1] == 1
    assert first.provenance["model"] == "mask-demo" and first.provenance["num_inference_steps"] == 100
    again = generate_mask(model, [], (128, 128, 128), (3.0, 3.0, 3.0), seed=0, region="chest-abdomen")
    assert np.array_equal(again.volume.array, labels)


def test_asking_a_larger_liver_of_the_demo_mask_model_gives_one():
    model = load_mask_model("mask-demo")

    def liver_ml(size: float) -> float:
        volumes = [(generate_mask(model, [("liver", size)], (64, 64, 64), (6.0, 6.0, 6.0), seed=s).volume.array == 1)
                   .sum() * 0.216 for s in (100, 101)]
        return float(np.mean(volumes))

    small, large = liver_ml(0.1), liver_ml(0.9)
    assert large > small + 150.0, (small, large)  # measured over 5 seeds: 1227 ml against 1554 ml


def test_the_demo_package_with_its_mask_model_stays_within_40_mb():
    from importlib import resources

    folder = Path(str(resources.files("MAISIEngine").joinpath("assets", "demo")))
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    assert {"mask_autoencoder.safetensors", "mask_diffusion_unet.safetensors", "mask_anatomy_sizes.json"} <= set(files)
    assert sum(files.values()) < 40_000_000, files
