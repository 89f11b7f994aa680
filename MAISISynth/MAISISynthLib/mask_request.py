"""The "Generated label map" input of both front ends: anatomy sizes chosen with sliders, as a worker job.

MAISI's mask generator is conditioned on ten sizes (`MAISIEngine.maskgen.anatomy`): five organs and five
tumor kinds, each a percentile in [0, 1] of that structure's size over the training population. The
panels show each organ as a "constrain" check box with a slider: an organ left unchecked is not named
in the job, so its size comes from the closest case of the model's size database, exactly as
`maisi masks generate` treats a structure it is not given. Tumors are one choice: none (all five asked
absent, -1, so the user can paint a tumor of their own into the map) or one kind with its size — the
model makes one tumor kind per map.

Only the standard library, `anatomy` and `grid` (themselves standard library only) are imported: the Slicer panel
computes this before the engine's packages are installed (see `boundary`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError
from MAISIEngine.maskgen import anatomy, grid

MASK_JOB = "generate-mask"
"""The worker's job kind for a generated label map (`MAISIEngine.jobs`)."""
MASK_MODELS = ("mask-demo", "mask-ct")
"""Mask-model names, the default first: the project's demo (shipped, goes with the default demo CT model)
and NVIDIA's (downloaded)."""
MODEL_FOLDER = "folder"
"""The model choice that means "a folder holding mask_preset.json" (a trained or fine-tuned model)."""
MASK_MODEL_CHOICES = (*MASK_MODELS, MODEL_FOLDER)
ORGANS: tuple[str, ...] = tuple(anatomy.ORGANS)
NO_TUMOR = "none"
TUMOR_CHOICES: tuple[str, ...] = (NO_TUMOR, *anatomy.TUMORS)
SIZE_MIN, SIZE_MAX = 0.0, 1.0
DEFAULT_SIZE = 0.5
SLIDER_STEP = 0.05
MASK_REGIONS: dict[str, str] = {
    "head-neck": "head-neck", "chest": "chest", "abdomen": "abdomen", "chest-abdomen": "chest-abdomen",
    "lower-body": "pelvis",
}
"""The panel's body regions as the mask generator names them (it centres the field of view there);
"auto" centres on the map."""


def parameter_names(organ: str) -> tuple[str, str]:
    """('maskUseLiver', 'maskSizeLiver'): the Slicer parameters of one organ's check box and slider."""
    word = "".join(part.capitalize() for part in organ.split())
    return f"maskUse{word}", f"maskSize{word}"


def structure_label(name: str) -> str:
    """'hepatic tumor' -> 'Hepatic tumor' for a panel row."""
    return name[:1].upper() + name[1:]


@dataclass(frozen=True)
class MaskRequest:
    """What the sliders say: the constrained organs' sizes (None: from the size database) and the tumor."""

    organ_sizes: Mapping[str, float | None] = field(default_factory=dict)
    tumor: str = NO_TUMOR
    tumor_size: float = DEFAULT_SIZE

    def anatomy_sizes(self) -> dict[str, float]:
        """The job's `anatomy_sizes`, checked as the engine checks them (MaisiError otherwise)."""
        if self.tumor not in TUMOR_CHOICES:
            raise MaisiError(f"'{self.tumor}' is not a tumor kind the mask generator makes",
                             f"choose one of {', '.join(TUMOR_CHOICES)}")
        pairs = [(name, float(size)) for name, size in self.organ_sizes.items() if size is not None]
        for tumor in anatomy.TUMORS:
            pairs.append((tumor, float(self.tumor_size) if tumor == self.tumor else anatomy.ABSENT_TUMOR))
        return dict(anatomy.validate_anatomy_sizes(pairs))

    def describe(self) -> str:
        """One line for a tooltip or a log: what is asked, and what is left to the size database."""
        asked = [f"{name} {size:.2f}" for name, size in self.organ_sizes.items() if size is not None]
        free = [name for name in ORGANS if self.organ_sizes.get(name) is None]
        parts = [", ".join(asked) if asked else "no organ size constrained"]
        parts.append("no tumor" if self.tumor == NO_TUMOR else f"{self.tumor} {float(self.tumor_size):.2f}")
        if free:
            parts.append(f"{', '.join(free)} from the size database")
        return "; ".join(parts)

    @classmethod
    def from_settings(cls, settings: Any) -> "MaskRequest":
        """From the Slicer parameter node (or anything with its maskUse*/maskSize*/maskTumor* attributes)."""
        sizes: dict[str, float | None] = {}
        for organ in ORGANS:
            use, size = parameter_names(organ)
            sizes[organ] = float(getattr(settings, size)) if getattr(settings, use) else None
        return cls(sizes, str(settings.maskTumor), float(settings.maskTumorSize))

    @classmethod
    def from_anatomy_sizes(cls, sizes: Mapping[str, float]) -> "MaskRequest":
        """The panel settings that ask for `sizes` (e.g. a generated map's provenance): the way back."""
        pairs = anatomy.validate_anatomy_sizes(list(sizes.items()))
        named = dict(pairs)
        tumors = [(n, s) for n, s in pairs if n in anatomy.TUMORS and s != anatomy.ABSENT_TUMOR]
        tumor, tumor_size = tumors[0] if tumors else (NO_TUMOR, DEFAULT_SIZE)
        return cls({organ: named.get(organ) for organ in ORGANS}, tumor, tumor_size)


def settings_values(request: MaskRequest) -> dict[str, Any]:
    """The Slicer parameters (maskUse*, maskSize*, maskTumor, maskTumorSize) that show `request`."""
    values: dict[str, Any] = {"maskTumor": request.tumor, "maskTumorSize": float(request.tumor_size)}
    for organ in ORGANS:
        use, size = parameter_names(organ)
        chosen = request.organ_sizes.get(organ)
        values[use] = chosen is not None
        values[size] = DEFAULT_SIZE if chosen is None else float(chosen)
    return values


def model_problem(choice: str, folder: str | Path | None) -> str | None:
    """Why the mask-model choice cannot run (checked without loading anything), or None."""
    if choice in MASK_MODELS:
        return None
    if choice != MODEL_FOLDER:
        return f"unknown mask model '{choice}': choose one of {', '.join(MASK_MODEL_CHOICES)}"
    text = str(folder or "").strip()
    if not text or text == ".":
        return "choose the mask model's folder (it holds mask_preset.json)"
    if not (Path(text).expanduser() / "mask_preset.json").is_file():
        return f"{text} holds no mask_preset.json: choose a trained mask model's folder"
    return None


def grid_problem(choice: str, folder: str | Path | None, size: tuple[int, int, int],
                 spacing: tuple[float, float, float]) -> str | None:
    """Why the map cannot be drawn on this grid with this model (the engine's own rule and words), or None."""
    problem = model_problem(choice, folder)
    if problem:
        return problem
    try:
        grid.check_model_grid(choice if choice in MASK_MODELS else str(folder), size, spacing)
    except MaisiError as exc:
        return exc.one_line()
    return None


def model_argument(choice: str, folder: str | Path | None) -> str:
    """The job's `model`: a shipped name, or the folder's path (MaisiError when the choice cannot run)."""
    problem = model_problem(choice, folder)
    if problem:
        raise MaisiError(problem, "train one with `maisi train mask-vae` / `mask-diffusion`, or choose mask-ct")
    return choice if choice in MASK_MODELS else str(Path(str(folder)).expanduser())


def generate_mask_job(
    output_dir: str | Path,
    request: MaskRequest,
    *,
    model: str,
    size: tuple[int, int, int] | None,
    spacing: tuple[float, float, float] | None,
    region: str | None = None,
    seed: int = 0,
    device: str = "auto",
    steps: int | None = None,
    attempts: int = 3,
) -> dict[str, Any]:
    """The worker's generate-mask job: a label map on the CT's grid from the requested anatomy sizes."""
    return {
        "type": "generate-mask",
        "model": str(model),
        "anatomy_sizes": request.anatomy_sizes(),
        "size": [int(v) for v in size] if size else None,
        "spacing": [float(v) for v in spacing] if spacing else None,
        "region": MASK_REGIONS.get(str(region)) if region else None,
        "seed": int(seed),
        "steps": int(steps) if steps else None,
        "attempts": int(attempts),
        "device": device,
        "output_dir": str(output_dir),
    }


def error_text(event: Mapping[str, Any]) -> str:
    """A worker's error as the dialog shows it: the engine's one-line message, then its hint."""
    message = str(event.get("message") or "the job failed")
    hint = str(event.get("hint") or "")
    return f"{message}\n\n{hint}" if hint else message
