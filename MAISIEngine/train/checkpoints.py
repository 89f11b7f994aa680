"""Training state (resume) and the finished model directory (official layouts + fp16 safetensors).

A training state holds everything a resumed run needs to continue identically: network and optimizer
states, the step, the learning-rate schedule position, RNG states and the settings that must not
change. It is written with `torch.save` of tensors and plain values only, so it loads with
`weights_only=True`. The model directory is what `maisi generate --model DIR` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from MAISIEngine.errors import MaisiError
from MAISIEngine.inpaint_controlnet import SECTION
from MAISIEngine.io.atomic import atomic_path, write_text_atomic
from MAISIEngine.modeldir import OFFICIAL_NAMES, SAFETENSORS_NAMES, save_official_layout
from MAISIEngine.networks import load_state_dict_strict, read_checkpoint_file, extract_checkpoint
from MAISIEngine.presets import Preset, load_preset, preset_from_dict

STATE_FORMAT = "maisi-train-state/1"
INPAINT_KEY = SECTION
"""Preset section describing the inpainting ControlNet (its network, condition and weight file)."""
INPAINT_NAMES = {"official": "controlnet_inpaint.pt", "safetensors": "controlnet_inpaint.safetensors"}


def state_path(out_dir: Path, stage_key: str) -> Path:
    return Path(out_dir) / "checkpoints" / f"{stage_key}_state.pt"


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_training_state(path: Path, *, step: int, models: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer], signature: dict[str, Any],
                        extra: dict[str, Any], device: torch.device, averages: dict[str, Any] | None = None) -> None:
    """Atomically write the state after `step` completed steps (with the weight averages of `--ema-decay`)."""
    payload = {
        "format": STATE_FORMAT,
        "step": int(step),
        "models": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in models.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "signature": json.dumps(signature, sort_keys=True),
        "extra": extra,
        "rng": rng_state(device),
    }
    if averages is not None:
        payload["averages"] = averages
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_training_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MaisiError(f"no training state to resume at {path}",
                         "run without --resume to start, or give the --out folder of the interrupted run")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file or a foreign pickle
        raise MaisiError(f"cannot read training state {path.name}: {exc.__class__.__name__}",
                         "the file is damaged; start again without --resume") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise MaisiError(f"{path.name} is not a training state of this program", "start again without --resume")
    return payload


def check_signature(saved: str, current: dict[str, Any]) -> None:
    """Refuse to resume with settings that would change the continuation (seed, batch, crop size...)."""
    before = json.loads(saved)
    changed = sorted(k for k in set(before) | set(current) if before.get(k) != current.get(k))
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)} -> {current.get(k)}" for k in changed)
        raise MaisiError(f"--resume with different settings than the interrupted run ({detail})",
                         "resume with the same options, or start a new run in another --out folder")


def apply_training_state(payload: dict[str, Any], models: dict[str, torch.nn.Module],
                         optimizers: dict[str, torch.optim.Optimizer], device: torch.device) -> int:
    for key, model in models.items():
        load_state_dict_strict(model, payload["models"][key], key)
    for key, optimizer in optimizers.items():
        optimizer.load_state_dict(payload["optimizers"][key])
    restore_rng(payload.get("rng", {}), device)
    return int(payload["step"])


# ----------------------------------------------------------------------------------------------- model dir


def model_preset(out_dir: Path) -> Preset | None:
    path = Path(out_dir) / "preset.json"
    return load_preset(path) if path.is_file() else None


def write_role(out_dir: Path, base: Preset, role: str, model: torch.nn.Module,
               scale_factor: float | None = None) -> Path:
    """Save one trained network in its official layout and record it in the directory's preset.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    filename = OFFICIAL_NAMES[role]
    save_official_layout(out_dir / filename, role, model, scale_factor)
    existing = model_preset(out_dir)
    raw = (existing or base).to_dict()
    weights = dict(raw.get("weights", {})) if existing is not None else {}
    weights[role] = filename
    raw.update({"weights_source": "directory", "weights": weights})
    if existing is None:
        raw["name"] = out_dir.resolve().name
        raw.pop(INPAINT_KEY, None)  # the base's inpainting ControlNet is not in this folder (until carried)
    write_text_atomic(out_dir / "preset.json", json.dumps(raw, indent=2))
    return out_dir / filename


def write_inpaint_role(out_dir: Path, base: Preset, network_kwargs: dict[str, Any], model: torch.nn.Module,
                       condition: dict[str, Any]) -> Path:
    """Save the inpainting ControlNet and describe it under `inpaint_controlnet` in preset.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    filename = INPAINT_NAMES["official"]
    save_official_layout(out_dir / filename, "controlnet", model)
    existing = model_preset(out_dir)
    raw = (existing or base).to_dict()
    if existing is None:
        raw.update({"name": out_dir.resolve().name, "weights_source": "directory", "weights": {}})
    raw[INPAINT_KEY] = {"network": dict(network_kwargs), "weights": filename, "condition": condition}
    write_text_atomic(out_dir / "preset.json", json.dumps(raw, indent=2))
    return out_dir / filename


def export_safetensors(model_dir: Path, dest: Path, dtype: torch.dtype = torch.float16,
                       name: str | None = None) -> dict[str, Path]:
    """Copy a model directory's weights to safetensors (fp16 for shipping), scale factor in the metadata.

    `dest` becomes a model directory of its own (its preset.json points at the safetensors files).
    """
    from safetensors.torch import save_file

    model_dir, dest = Path(model_dir), Path(dest)
    preset = model_preset(model_dir)
    if preset is None:
        raise MaisiError(f"{model_dir} holds no preset.json", "train at least one stage into it first")
    dest.mkdir(parents=True, exist_ok=True)
    raw = preset.to_dict()
    written: dict[str, Path] = {}
    weights: dict[str, str] = {}
    jobs = [(role, model_dir / filename, SAFETENSORS_NAMES[role]) for role, filename in preset.weights.items()]
    inpaint = raw.get(INPAINT_KEY)
    if inpaint:
        jobs.append(("controlnet_inpaint", model_dir / inpaint["weights"], INPAINT_NAMES["safetensors"]))
    for role, source, target_name in jobs:
        layout = "controlnet" if role.startswith("controlnet") else role
        checkpoint = extract_checkpoint(read_checkpoint_file(source), layout)
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in checkpoint.state_dict.items()}
        metadata = {"role": role, "format": "maisi-safetensors/1"}
        if checkpoint.scale_factor is not None:
            metadata["scale_factor"] = repr(float(checkpoint.scale_factor))
        with atomic_path(dest / target_name) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        written[role] = dest / target_name
        if role in SAFETENSORS_NAMES:
            weights[role] = target_name
    raw.update({"weights_source": "directory", "weights": weights})
    if inpaint:
        raw[INPAINT_KEY] = dict(inpaint, weights=INPAINT_NAMES["safetensors"])
    if name:
        raw["name"] = name
    preset_from_dict(raw)  # validate before writing
    write_text_atomic(dest / "preset.json", json.dumps(raw, indent=2))
    return written
