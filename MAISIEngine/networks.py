"""Build the three MONAI MAISI networks from a preset and load their weights strictly.

The networks are MONAI's own classes (`AutoencoderKlMaisi`, `DiffusionModelUNetMaisi`,
`ControlNetMaisi`): official checkpoints load only into those exact hyper-parameters. Loading is strict
(a key mismatch names the keys) and safe (`torch.load(weights_only=True)` or safetensors only).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi
from monai.apps.generation.maisi.networks.controlnet_maisi import ControlNetMaisi
from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi

from MAISIEngine.errors import MaisiError
from MAISIEngine.onednn_conv import use_onednn_convolutions
from MAISIEngine.presets import Preset

STATE_DICT_KEYS: dict[str, tuple[str, ...]] = {
    "autoencoder": ("unet_state_dict", "state_dict", "autoencoder_state_dict"),
    "diffusion_unet": ("unet_state_dict", "state_dict"),
    "controlnet": ("controlnet_state_dict", "state_dict"),
    "mask_autoencoder": ("state_dict", "autoencoder_state_dict", "unet_state_dict"),
    "mask_diffusion_unet": ("unet_state_dict", "state_dict"),
}
"""Where each official layout keeps its state dict (the VAE file is often a raw state dict)."""


def _with_device_options(kwargs: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """MONAI's flash attention raises on CPU: enable it only where CUDA runs the network."""
    out = dict(kwargs)
    if "use_flash_attention" in out and torch.device(device).type != "cuda":
        out["use_flash_attention"] = False
    return out


def build_autoencoder(preset: Preset, device: torch.device | str = "cpu") -> AutoencoderKlMaisi:
    return AutoencoderKlMaisi(**_with_device_options(preset.autoencoder, device))


def build_diffusion_unet(preset: Preset, device: torch.device | str = "cpu") -> DiffusionModelUNetMaisi:
    return DiffusionModelUNetMaisi(**_with_device_options(preset.diffusion_unet, device))


def build_controlnet(preset: Preset, device: torch.device | str = "cpu") -> ControlNetMaisi:
    return ControlNetMaisi(**_with_device_options(preset.controlnet, device))


BUILDERS = {
    "autoencoder": build_autoencoder,
    "diffusion_unet": build_diffusion_unet,
    "controlnet": build_controlnet,
}


def build_network(role: str, preset: Preset, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Build one network of the preset by role name (its CPU inference convolutions on oneDNN)."""
    return use_onednn_convolutions(BUILDERS[role](preset, device))


@dataclass
class Checkpoint:
    """A state dict plus the extras an official checkpoint carries (e.g. the latent scale factor)."""

    state_dict: dict[str, torch.Tensor]
    scale_factor: float | None = None
    metadata: dict[str, str] | None = None


class UnsafeCheckpointError(MaisiError):
    """The file needs arbitrary code to unpickle and was refused."""


SAFETENSORS_MAX_HEADER = 100 << 20
"""The JSON header of a safetensors file is at most 100 MB (the format's own reader refuses more)."""


def check_safetensors_header(path: Path) -> None:
    """Refuse a safetensors file whose 8-byte header length is absurd, before anything reads the header."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
    length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
    if length < 2 or length > SAFETENSORS_MAX_HEADER or length + 8 > size:
        raise MaisiError(f"{path.name} is not a valid safetensors file (header length {length}, file size {size})",
                         "the file is damaged or not a weight file; copy or export it again")


def read_checkpoint_file(path: str | Path) -> Any:
    """Read a `.pt`/`.pth` with `weights_only=True`, or a `.safetensors` file, refusing anything else."""
    path = Path(path)
    if not path.is_file():
        raise MaisiError(f"weight file {path} does not exist", "check the path or run `maisi weights download`")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        check_safetensors_header(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
                return {"__safetensors__": tensors, "__metadata__": dict(handle.metadata() or {})}
        except Exception as exc:  # noqa: BLE001 - SafetensorError and friends for damaged files
            raise MaisiError(f"cannot read weight file {path.name} ({exc.__class__.__name__})",
                             "the file is damaged; copy or export it again") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError (or RuntimeError wrapping it) for unsafe pickles
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "Unpickl" in type(exc).__name__:
            raise UnsafeCheckpointError(
                f"refused to load {path.name}: it holds Python objects that would run code when unpickled",
                "only tensor checkpoints load (torch.save of a state dict, or safetensors); re-save it from a trusted source",
            ) from None
        raise MaisiError(f"cannot read weight file {path.name}: {exc}", "the file may be truncated; download it again") from None


def extract_checkpoint(raw: Any, role: str) -> Checkpoint:
    """Find the state dict of `role` in any of the official layouts (or our safetensors layout)."""
    if isinstance(raw, Mapping) and "__safetensors__" in raw:
        meta = dict(raw.get("__metadata__") or {})
        scale = float(meta["scale_factor"]) if "scale_factor" in meta else None
        return Checkpoint(dict(raw["__safetensors__"]), scale, meta)
    if not isinstance(raw, Mapping):
        raise MaisiError(f"the {role} checkpoint is not a dictionary of tensors", "use an official MAISI checkpoint")
    scale = raw.get("scale_factor")
    scale_value = float(scale.item() if isinstance(scale, torch.Tensor) else scale) if scale is not None else None
    for key in STATE_DICT_KEYS[role]:
        if key in raw and isinstance(raw[key], Mapping):
            return Checkpoint(dict(raw[key]), scale_value)
    if all(isinstance(v, torch.Tensor) for v in raw.values()):
        return Checkpoint(dict(raw), scale_value)
    raise MaisiError(
        f"the {role} checkpoint has none of the keys {list(STATE_DICT_KEYS[role])}",
        "use the official file for this role (see `maisi weights list`)",
    )


_LEGACY_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    # MONAI generative (< 1.4) attention blocks: to_q/to_k/to_v/proj_attn directly under the block.
    (re.compile(r"(attentions\.\d+|attention)\.to_(q|k|v)\.(weight|bias)$"), r"\1.attn.to_\2.\3"),
    (re.compile(r"(attentions\.\d+|attention)\.proj_attn\.(weight|bias)$"), r"\1.attn.out_proj.\2"),
    # Same drift in the autoencoder's non-local attention.
    (re.compile(r"(blocks\.\d+)\.to_(q|k|v)\.(weight|bias)$"), r"\1.attn.to_\2.\3"),
    (re.compile(r"(blocks\.\d+)\.proj_attn\.(weight|bias)$"), r"\1.attn.out_proj.\2"),
)


def remap_legacy_keys(state_dict: Mapping[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Rename keys written by older MONAI versions to the current names, only where that makes them match."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        if key not in expected:
            for pattern, replacement in _LEGACY_RENAMES:
                candidate = pattern.sub(replacement, key)
                if candidate != key and candidate in expected:
                    new_key = candidate
                    break
        out[new_key] = value
    return out


def drop_absent_out_proj(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`include_fc=False` models have an identity out_proj: checkpoints written with it keep no weights.

    The reverse (a model that expects out_proj weights the file lacks) is a real mismatch and stays one.
    """
    expected = set(model.state_dict())
    return {k: v for k, v in state_dict.items() if k in expected or ".attn.out_proj." not in k}


def describe_mismatch(role: str, missing: list[str], unexpected: list[str]) -> str:
    def short(keys: list[str]) -> str:
        head = ", ".join(keys[:5])
        return head + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {short(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {short(unexpected)}")
    return f"the {role} weights do not fit the preset's architecture ({'; '.join(parts)})"


def load_state_dict_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], role: str) -> None:
    """Load with exact key matching after the known legacy renames; a mismatch names the keys."""
    expected = set(model.state_dict())
    remapped = drop_absent_out_proj(remap_legacy_keys(state_dict, expected), model)
    missing = sorted(expected - set(remapped))
    unexpected = sorted(set(remapped) - expected)
    if missing or unexpected:
        raise MaisiError(
            describe_mismatch(role, missing, unexpected),
            "use weights trained for this preset, or the preset the weights were trained with",
        )
    model_state = model.state_dict()
    shape_errors = [k for k, v in remapped.items() if tuple(v.shape) != tuple(model_state[k].shape)]
    if shape_errors:
        k = shape_errors[0]
        raise MaisiError(
            f"the {role} weights do not fit the preset's architecture: {k} has shape "
            f"{tuple(remapped[k].shape)}, the network expects {tuple(model_state[k].shape)}"
            + (f" ({len(shape_errors) - 1} more)" if len(shape_errors) > 1 else ""),
            "use weights trained for this preset, or the preset the weights were trained with",
        )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in remapped.items()}, strict=True)


def load_network(
    role: str, preset: Preset, path: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, Checkpoint]:
    """Build the network of `role` and load its weights from `path` strictly; returns it in eval mode."""
    checkpoint = extract_checkpoint(read_checkpoint_file(path), role)
    model = build_network(role, preset, device)
    load_state_dict_strict(model, checkpoint.state_dict, role)
    return model.to(device).eval(), checkpoint


def init_controlnet_from_unet(controlnet: torch.nn.Module, unet: torch.nn.Module) -> int:
    """Copy the U-Net weights the ControlNet shares (its encoder half) before loading ControlNet weights.

    Returns the number of tensors copied. This is how MAISI initialises a ControlNet for training.
    """
    unet_state = unet.state_dict()
    own = controlnet.state_dict()
    shared = {k: v for k, v in unet_state.items() if k in own and own[k].shape == v.shape}
    controlnet.load_state_dict(shared, strict=False)
    return len(shared)


def save_safetensors(
    path: str | Path, model: torch.nn.Module, metadata: dict[str, str] | None = None, dtype: torch.dtype | None = None
) -> None:
    """Write a state dict as safetensors (optionally cast, e.g. fp16 for shipping) atomically."""
    from safetensors.torch import save_file

    from MAISIEngine.io.atomic import atomic_path

    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=metadata or {})


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
