"""Shared fixtures: tiny MAISI-family model directories, oblique label maps, a private MAISI_HOME."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "MAISISynth"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

os.environ.setdefault("MAISI_NO_PROGRESS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY_PRESET = {
    "name": "tiny-test",
    "description": "Tiny MAISI-family networks for fast tests (random weights).",
    "weights_source": "directory",
    "autoencoder": {
        "spatial_dims": 3, "in_channels": 1, "out_channels": 1, "latent_channels": 4,
        "num_channels": [8, 8, 16], "num_res_blocks": [1, 1, 1], "norm_num_groups": 4, "norm_eps": 1e-6,
        "attention_levels": [False, False, False], "with_encoder_nonlocal_attn": False,
        "with_decoder_nonlocal_attn": False, "use_checkpointing": False, "use_convtranspose": False,
        "norm_float16": False, "num_splits": 1, "dim_split": 1,
    },
    "diffusion_unet": {
        "spatial_dims": 3, "in_channels": 4, "out_channels": 4, "num_channels": [8, 16, 16],
        "attention_levels": [False, False, True], "num_head_channels": [0, 0, 8], "num_res_blocks": 1,
        "norm_num_groups": 4, "use_flash_attention": False, "include_top_region_index_input": False,
        "include_bottom_region_index_input": False, "include_spacing_input": True, "num_class_embeds": 128,
        "resblock_updown": True, "include_fc": True,
    },
    "controlnet": {
        "spatial_dims": 3, "in_channels": 4, "num_channels": [8, 16, 16], "attention_levels": [False, False, True],
        "num_head_channels": [0, 0, 8], "num_res_blocks": 1, "norm_num_groups": 4, "use_flash_attention": False,
        "conditioning_embedding_in_channels": 8, "conditioning_embedding_num_channels": [8, 8, 8],
        "num_class_embeds": 128, "resblock_updown": True, "include_fc": True,
    },
    "scheduler": {"type": "rflow", "num_train_timesteps": 1000, "use_discrete_timesteps": False,
                  "use_timestep_transform": True, "sample_method": "uniform"},
    "num_inference_steps": 3,
    "guidance_scale": 0.0,
    "conditioning": {"spacing": True, "region": False, "modality": "ct"},
    "allowed_sizes": {"divisor": 16, "min": [16, 16, 16], "max": [512, 512, 768]},
    "trained_on": {"size_xy": [32, 48, 64], "size_z": [16, 64], "size_z_step": 16,
                   "spacing_xy": [1.0, 8.0], "spacing_z": [1.0, 8.0], "min_fov_mm": 0.0},
    "default_size": [32, 32, 32],
    "default_spacing": [4.0, 4.0, 4.0],
    "weights": {"autoencoder": "autoencoder.pt", "diffusion_unet": "diffusion_unet.pt", "controlnet": "controlnet.pt"},
}


@pytest.fixture(scope="session")
def tiny_preset_dict() -> dict:
    return copy.deepcopy(TINY_PRESET)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory of the tiny preset with random weights in the official checkpoint layouts."""
    from MAISIEngine.modeldir import random_model_directory

    return random_model_directory(tmp_path_factory.mktemp("tiny-model"), copy.deepcopy(TINY_PRESET), seed=0,
                                  scale_factor=0.9)


@pytest.fixture(autouse=True)
def private_maisi_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test sees its own empty weights cache; nothing touches the user's."""
    home = tmp_path_factory.mktemp("maisi-home")
    monkeypatch.setenv("MAISI_HOME", str(home))
    return home


def oblique_affine(spacing=(2.0, 3.0, 4.0), origin=(-31.5, 12.25, 80.0), degrees=20.0) -> np.ndarray:
    """An oblique, anisotropic, offset voxel-to-RAS affine."""
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(angle / 2), -np.sin(angle / 2)], [0.0, np.sin(angle / 2), np.cos(angle / 2)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ tilt @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def block_mask(shape=(32, 32, 32)) -> np.ndarray:
    """A label map with body, liver, spleen and a vertebra: simple blocks at known places."""
    labels = np.zeros(shape, np.uint8)
    x, y, z = shape
    labels[2 : x - 2, 2 : y - 2, :] = 200
    labels[4 : x // 2, 4 : y // 2, 2 : z - 2] = 1
    labels[x // 2 + 2 : x - 4, 4 : y // 2, 2 : z // 2] = 3
    labels[x // 2 - 2 : x // 2 + 2, y - 8 : y - 4, 2 : z - 2] = 33
    return labels


@pytest.fixture
def write_json():
    def _write(path: Path, data: dict) -> Path:
        path.write_text(json.dumps(data))
        return path

    return _write
