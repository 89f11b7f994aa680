"""Label maps from nothing: MAISI's mask-generation model (a mask VAE and a DDPM U-Net) with anatomy-size control.

`load_mask_model("mask-ct" | "mask-demo")` loads the networks strictly; `generate_mask(model, [("liver",
0.8)], size, spacing, seed)` returns a MAISI label map on that grid with its provenance.

The names below load from their submodule on first use (PEP 562): the front ends import `anatomy` (the
ten controllable structures, their ranges and checks; standard library only) in an application whose
Python has no torch, so importing this package must not import `model` or `pipeline`.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULE_OF: dict[str, str] = {
    **dict.fromkeys(("CONTROLLABLE", "condition_vector", "parse_anatomy_sizes"), "anatomy"),
    **dict.fromkeys(("LoadedMaskModel", "MaskPreset", "load_mask_model", "load_mask_preset"), "model"),
    **dict.fromkeys(("GeneratedMask", "check_mask_grid", "generate_mask"), "pipeline"),
}

__all__ = sorted(_SUBMODULE_OF)


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
