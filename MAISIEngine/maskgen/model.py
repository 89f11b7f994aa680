"""Mask-generation models: their presets, the two MONAI networks, and strict, safe loading of the weights.

A mask preset is a JSON document like the CT presets, with the mask networks instead: a MONAI
`AutoencoderKlMaisi` whose decoder gives one logit per class (8 bit-planes in, 125 classes out for the
official model) and a MONAI `DiffusionModelUNet` with cross-attention on the 10 anatomy sizes; a DDPM
scheduler; the latent shape and the voxel spacing the maps come out at; the MAISI id of each class; and
the grids the model accepts. Weights load with `torch.load(weights_only=True)` or safetensors, strictly.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from MAISIEngine.errors import MaisiError, WeightsMissingError
from MAISIEngine.networks import extract_checkpoint, load_state_dict_strict, read_checkpoint_file

ROLES = ("mask_autoencoder", "mask_diffusion_unet")
_REQUIRED = ("name", "autoencoder", "diffusion_unet", "scheduler", "num_inference_steps", "latent_shape",
             "spacing", "classes", "accepts", "weights")


@dataclass(frozen=True)
class MaskPreset:
    """A typed view of a mask preset document."""

    name: str
    description: str
    weights_source: str  # "official" (weights cache), "package" (MAISIEngine/assets/demo) or "directory"
    autoencoder: dict[str, Any]
    diffusion_unet: dict[str, Any]
    scheduler: dict[str, Any]
    num_inference_steps: int
    latent_shape: tuple[int, int, int, int]
    spacing: tuple[float, float, float]
    classes: tuple[int, ...]
    postprocess: str  # "reference" (NVIDIA's clean-up) or "components" (largest component per organ only)
    accepts: dict[str, Any]
    default_size: tuple[int, int, int]
    default_spacing: tuple[float, float, float]
    weights: dict[str, str]
    source_path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Voxels of a generated map before resampling (latent x the VAE's downsampling)."""
        factor = 2 ** (len(self.autoencoder["num_channels"]) - 1)
        return tuple(int(s) * factor for s in self.latent_shape[1:])  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)


def official_classes() -> tuple[int, ...]:
    """MAISI id of each of the official VAE's 125 classes (NVIDIA's 124-to-132 table, class index order)."""
    text = resources.files("MAISIEngine.maskgen").joinpath("official_classes.json").read_text()
    return tuple(int(v) for v in json.loads(text)["classes"])


def mask_preset_from_dict(raw: dict[str, Any], source_path: Path | None = None) -> MaskPreset:
    missing = [k for k in _REQUIRED if k not in raw]
    where = f" {source_path}" if source_path else ""
    if missing:
        raise MaisiError(f"mask preset{where} lacks the keys {', '.join(missing)}",
                         "start from a shipped mask preset (MAISIEngine/maskgen/presets/*.json)")
    classes = official_classes() if raw["classes"] == "official" else tuple(int(v) for v in raw["classes"])
    if len(classes) != int(raw["autoencoder"]["out_channels"]):
        raise MaisiError(f"mask preset{where} names {len(classes)} classes for a VAE with "
                         f"{raw['autoencoder']['out_channels']} outputs", "give one MAISI id per VAE output")
    return MaskPreset(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        weights_source=str(raw.get("weights_source", "directory")),
        autoencoder=dict(raw["autoencoder"]),
        diffusion_unet=dict(raw["diffusion_unet"]),
        scheduler=dict(raw["scheduler"]),
        num_inference_steps=int(raw["num_inference_steps"]),
        latent_shape=tuple(int(v) for v in raw["latent_shape"]),  # type: ignore[arg-type]
        spacing=tuple(float(v) for v in raw["spacing"]),  # type: ignore[arg-type]
        classes=classes,
        postprocess=str(raw.get("postprocess", "reference")),
        accepts=dict(raw["accepts"]),
        default_size=tuple(int(v) for v in raw.get("default_size", (128, 128, 128))),  # type: ignore[arg-type]
        default_spacing=tuple(float(v) for v in raw.get("default_spacing", (3.0, 3.0, 3.0))),  # type: ignore[arg-type]
        weights=dict(raw["weights"]),
        source_path=source_path,
        raw=copy.deepcopy(raw),
    )


def shipped_mask_models() -> list[str]:
    folder = resources.files("MAISIEngine.maskgen").joinpath("presets")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_mask_preset(name_or_path: str | Path) -> MaskPreset:
    """A shipped mask preset by name (mask-ct, mask-demo), a JSON file, or a folder holding mask_preset.json."""
    text = str(name_or_path)
    if text in shipped_mask_models():
        resource = resources.files("MAISIEngine.maskgen").joinpath("presets", f"{text}.json")
        return mask_preset_from_dict(json.loads(resource.read_text()), Path(str(resource)))
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "mask_preset.json"
    if not path.is_file():
        raise MaisiError(f"unknown mask model '{text}'",
                         f"use one of {', '.join(shipped_mask_models())}, or a folder holding mask_preset.json")
    try:
        return mask_preset_from_dict(json.loads(path.read_text()), path)
    except (OSError, json.JSONDecodeError) as exc:
        raise MaisiError(f"cannot read mask preset {path}: {exc}", "the file must be valid JSON") from None


def _on_device(kwargs: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Flash attention exists only on CUDA; it changes no parameter, so weights load either way."""
    out = dict(kwargs)
    if "use_flash_attention" in out and torch.device(device).type != "cuda":
        out["use_flash_attention"] = False
    return out


def build_mask_autoencoder(preset: MaskPreset, device: torch.device | str = "cpu") -> torch.nn.Module:
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    return AutoencoderKlMaisi(**_on_device(preset.autoencoder, device))


def build_mask_unet(preset: MaskPreset, device: torch.device | str = "cpu") -> torch.nn.Module:
    from monai.networks.nets.diffusion_model_unet import DiffusionModelUNet

    return DiffusionModelUNet(**_on_device(preset.diffusion_unet, device))


def build_mask_scheduler(preset: MaskPreset):
    """MONAI's DDPM scheduler with the preset's betas (the mask model is DDPM only)."""
    from monai.networks.schedulers import DDPMScheduler

    kwargs = {k: v for k, v in preset.scheduler.items() if k != "type"}
    if preset.scheduler.get("type", "ddpm") != "ddpm":
        raise MaisiError(f"mask model '{preset.name}' names scheduler {preset.scheduler.get('type')}",
                         "mask models use \"type\": \"ddpm\"")
    return DDPMScheduler(**kwargs)


def weight_path(preset: MaskPreset, role: str) -> Path:
    """Where the file of `role` (a network, or the size database) is; a one-line error when it is absent."""
    filename = preset.weights.get(role)
    if filename is None:
        raise MaisiError(f"mask model '{preset.name}' names no file for {role}",
                         f"add \"{role}\": FILE under \"weights\" in its preset")
    if preset.weights_source == "official":
        from MAISIEngine.weights import cache
        from MAISIEngine.weights.manifest import entry_for_filename

        state = cache.status_of(entry_for_filename(filename))
        if state.status == cache.MISSING:
            raise WeightsMissingError(
                f"the mask-generation file {filename} is not downloaded",
                "run `maisi weights download mask-generation`, or `maisi weights import DIR` offline")
        if state.status == cache.CORRUPT:
            raise MaisiError(f"the cached {filename} is damaged: {state.path}",
                             "run `maisi weights download mask-generation` to fetch it again")
        return Path(state.path)
    if preset.weights_source == "package":
        path = Path(str(resources.files("MAISIEngine").joinpath("assets", "demo", filename)))
        hint = ("this installation ships no trained demo mask model; use --model mask-ct after "
                "`maisi weights download mask-generation`, or train one with `maisi train mask-vae|mask-diffusion` "
                "and pass its folder to --model")
    else:
        if preset.source_path is None:
            raise MaisiError(f"mask model '{preset.name}' keeps its files beside its preset, but has no path",
                             "load it from its folder")
        path = Path(preset.source_path).parent / filename
        hint = "train it first (`maisi train mask-vae` / `maisi train mask-diffusion`)"
    if not path.is_file():
        raise WeightsMissingError(f"the {role} file of mask model '{preset.name}' is missing: {path}", hint)
    return path


@dataclass
class LoadedMaskModel:
    preset: MaskPreset
    autoencoder: torch.nn.Module
    unet: torch.nn.Module
    scale_factor: float
    device: torch.device
    files: dict[str, Path] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {"model": self.preset.name,
                "weights": {role: {"file": p.name, "sha256": self.sha256[role]} for role, p in self.files.items()}}


def load_mask_networks(preset: MaskPreset, autoencoder_path: str | Path, unet_path: str | Path,
                       device: torch.device | str = "cpu") -> tuple[torch.nn.Module, torch.nn.Module, float]:
    """Build both networks and load the official-layout (or safetensors) files into them strictly.

    The official VAE file is a bare state dict; the U-Net file holds `unet_state_dict` and the latent
    `scale_factor`, which sampling divides by before decoding.
    """
    device = torch.device(device)
    autoencoder = build_mask_autoencoder(preset, device)
    ae_ckpt = extract_checkpoint(read_checkpoint_file(autoencoder_path), "mask_autoencoder")
    load_state_dict_strict(autoencoder, ae_ckpt.state_dict, "mask autoencoder")
    unet = build_mask_unet(preset, device)
    unet_ckpt = extract_checkpoint(read_checkpoint_file(unet_path), "mask_diffusion_unet")
    load_state_dict_strict(unet, unet_ckpt.state_dict, "mask diffusion U-Net")
    if unet_ckpt.scale_factor is None:
        raise MaisiError(f"the mask diffusion checkpoint {Path(unet_path).name} carries no scale_factor",
                         "use the official mask_generation_diffusion_unet.pt or one written by `maisi train mask-diffusion`")
    from MAISIEngine.onednn_conv import use_onednn_convolutions

    unet = use_onednn_convolutions(unet)  # CPU inference: PyTorch would pick its slow kernel at these sizes
    return autoencoder.to(device).eval(), unet.to(device).eval(), float(unet_ckpt.scale_factor)


def load_mask_model(model: str | Path | MaskPreset, device: torch.device | str = "cpu") -> LoadedMaskModel:
    """Resolve and load a mask model's networks; hashes are recorded for provenance."""
    from MAISIEngine.models import _known_sha256

    preset = model if isinstance(model, MaskPreset) else load_mask_preset(model)
    files = {role: weight_path(preset, role) for role in (*ROLES, "size_database")}
    autoencoder, unet, scale = load_mask_networks(preset, files["mask_autoencoder"], files["mask_diffusion_unet"], device)
    return LoadedMaskModel(preset, autoencoder, unet, scale, torch.device(device), files,
                           {role: _known_sha256(p) for role, p in files.items()})
