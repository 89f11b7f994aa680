"""A tiny mask-generation model (official checkpoint layout, random weights) for tests of the engine and
the front ends: import `tiny_mask_dir` from a test module to use it as a fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from MAISIEngine.maskgen.model import build_mask_autoencoder, build_mask_unet, load_mask_preset, mask_preset_from_dict

SIZE_DB = [
    {"organ_size": [0.2, 0.1, 0.3, 0.4, 0.5, -1, -1, -1, -1, -1]},
    {"organ_size": [0.6, 0.9, 0.7, 0.2, 0.1, -1, -1, -1, -1, -1]},
    {"organ_size": [0.9, 0.5, 0.5, 0.9, 0.9, -1, -1, 0.4, -1, -1]},
]


def randomise(module: torch.nn.Module, seed: int, std: float = 0.2) -> torch.nn.Module:
    """Every weight random (MONAI zero-initialises some output layers, which would hide wrong wiring)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (std if p.dim() > 1 else 0.05))
    return module


def tiny_mask_preset_dict(latent: int = 8, spacing: float = 4.0) -> dict:
    raw = load_mask_preset("mask-ct").to_dict()
    raw.update(name="tiny-mask", weights_source="directory", latent_shape=[4, latent, latent, latent],
               spacing=[spacing] * 3, num_inference_steps=2, default_size=[32, 32, 32], default_spacing=[4.0] * 3,
               accepts={"size_xy": [32, 48, 64], "size_z": [32, 48, 64], "spacing_xy": [1.0, 8.0],
                        "spacing_z": [1.0, 8.0], "min_fov_xy_mm": 0.0},
               weights={"mask_autoencoder": "mask_generation_autoencoder.pt",
                        "mask_diffusion_unet": "mask_generation_diffusion_unet.pt",
                        "size_database": "all_anatomy_size_conditions.json"})
    raw["autoencoder"].update(num_channels=[8, 8, 8], num_res_blocks=[1, 1, 1], norm_num_groups=4, num_splits=1)
    raw["diffusion_unet"].update(channels=[8, 8, 8, 8], num_head_channels=[0, 0, 8, 8], norm_num_groups=4,
                                 num_res_blocks=1)
    return raw


def write_official_layout(folder: Path, preset, seed: int = 0, scale: float = 1.0) -> dict[str, Path]:
    """Random networks saved as NVIDIA ships them: a bare VAE state dict; unet_state_dict + scale_factor."""
    folder.mkdir(parents=True, exist_ok=True)
    vae = randomise(build_mask_autoencoder(preset), seed)
    unet = randomise(build_mask_unet(preset), seed + 1, std=0.05)
    paths = {"vae": folder / "mask_generation_autoencoder.pt", "unet": folder / "mask_generation_diffusion_unet.pt",
             "db": folder / "all_anatomy_size_conditions.json"}
    torch.save(vae.state_dict(), paths["vae"])
    torch.save({"unet_state_dict": unet.state_dict(), "scale_factor": torch.tensor(scale)}, paths["unet"])
    paths["db"].write_text(json.dumps(SIZE_DB))
    return paths


@pytest.fixture(scope="module")
def tiny_mask_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-mask")
    raw = tiny_mask_preset_dict()
    (folder / "mask_preset.json").write_text(json.dumps(raw))
    write_official_layout(folder, mask_preset_from_dict(raw), seed=3, scale=0.8)
    return folder
