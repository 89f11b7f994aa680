"""Model directories: `preset.json` plus the three networks' weights, in the official layouts.

Training writes its results as a model directory, and `maisi generate --model DIR` loads one, so a
fine-tuned model runs through exactly the code that runs NVIDIA's checkpoints. Weights are written
either as official-layout `.pt` files (tensors only) or as safetensors with the scale factor in the
metadata (what ships in the package).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from MAISIEngine.io.atomic import atomic_path, write_text_atomic
from MAISIEngine.networks import build_network, init_controlnet_from_unet, save_safetensors
from MAISIEngine.presets import Preset, load_preset

OFFICIAL_NAMES = {
    "autoencoder": "autoencoder.pt",
    "diffusion_unet": "diffusion_unet.pt",
    "controlnet": "controlnet.pt",
}
SAFETENSORS_NAMES = {role: name.replace(".pt", ".safetensors") for role, name in OFFICIAL_NAMES.items()}


def save_official_layout(path: str | Path, role: str, model: torch.nn.Module, scale_factor: float | None = None) -> None:
    """torch.save of tensors only, in the layout NVIDIA's checkpoints use for this role."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if role == "autoencoder":
        payload: dict[str, Any] = state
    elif role == "diffusion_unet":
        payload = {"unet_state_dict": state, "scale_factor": torch.tensor(float(scale_factor or 1.0))}
    else:
        payload = {"controlnet_state_dict": state}
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def write_model_directory(
    out_dir: str | Path,
    preset: Preset | dict[str, Any],
    networks: dict[str, torch.nn.Module],
    scale_factor: float,
    layout: str = "official",
    dtype: torch.dtype | None = None,
    name: str | None = None,
) -> Path:
    """Write `preset.json` (weights_source = directory) and the weights; returns the directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = preset.to_dict() if isinstance(preset, Preset) else dict(preset)
    names = OFFICIAL_NAMES if layout == "official" else SAFETENSORS_NAMES
    raw.update({"weights_source": "directory", "weights": dict(names)})
    if name:
        raw["name"] = name
    for role, filename in names.items():
        if layout == "official":
            save_official_layout(out_dir / filename, role, networks[role], scale_factor)
        else:
            meta = {"role": role, "scale_factor": repr(float(scale_factor))} if role == "diffusion_unet" else {"role": role}
            save_safetensors(out_dir / filename, networks[role], metadata=meta, dtype=dtype)
    write_text_atomic(out_dir / "preset.json", json.dumps(raw, indent=2))
    return out_dir


def randomize_constant_parameters(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> int:
    """Add Gaussian noise to every parameter tensor whose entries are all equal (returns how many).

    MONAI zero-initialises the U-Net's output convolution and the ControlNet's zero convolutions (and
    norms start at weight 1, bias 0): through freshly built networks the U-Net returns exactly zero and a
    comparison of two samplers proves nothing. After this every parameter is random.
    """
    generator = torch.Generator().manual_seed(seed)
    changed = 0
    with torch.no_grad():
        for parameter in model.parameters():
            flat = parameter.detach().reshape(-1)
            if flat.numel() and bool((flat == flat[0]).all()):
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32) * std
                parameter.add_(noise.to(parameter.dtype))
                changed += 1
    return changed


def random_model_directory(
    out_dir: str | Path,
    preset: str | Preset | dict[str, Any] = "demo",
    seed: int = 0,
    scale_factor: float = 1.0,
    layout: str = "official",
    all_random: bool = False,
) -> Path:
    """A model directory of randomly initialised networks (tests and benchmarks of the real code paths).

    `all_random` also randomises the parameters MONAI initialises to a constant (zero output layers),
    so the networks' outputs depend on every input."""
    from MAISIEngine.presets import preset_from_dict

    if isinstance(preset, dict):
        typed = preset_from_dict(preset)
    elif isinstance(preset, Preset):
        typed = preset
    else:
        typed = load_preset(preset)
    torch.manual_seed(seed)
    networks = {role: build_network(role, typed, "cpu") for role in ("autoencoder", "diffusion_unet", "controlnet")}
    init_controlnet_from_unet(networks["controlnet"], networks["diffusion_unet"])
    if all_random:
        for index, network in enumerate(networks.values()):
            randomize_constant_parameters(network, seed=seed * 10 + index)
    return write_model_directory(out_dir, typed, networks, scale_factor, layout=layout)
