"""The paper's inpainting ControlNet at inference: load it, and build its 10-channel condition.

The condition matches what `maisi train controlnet --task inpaint` trains on (see
`MAISIEngine.train.controlnet.inpaint_condition`): the image in [0, 1] blanked inside the region to
paint, the region itself, and the 8 bit-planes of the tumor label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.apps.generation.maisi.networks.controlnet_maisi import ControlNetMaisi

from MAISIEngine.errors import MaisiError
from MAISIEngine.masks import label_bitplanes
from MAISIEngine.models import LoadedModel
from MAISIEngine.networks import extract_checkpoint, load_state_dict_strict, read_checkpoint_file
from MAISIEngine.onednn_conv import use_onednn_convolutions
from MAISIEngine.presets import Preset

SECTION = "inpaint_controlnet"
INPAINT_CHANNELS = 10


def has_inpaint_controlnet(preset_raw: dict) -> bool:
    return bool(preset_raw.get(SECTION))


def inpaint_network_kwargs(preset: Preset) -> dict[str, Any]:
    """The inpainting ControlNet: as the preset's section says, else its ControlNet with a 10-channel input."""
    section = preset.raw.get(SECTION) or {}
    if section.get("network"):
        return dict(section["network"])
    return {**preset.controlnet, "conditioning_embedding_in_channels": INPAINT_CHANNELS}


def build_inpaint_controlnet(preset: Preset, device: torch.device | str = "cpu") -> ControlNetMaisi:
    """The network alone (random weights); training and inference both build it here."""
    kwargs = inpaint_network_kwargs(preset)
    if torch.device(device).type != "cuda":
        kwargs["use_flash_attention"] = False
    return use_onednn_convolutions(ControlNetMaisi(**kwargs))


def load_inpaint_controlnet(model: LoadedModel) -> torch.nn.Module:
    """Build the inpainting ControlNet the preset describes and load its weights strictly."""
    from MAISIEngine.weights.resolve import resolve_model_file

    section = model.preset.raw.get(SECTION)
    if not section:
        raise MaisiError(f"model '{model.preset.name}' has no inpainting ControlNet",
                         "use --method controlnet-repaint, or train one with `maisi train controlnet --task inpaint`")
    network = build_inpaint_controlnet(model.preset, model.device)
    path = resolve_model_file(model.preset, str(section["weights"]), "inpainting ControlNet")
    checkpoint = extract_checkpoint(read_checkpoint_file(path), "controlnet")
    load_state_dict_strict(network, checkpoint.state_dict, "inpainting ControlNet")
    return network.to(model.device).eval()


def inpaint_conditions(image_unit: torch.Tensor, region: np.ndarray, tumor: np.ndarray, tumor_id: int,
                       device: torch.device) -> torch.Tensor:
    """(1, 10, X, Y, Z): image blanked in `region`, the region, the tumor label's bit-planes."""
    region_t = torch.from_numpy(region.astype(np.float32))[None, None]
    tumor_labels = torch.from_numpy(np.where(tumor, tumor_id, 0).astype(np.int64))[None, None]
    image = image_unit.float().cpu()
    condition = torch.cat([image * (1.0 - region_t), region_t, label_bitplanes(tumor_labels)], dim=1)
    return condition.to(device)
