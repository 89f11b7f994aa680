"""The reference's CT preprocessing before 2.5D features (NV-Generate-CTMR `compute_fid_2-5d_ct.py`), with
MONAI transforms: load, channel first, RAS orientation, optional resampling (bilinear), padding with air
(-1000 HU) to the crop size, centre crop, HU clipped to [-1000, 1000].

Defaults follow the reference's documented run: 1 mm isotropic, 512^3 crop, padding on, the central 40 %
of the slices of each plane.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from MAISIEngine.errors import MaisiError

AIR_HU = -1000.0
HU_WINDOW = (-1000.0, 1000.0)


@dataclass(frozen=True)
class Preprocessing:
    """spacing None: keep each image's grid; crop None: no padding or cropping."""

    spacing: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    crop: tuple[int, int, int] | None = (512, 512, 512)
    pad: bool = True
    center_ratio: float | None = 0.4

    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing) if self.spacing else None, "center_crop": list(self.crop) if self.crop else None,
                "pad_with_air": self.pad, "center_slices_ratio": self.center_ratio,
                "hu_window": list(HU_WINDOW), "orientation": "RAS", "resampling": "bilinear"}


def load_ras(path: Path, spacing: tuple[float, float, float] | None) -> torch.Tensor:
    """(1, X, Y, Z) float tensor in RAS order, resampled when `spacing` is given."""
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation, Spacing

    steps = [LoadImage(image_only=True), EnsureChannelFirst(), Orientation(axcodes="RAS")]
    if spacing:
        steps.append(Spacing(pixdim=tuple(spacing), mode="bilinear"))
    try:
        image = Compose(steps)(str(path))
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError with a long chain
        raise MaisiError(f"cannot read {path.name} as a 3D image ({exc.__class__.__name__})",
                         "give NIfTI (.nii / .nii.gz) CT volumes") from None
    tensor = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    if tensor.ndim != 4 or tensor.shape[0] != 1:
        raise MaisiError(f"{path.name} has shape {tuple(tensor.shape[1:])} after loading, one 3D volume expected",
                         "give single-channel 3D volumes")
    return tensor


def fit_to_crop(volume: torch.Tensor, crop: tuple[int, int, int] | None, pad: bool, name: str = "image") -> torch.Tensor:
    """Pad with air up to `crop` (when `pad`), then centre-crop to it; too small without padding is refused."""
    if not crop:
        return volume
    from monai.transforms import CenterSpatialCrop, SpatialPad

    shape = tuple(int(s) for s in volume.shape[1:])
    if pad:
        volume = SpatialPad(spatial_size=tuple(crop), mode="constant", value=AIR_HU)(volume)
    elif any(s < c for s, c in zip(shape, crop)):
        raise MaisiError(f"{name} is {'x'.join(map(str, shape))} voxels after resampling, smaller than the crop "
                         f"{'x'.join(map(str, crop))}", "lower --center-crop, or drop --no-pad to pad with air as the reference does")
    return torch.as_tensor(CenterSpatialCrop(roi_size=tuple(crop))(volume))


def prepare(path: Path, settings: Preprocessing) -> torch.Tensor:
    """One CT ready for slicing: (1, X, Y, Z) in HU within the window."""
    volume = fit_to_crop(load_ras(path, settings.spacing), settings.crop, settings.pad, path.name)
    return volume.clamp(*HU_WINDOW)
