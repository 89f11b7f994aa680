"""Conditioning tensors of the MAISI diffusion models: spacing, body region and modality.

MAISI scales every conditioning value by 100 (spacing in mm x 100, one-hots x 100); the rflow model
also takes a modality class (ct = 1, ct_wo_contrast = 2, ct_contrast = 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.presets import Preset

CONDITION_SCALE = 100.0


def spacing_tensor(spacing: Sequence[float], batch: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 3) tensor of voxel spacing in mm x 100."""
    values = torch.tensor([float(s) for s in spacing], dtype=torch.float32, device=device)
    return (values * CONDITION_SCALE).unsqueeze(0).repeat(batch, 1)


def parse_regions(text: str | Sequence[str] | None) -> list[str] | None:
    """'chest-abdomen', 'chest,abdomen' or a list -> validated region names, top to bottom."""
    if text is None:
        return None
    items: list[str] = []
    raw = [text] if isinstance(text, str) else list(text)
    for entry in raw:
        for part in entry.replace(",", " ").replace("+", " ").split():
            part = part.strip().lower()
            if part in maisi_labels.REGION_NAMES:
                items.append(part)
            elif part == "chest-abdomen":
                items += ["chest", "abdomen"]
            else:
                pieces = part.split("-")
                if not all(p in maisi_labels.REGION_NAMES for p in pieces):
                    raise MaisiError(
                        f"unknown body region '{part}'",
                        f"use {', '.join(maisi_labels.REGION_NAMES)} (join two with '+', e.g. chest+abdomen)",
                    )
                items += pieces
    ordered = [r for r in maisi_labels.REGION_NAMES if r in items]
    return ordered or None


def regions_from_labels(label_ids: Iterable[int]) -> list[str]:
    """Regions whose marker organs appear in the mask; abdomen when none does (the commonest field)."""
    return maisi_labels.regions_present(set(label_ids)) or ["abdomen"]


def region_tensors(
    regions: Sequence[str], batch: int = 1, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top and bottom region one-hots (B, 4) x 100, from the top-most and bottom-most region covered."""
    index = [maisi_labels.REGION_NAMES.index(r) for r in regions]
    top = torch.zeros(batch, 4, device=device)
    bottom = torch.zeros(batch, 4, device=device)
    top[:, min(index)] = CONDITION_SCALE
    bottom[:, max(index)] = CONDITION_SCALE
    return top, bottom


CT_MODALITIES = ("ct", "ct_wo_contrast", "ct_contrast")
"""The modality classes a CT model takes (ids 1, 2, 3 of the reference's modality mapping)."""


def check_modality(preset: Preset, modality: str | None) -> str | None:
    """The modality class name to condition on: the user's choice, validated, or the preset's default.

    None for models without class embeddings; asking such a model for a modality is refused.
    """
    takes_class = bool(preset.modality and preset.diffusion_unet.get("num_class_embeds"))
    if modality is None:
        return preset.modality if takes_class else None
    if not takes_class:
        raise MaisiError(f"model {preset.name} takes no modality class, so --modality {modality} cannot apply",
                         "leave --modality out for this model")
    choices = CT_MODALITIES if preset.modality in CT_MODALITIES else tuple(maisi_labels.modality_ids())
    if modality not in choices:
        raise MaisiError(f"unknown modality '{modality}' for model {preset.name}", f"use one of {', '.join(choices)}")
    return modality


def modality_tensor(preset: Preset, batch: int = 1, device: torch.device | str = "cpu",
                    modality: str | None = None) -> torch.Tensor | None:
    """(B,) long tensor of the modality class (the preset's unless given), or None for models without
    class embeddings."""
    name = check_modality(preset, modality)
    if name is None:
        return None
    ids = maisi_labels.modality_ids()
    if name not in ids:
        raise MaisiError(f"unknown modality '{name}'", f"use one of {', '.join(ids)}")
    return torch.full((batch,), ids[name], dtype=torch.long, device=device)
