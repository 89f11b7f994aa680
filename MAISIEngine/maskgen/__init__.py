"""Label maps from nothing: MAISI's mask-generation model (a mask VAE and a DDPM U-Net) with anatomy-size control.

`load_mask_model("mask-ct" | "mask-demo")` loads the networks strictly; `generate_mask(model, [("liver",
0.8)], size, spacing, seed)` returns a MAISI label map on that grid with its provenance.
"""

from MAISIEngine.maskgen.anatomy import CONTROLLABLE, condition_vector, parse_anatomy_sizes
from MAISIEngine.maskgen.model import LoadedMaskModel, MaskPreset, load_mask_model, load_mask_preset
from MAISIEngine.maskgen.pipeline import GeneratedMask, check_mask_grid, generate_mask

__all__ = [
    "CONTROLLABLE",
    "GeneratedMask",
    "LoadedMaskModel",
    "MaskPreset",
    "check_mask_grid",
    "condition_vector",
    "generate_mask",
    "load_mask_model",
    "load_mask_preset",
    "parse_anatomy_sizes",
]
