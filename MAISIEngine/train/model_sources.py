"""Which architecture a run trains, and where each network's starting weights come from.

- The architecture is `--preset` (a shipped preset or a model directory), else the `--init` model's,
  else the one already in the output directory, else the demo preset.
- The network being trained starts from `--init` (a model with weights for that role, official
  ones included, or a checkpoint file), else from scratch (the ControlNet from the U-Net's weights).
- Frozen networks of later stages (the VAE for diffusion, VAE and U-Net for ControlNet) come from the
  output directory when an earlier stage was trained into it, else from the `--init` model.
A checkpoint that does not fit the architecture is refused with the mismatching keys named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.networks import Checkpoint, build_network, extract_checkpoint, load_state_dict_strict, \
    read_checkpoint_file
from MAISIEngine.presets import Preset, load_preset
from MAISIEngine.train.checkpoints import model_preset

ARCHITECTURE_KEYS = ("autoencoder", "diffusion_unet", "controlnet", "scheduler")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


@dataclass
class ModelSources:
    preset: Preset
    out_dir: Path
    init_model: Preset | None = None
    init_file: Path | None = None

    def describe(self) -> str:
        parts = [f"architecture {self.preset.name}"]
        if self.init_model is not None:
            parts.append(f"init from model {self.init_model.name}")
        if self.init_file is not None:
            parts.append(f"init from {self.init_file.name}")
        return ", ".join(parts)


def _architecture(preset: Preset) -> dict[str, object]:
    raw = preset.to_dict()
    return {k: raw.get(k) for k in ARCHITECTURE_KEYS}


def resolve_sources(out_dir: str | Path, preset_arg: str | None = None, init_arg: str | None = None) -> ModelSources:
    out_dir = Path(out_dir)
    init_model: Preset | None = None
    init_file: Path | None = None
    if init_arg:
        candidate = Path(init_arg).expanduser()
        if candidate.is_file() and candidate.name.endswith(CHECKPOINT_SUFFIXES):
            init_file = candidate
        elif candidate.suffix in CHECKPOINT_SUFFIXES and not candidate.exists():
            raise MaisiError(f"--init checkpoint {candidate} does not exist", "check the path")
        else:
            init_model = load_preset(init_arg)
    existing = model_preset(out_dir)
    if preset_arg:
        preset = load_preset(preset_arg)
    elif init_model is not None:
        preset = init_model
    elif existing is not None:
        preset = existing
    else:
        preset = load_preset("demo")
    if existing is not None and _architecture(existing) != _architecture(preset):
        raise MaisiError(
            f"the output folder {out_dir} already holds a model of another architecture ({existing.name})",
            "train into a new --out folder, or use the same --preset as the earlier stages",
        )
    return ModelSources(preset, out_dir, init_model, init_file)


def load_into(model: torch.nn.Module, checkpoint: Checkpoint, role: str, origin: str) -> None:
    try:
        load_state_dict_strict(model, checkpoint.state_dict, role)
    except MaisiError as error:
        raise MaisiError(f"{origin}: {error.message}", error.hint) from None


def _model_weight_path(preset: Preset, role: str) -> Path | None:
    """The model's file for `role` when it names one (None when it has none for this role)."""
    from MAISIEngine.weights.resolve import resolve_weight_path

    if role not in preset.weights:
        return None
    return Path(resolve_weight_path(preset, role))


def frozen_network(role: str, sources: ModelSources, device: torch.device,
                   needed_by: str) -> tuple[torch.nn.Module, Checkpoint]:
    """A network trained by an earlier stage: from the output folder, else from the --init model."""
    origins: list[tuple[Preset, str]] = []
    existing = model_preset(sources.out_dir)
    if existing is not None and role in existing.weights:
        origins.append((existing, f"the {role} in {sources.out_dir}"))
    if sources.init_model is not None and role in sources.init_model.weights:
        origins.append((sources.init_model, f"the {role} of model {sources.init_model.name}"))
    if not origins:
        earlier = {"autoencoder": "vae", "diffusion_unet": "diffusion"}.get(role, role)
        raise MaisiError(
            f"{needed_by} training needs a trained {role}, and neither {sources.out_dir} nor --init has one",
            f"train it first (`maisi train {earlier} --out {sources.out_dir}`) or give --init MODEL",
        )
    model_source, origin = origins[0]
    path = _model_weight_path(model_source, role)
    assert path is not None
    checkpoint = extract_checkpoint(read_checkpoint_file(path), role)
    model = build_network(role, sources.preset, device)
    load_into(model, checkpoint, role, origin)
    model.requires_grad_(False)
    return model.to(device).eval(), checkpoint


def initial_checkpoint(role: str, sources: ModelSources) -> tuple[Checkpoint | None, str]:
    """Starting weights of the network being trained (None: start from scratch)."""
    if sources.init_file is not None:
        return extract_checkpoint(read_checkpoint_file(sources.init_file), role), f"--init {sources.init_file.name}"
    if sources.init_model is not None:
        path = _model_weight_path(sources.init_model, role)
        if path is not None:
            return extract_checkpoint(read_checkpoint_file(path), role), f"--init model {sources.init_model.name}"
    return None, "scratch"


def trainable_network(role: str, sources: ModelSources,
                      device: torch.device) -> tuple[torch.nn.Module, Checkpoint | None, str]:
    """Build the network to train and load its starting weights strictly (if any)."""
    model = build_network(role, sources.preset, device)
    checkpoint, origin = initial_checkpoint(role, sources)
    if checkpoint is not None:
        load_into(model, checkpoint, role, origin)
    return model.to(device), checkpoint, origin
