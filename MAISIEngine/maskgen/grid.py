"""The grids a mask model can fill: the reference's input check, on the `accepts` table of its preset.

Standard library only: the front ends run this check beside the anatomy-size sliders, before a worker
starts, with the rule and the message the engine itself applies (`pipeline.check_mask_grid`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError

PRESET_FILE = "mask_preset.json"


def check_grid(name: str, accepts: Mapping[str, Any], size: Sequence[int], spacing: Sequence[float]) -> None:
    """Refuse a grid the model's output cannot fill sensibly (MaisiError naming what it takes)."""
    acc = accepts
    size = [int(s) for s in size]
    spacing = [float(s) for s in spacing]
    if len(size) != 3 or len(spacing) != 3 or min(size) < 1 or min(spacing) <= 0:
        raise MaisiError(f"size {size} / spacing {spacing} is not a 3-D grid", "give three sizes and three spacings")
    hint = (f"mask model '{name}' takes X = Y in {acc['size_xy']}, Z in {acc['size_z']}, "
            f"spacing X = Y in [{acc['spacing_xy'][0]}, {acc['spacing_xy'][1]}] mm, Z in "
            f"[{acc['spacing_z'][0]}, {acc['spacing_z'][1]}] mm, X field of view >= {acc['min_fov_xy_mm']:g} mm")
    problems = []
    if size[0] != size[1] or size[0] not in acc["size_xy"] or size[2] not in acc["size_z"]:
        problems.append(f"size {'x'.join(map(str, size))}")
    if spacing[0] != spacing[1] or not acc["spacing_xy"][0] <= spacing[0] <= acc["spacing_xy"][1] \
            or not acc["spacing_z"][0] <= spacing[2] <= acc["spacing_z"][1]:
        problems.append(f"spacing {'x'.join(f'{s:g}' for s in spacing)} mm")
    if not problems and size[0] * spacing[0] < float(acc["min_fov_xy_mm"]):
        problems.append(f"field of view {size[0] * spacing[0]:g} mm across")
    if problems:
        raise MaisiError(f"the grid ({', '.join(problems)}) is not one the mask model accepts", hint)


def preset_document(model: str | Path) -> dict[str, Any]:
    """A mask preset's JSON by shipped name (mask-ct, mask-demo) or from a folder holding mask_preset.json."""
    text = str(model)
    shipped = resources.files("MAISIEngine.maskgen").joinpath("presets", f"{text}.json")
    path: Any = shipped if "/" not in text and "\\" not in text and shipped.is_file() else Path(text).expanduser()
    if isinstance(path, Path) and path.is_dir():
        path = path / PRESET_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise MaisiError(f"unknown mask model '{text}'", f"use mask-ct, mask-demo, or a folder holding {PRESET_FILE}") \
            from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MaisiError(f"cannot read mask preset {path}: {exc}", "the file must be valid JSON") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("accepts"), dict):
        raise MaisiError(f"mask preset {path} has no 'accepts' table", "start from a shipped mask preset")
    return raw


def check_model_grid(model: str | Path, size: Sequence[int], spacing: Sequence[float]) -> None:
    """`check_grid` for a mask model named as the job names it (MaisiError when the grid or preset is bad)."""
    raw = preset_document(model)
    check_grid(str(raw.get("name", model)), raw["accepts"], size, spacing)
