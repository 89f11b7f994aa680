"""Model presets: the architecture and operating range of a MAISI model, kept as data (JSON).

A preset names the MONAI hyper-parameters of the three networks, the scheduler, the sizes the
architecture can take and the sizes/spacings it was trained on, and the weight files it needs.
Shipped presets live beside this file; a model directory written by `maisi train` carries its own
`preset.json`, so fine-tuned models load through the same code.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError

ROLES = ("autoencoder", "diffusion_unet", "controlnet")
"""The three networks of a MAISI model, in the order they are trained."""

_REQUIRED_KEYS = (
    "name",
    "autoencoder",
    "diffusion_unet",
    "controlnet",
    "scheduler",
    "num_inference_steps",
    "conditioning",
    "allowed_sizes",
    "trained_on",
    "weights",
)


@dataclass(frozen=True)
class Preset:
    """A typed view of a preset JSON document."""

    name: str
    description: str
    weights_source: str  # "official" (cache, downloadable), "package" (shipped) or "directory"
    autoencoder: dict[str, Any]
    diffusion_unet: dict[str, Any]
    controlnet: dict[str, Any]
    scheduler: dict[str, Any]
    num_inference_steps: int
    guidance_scale: float
    conditioning: dict[str, Any]
    allowed_sizes: dict[str, Any]
    trained_on: dict[str, Any]
    default_size: tuple[int, int, int]
    default_spacing: tuple[float, float, float]
    weights: dict[str, str]
    source_path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def scheduler_type(self) -> str:
        return str(self.scheduler["type"])

    @property
    def size_divisor(self) -> int:
        """Every image axis must be a multiple of this (VAE x4 times the U-Net's downsamplings)."""
        return int(self.allowed_sizes["divisor"])

    @property
    def latent_downsample(self) -> int:
        """Image voxels per latent voxel along each axis (4 for every MAISI VAE)."""
        return 2 ** (len(self.autoencoder["num_channels"]) - 1)

    @property
    def uses_region(self) -> bool:
        return bool(self.conditioning.get("region"))

    @property
    def modality(self) -> str | None:
        return self.conditioning.get("modality")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this preset (what `preset.json` in a model directory holds)."""
        return copy.deepcopy(self.raw)

    def with_changes(self, **changes: Any) -> "Preset":
        """A copy with top-level keys replaced (used by training to name a fine-tuned model)."""
        raw = self.to_dict()
        raw.update(changes)
        return preset_from_dict(raw, self.source_path)


def preset_from_dict(raw: dict[str, Any], source_path: Path | None = None) -> Preset:
    """Validate a preset document and build the typed preset."""
    where = f" in {source_path}" if source_path else ""
    if not isinstance(raw, dict):
        raise MaisiError(f"preset{where} is not a JSON object", "start from a shipped preset (MAISIEngine/presets/*.json)")
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise MaisiError(
            f"preset{where} lacks the keys {', '.join(missing)}",
            "start from a shipped preset (MAISIEngine/presets/*.json) and change only what differs",
        )
    if not isinstance(raw["weights"], dict):
        raise MaisiError(f"preset{where} has no \"weights\" object", "map each role to a file name")
    unknown_roles = sorted(set(raw["weights"]) - set(ROLES))
    if unknown_roles:
        raise MaisiError(f"preset{where} names unknown weight roles {unknown_roles}", f"use {list(ROLES)}")
    for role, filename in raw["weights"].items():
        check_weight_filename(filename, role, where)
    return Preset(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        weights_source=str(raw.get("weights_source", "directory")),
        autoencoder=dict(raw["autoencoder"]),
        diffusion_unet=dict(raw["diffusion_unet"]),
        controlnet=dict(raw["controlnet"]),
        scheduler=dict(raw["scheduler"]),
        num_inference_steps=int(raw["num_inference_steps"]),
        guidance_scale=float(raw.get("guidance_scale", 0.0)),
        conditioning=dict(raw["conditioning"]),
        allowed_sizes=dict(raw["allowed_sizes"]),
        trained_on=dict(raw["trained_on"]),
        default_size=tuple(int(v) for v in raw.get("default_size", (128, 128, 128))),  # type: ignore[arg-type]
        default_spacing=tuple(float(v) for v in raw.get("default_spacing", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
        weights=dict(raw["weights"]),
        source_path=source_path,
        raw=copy.deepcopy(raw),
    )


MAX_PRESET_BYTES = 1 << 20


def check_weight_filename(filename: object, role: str, where: str = "") -> str:
    """A weight path stays inside its model folder: relative, no `..`, no drive, no home."""
    text = filename if isinstance(filename, str) else ""
    parts = text.replace("\\", "/").split("/")
    if (not text or text.startswith(("/", "~")) or ":" in text or any(p in ("", ".", "..") for p in parts)
            or "\x00" in text):
        raise MaisiError(f"preset{where}: the {role} weight path {filename!r} leaves the model folder",
                         "give a file name relative to the model folder, without .. or an absolute path")
    return text


def shipped_preset_names() -> list[str]:
    """Names of the presets that ship with the engine."""
    folder = resources.files("MAISIEngine.presets")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(name_or_path: str | Path) -> Preset:
    """A shipped preset by name, a preset JSON file, or a model directory holding `preset.json`."""
    text = str(name_or_path)
    if text in shipped_preset_names():
        resource = resources.files("MAISIEngine.presets").joinpath(f"{text}.json")
        return preset_from_dict(json.loads(resource.read_text()), Path(str(resource)))
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "preset.json"
    if not path.is_file():
        raise MaisiError(
            f"unknown model '{text}'",
            f"use one of {', '.join(shipped_preset_names())}, or a model directory holding preset.json",
        )
    try:
        if path.stat().st_size > MAX_PRESET_BYTES:
            raise MaisiError(f"{path} is not a model preset (larger than {MAX_PRESET_BYTES} bytes)",
                             "give a model name or a model directory holding preset.json")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise MaisiError(f"{path} is not a model preset ({exc.__class__.__name__})",
                         "give a model name or a model directory holding preset.json (valid JSON)") from None
    return preset_from_dict(raw, path)
