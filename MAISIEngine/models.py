"""A loaded MAISI model: preset, the three networks on a device, the latent scale and weight hashes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.networks import init_controlnet_from_unet, load_network, build_network, extract_checkpoint, \
    read_checkpoint_file, load_state_dict_strict
from MAISIEngine.presets import Preset, load_preset


@dataclass
class LoadedModel:
    preset: Preset
    autoencoder: torch.nn.Module
    unet: torch.nn.Module
    controlnet: torch.nn.Module
    scale_factor: float
    device: torch.device
    weight_files: dict[str, str] = field(default_factory=dict)
    weight_sha256: dict[str, str] = field(default_factory=dict)


def weights_provenance(model: "LoadedModel") -> dict[str, dict[str, str]]:
    """Role -> weight file name and sha256, as every output's provenance records them."""
    return {role: {"file": Path(model.weight_files[role]).name, "sha256": model.weight_sha256[role]}
            for role in model.weight_files}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> the first GPU if there is one, else CPU; a GPU that is not there is refused."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "gpu":
        name = "cuda"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MaisiError(f"device {name} was asked for but CUDA is not available here", "use --device cpu or auto")
        dev = torch.device(name if ":" in name else "cuda:0")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MaisiError(
                f"device {name} does not exist (this machine has {torch.cuda.device_count()} GPU(s))",
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}, auto or cpu",
            )
        return dev
    raise MaisiError(f"unknown device '{name}'", "use auto, cpu, cuda or cuda:N")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _known_sha256(path: Path) -> str:
    """Hash recorded by the weights cache when there is one (big files), else computed now."""
    try:
        from MAISIEngine.weights.cache import recorded_sha256

        known = recorded_sha256(path)
        if known:
            return str(known)
    except (ImportError, AttributeError):
        pass
    return file_sha256(path)


def weight_paths(preset: Preset) -> dict[str, Path]:
    """Where each role's weight file is, for any preset source (cache, package, model directory)."""
    from MAISIEngine.weights.resolve import resolve_weight_path

    return {role: Path(resolve_weight_path(preset, role)) for role in preset.weights}


def load_model(model: str | Path | Preset, device: torch.device | str = "cpu") -> LoadedModel:
    """Load the three networks of a model strictly; the ControlNet starts from the U-Net's weights."""
    preset = model if isinstance(model, Preset) else load_preset(model)
    device = torch.device(device)
    paths = weight_paths(preset)
    autoencoder, _ = load_network("autoencoder", preset, paths["autoencoder"], device)
    unet, unet_checkpoint = load_network("diffusion_unet", preset, paths["diffusion_unet"], device)
    controlnet = build_network("controlnet", preset, device)
    init_controlnet_from_unet(controlnet, unet)
    control_checkpoint = extract_checkpoint(read_checkpoint_file(paths["controlnet"]), "controlnet")
    load_state_dict_strict(controlnet, control_checkpoint.state_dict, "controlnet")
    controlnet = controlnet.to(device).eval()
    scale = unet_checkpoint.scale_factor
    if scale is None:
        raise MaisiError(
            f"the diffusion checkpoint {paths['diffusion_unet'].name} carries no scale_factor",
            "use the official diffusion checkpoint or one written by `maisi train diffusion`",
        )
    return LoadedModel(
        preset=preset,
        autoencoder=autoencoder,
        unet=unet,
        controlnet=controlnet,
        scale_factor=float(scale),
        device=device,
        weight_files={role: str(p) for role, p in paths.items()},
        weight_sha256={role: _known_sha256(p) for role, p in paths.items()},
    )
