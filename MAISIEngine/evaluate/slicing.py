"""2.5D slicing: a (1, X, Y, Z) RAS volume becomes stacks of 2D slices of three planes, normalised as the
RadImageNet network expects (the reference's `get_features_2p5d` without empty-slice dropping, its default).

- axial: slices along Z (the reference's XY plane), coronal: along Y (ZX), sagittal: along X (YZ);
- with a centre ratio r, only slices int((1 - r)/2 * n) .. int((1 + r)/2 * n) - 1 of that axis;
- the slices of one plane are min-max scaled together to [0, 1] (over the whole stack, not per slice),
  repeated to 3 channels and shifted by the channel means (0.406, 0.456, 0.485) (BGR order of ImageNet's
  means, as the Keras-trained network saw them).
"""

from __future__ import annotations

import torch

PLANES = ("axial", "coronal", "sagittal")
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
"""Spatial axis (of X, Y, Z in RAS) a plane's slices are taken along."""
REFERENCE_NAMES = {"axial": "XY", "sagittal": "YZ", "coronal": "ZX"}
CHANNEL_MEANS = (0.406, 0.456, 0.485)


def central_range(length: int, ratio: float | None) -> range:
    """Indices of the slices kept along an axis of `length` slices."""
    if ratio is None:
        return range(length)
    return range(int((1.0 - ratio) / 2.0 * length), int((1.0 + ratio) / 2.0 * length))


def plane_slices(volume: torch.Tensor, plane: str, ratio: float | None = None) -> torch.Tensor:
    """(N, H, W) raw slices of `plane` from a (1, X, Y, Z) or (X, Y, Z) volume, in slice order."""
    if volume.ndim == 4:
        volume = volume[0]
    axis = PLANE_AXIS[plane]
    kept = central_range(volume.shape[axis], ratio)
    return volume.movedim(axis, 0)[kept.start: kept.stop]


def network_input(slices: torch.Tensor, low: float | None = None, high: float | None = None) -> torch.Tensor:
    """(N, 3, H, W): min-max scaled to [0, 1] by the whole stack's range (`low`, `high`; default: these
    slices' own), three channels, channel means removed."""
    low = float(slices.min()) if low is None else low
    high = float(slices.max()) if high is None else high
    unit = (slices - low) / (high - low + 1e-10)
    means = torch.tensor(CHANNEL_MEANS, dtype=unit.dtype, device=unit.device).view(1, 3, 1, 1)
    return unit.unsqueeze(1).expand(-1, 3, -1, -1) - means


@torch.no_grad()
def plane_features(volume: torch.Tensor, network: torch.nn.Module, plane: str, ratio: float | None = None,
                   batch: int = 32, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, 2048) averaged feature vectors of one plane's slices, computed `batch` slices at a time."""
    slices = plane_slices(volume, plane, ratio).float()
    low, high = float(slices.min()), float(slices.max())  # the stack's range, batches normalised alike
    parts = [network.features(network_input(slices[i: i + batch], low, high).to(device)).float().cpu()
             for i in range(0, slices.shape[0], batch)]
    return torch.cat(parts)
