"""Generation settings as the front ends collect them: checked against the preset, turned into jobs.

The checks repeat, before anything runs, what the engine would refuse (sizes the architecture cannot
take) and what it would warn about (sizes, spacings and fields of view the model was not trained on),
so the user sees it next to the spin boxes instead of after a model has loaded.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MAISIEngine import geometry as engine_geometry
from MAISIEngine.errors import MaisiError
from MAISIEngine.presets import Preset

from .geometry import field_of_view_mm

MODEL_CHOICES = ("demo", "rflow-ct", "ddpm-ct")
DEVICE_CHOICES = ("auto", "cuda", "cpu")
REGION_CHOICES = ("auto", "head-neck", "chest", "abdomen", "lower-body", "chest-abdomen")
"""Body regions a user can name; "auto" lets the engine read them from the labels present."""
TEMPLATE_REGIONS = ("chest-abdomen", "chest", "abdomen")
"""Body regions of the phantom templates the engine draws."""
MAX_SEED = 2**31 - 1
MODALITY_CHOICES = ("ct", "ct_wo_contrast", "ct_contrast")
"""Modality classes of models that take one (rflow-ct); None in a job means the model's default (ct)."""


@dataclass
class SettingsCheck:
    """What is wrong (refused: generation cannot start) and what is risky (allowed, with a warning)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What will happen that the user did not ask for (allowed, shown as information)."""
    fitted_grid: tuple[tuple[int, int, int], tuple[float, float, float]] | None = None
    """The grid a label map will be fitted to, when the given one is not a grid the model takes."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        return "\n".join([*self.errors, *self.notes, *self.warnings])


def accepted_grid_text(preset: Preset) -> str:
    """The sizes a model takes, in words: 'x = y in 256, 384, 512 and z 128..768 in steps of 128'."""
    axes = engine_geometry.accepted_sizes
    xy, z = axes(preset, 0), axes(preset, 2)
    if preset.trained_on.get("size_xy"):
        xy_text = "x = y in " + ", ".join(str(v) for v in xy)
    else:
        xy_text = f"x and y {xy[0]}..{xy[-1]}"
    step = z[1] - z[0] if len(z) > 1 else preset.size_divisor
    return f"{xy_text} and z {z[0]}..{z[-1]} in steps of {step}"


def grid_text(size: tuple[int, int, int], spacing: tuple[float, float, float]) -> str:
    """'384 x 384 x 256 at 1 x 1 x 2 mm' (one spacing when isotropic: 'at 1.5 mm')."""
    values = [f"{round(float(v), 3):g}" for v in spacing]
    at = values[0] if len(set(values)) == 1 else " x ".join(values)
    return f"{' x '.join(str(int(v)) for v in size)} at {at} mm"


def check_size_and_spacing(
    preset: Preset, size: tuple[int, int, int], spacing: tuple[float, float, float], *, label_map: bool = False
) -> SettingsCheck:
    """The engine's own checks: refused sizes/spacings become errors, out-of-training ranges warnings.

    With `label_map`, the grid is that of a label map input: a size the model does not take is not an
    error, because the engine fits such a grid to the nearest one it takes covering the same field of
    view (`geometry.nearest_accepted_grid`, the rule the engine itself applies); the check then says
    so and carries the fitted grid. A spacing out of range is refused either way.
    """
    check = SettingsCheck()
    try:
        spacing = engine_geometry.check_spacing([float(v) for v in spacing])
    except MaisiError as exc:
        check.errors.append(exc.one_line())
        return check
    try:
        size = engine_geometry.check_size(preset, [int(v) for v in size])
    except MaisiError as exc:
        if not (label_map and len(size) == 3 and all(int(v) > 0 for v in size)):
            check.errors.append(exc.one_line())
            return check
        size, spacing = engine_geometry.nearest_accepted_grid(preset, [int(v) for v in size], spacing)
        check.fitted_grid = (size, spacing)
        check.notes.append(f"the model takes {accepted_grid_text(preset)}; "
                           f"the label map will be fitted to {grid_text(size, spacing)}")
    check.warnings.extend(engine_geometry.range_warnings(preset, size, spacing))
    return check


def field_of_view_text(size: tuple[int, int, int], spacing: tuple[float, float, float]) -> str:
    """'384 x 384 x 256 mm': what the CT will cover."""
    return " x ".join(f"{v:.0f}" for v in field_of_view_mm(size, spacing)) + " mm"


def random_seed() -> int:
    """A seed for the dice button (cryptographic source: two clicks never repeat a pattern)."""
    return secrets.randbelow(MAX_SEED)


def generate_job(
    model: str,
    output_dir: str | Path,
    *,
    mask: str | Path | None = None,
    template_region: str | None = None,
    size: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    region: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    device: str = "auto",
    modality: str | None = None,
) -> dict[str, Any]:
    """The worker's generate job: from a label map file, or from a phantom template when `mask` is None."""
    if mask is None and template_region is None:
        raise ValueError("a generate job needs a mask or a template region")
    template = None if mask is not None else {"kind": "phantom", "region": template_region, "seed": int(seed)}
    job = {
        "type": "generate",
        "model": str(model),
        "mask": str(mask) if mask is not None else None,
        "template": template,
        "size": [int(v) for v in size] if size else None,
        "spacing": [float(v) for v in spacing] if spacing else None,
        "region": None if region in (None, "", "auto") else region,
        "seed": int(seed),
        "steps": int(steps) if steps else None,
        "device": device,
        "output_dir": str(output_dir),
        "format": "nifti",
    }
    if modality:
        job["modality"] = str(modality)
    return job


def inpaint_job(
    model: str,
    output_dir: str | Path,
    *,
    image: str | Path,
    labels: str | Path,
    tumor: str | Path,
    tumor_type: str,
    seed: int = 0,
    steps: int | None = None,
    device: str = "auto",
    margin_mm: float = 10.0,
    method: str | None = None,
    modality: str | None = None,
) -> dict[str, Any]:
    """The worker's inpaint job: a CT, its MAISI label map and a tumor mask painted on the same grid."""
    job: dict[str, Any] = {
        "type": "inpaint",
        "model": str(model),
        "image": str(image),
        "labels": str(labels),
        "tumor": str(tumor),
        "tumor_type": tumor_type,
        "margin_mm": float(margin_mm),
        "seed": int(seed),
        "steps": int(steps) if steps else None,
        "device": device,
        "output_dir": str(output_dir),
        "format": "nifti",
    }
    if method:
        job["method"] = method
    if modality:
        job["modality"] = str(modality)
    return job


def phantom_job(region: str, size: tuple[int, int, int], spacing: tuple[float, float, float], seed: int,
                output_dir: str | Path) -> dict[str, Any]:
    """The worker's phantom job: a procedural torso label map to start drawing from."""
    return {
        "type": "phantom",
        "region": region,
        "size": [int(v) for v in size],
        "spacing": [float(v) for v in spacing],
        "seed": int(seed),
        "output_dir": str(output_dir),
    }


def download_job(model: str) -> dict[str, Any]:
    return {"type": "download", "model": str(model)}


@dataclass(frozen=True)
class WeightsSummary:
    ready: bool
    downloadable: bool
    text: str


def weights_summary(model: str) -> WeightsSummary:
    """Whether a model's weight files are on this machine (no hashing: fast enough for a combo box)."""
    from MAISIEngine.presets import load_preset
    from MAISIEngine.weights.resolve import weights_status  # a contract module: no filelock, tqdm or torch

    try:
        preset = load_preset(model)
        states = weights_status(preset)
    except MaisiError as exc:
        return WeightsSummary(False, False, exc.message)
    downloadable = preset.weights_source == "official"
    missing = [role.replace("_", " ") for role, state in states.items() if not state.present]
    if missing:
        return WeightsSummary(False, downloadable, f"weights missing: {', '.join(missing)}")
    if all(state.verified for state in states.values()):
        return WeightsSummary(True, downloadable, "weights verified")
    return WeightsSummary(True, downloadable, "weights present")
