"""Calibrate a VAE decoder's output convolution on whole volumes.

The decoder's GroupNorms normalise with the statistics of what they see, so a decoder trained on crops
reproduces intensities of whole volumes with an offset (tens of HU in soft tissue for a small VAE). Its
last layer is one linear convolution of the features before it, so it can be refitted exactly and
cheaply: run the VAE on whole volumes of the sizes that will be generated, sample voxels, and solve
for the convolution that maps their feature neighbourhoods to the true intensities, minimising a
weighted L1 (the median, like the training loss; soft tissue and bone weighted up) by iteratively reweighted
least squares. Nothing else changes, so the latent space and every later stage stay valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from MAISIEngine.errors import MaisiError
from MAISIEngine.train.data import VolumeSource, pad_to_multiple
from MAISIEngine.train.losses import SOFT_TISSUE_WINDOW_HU

IRLS_FLOOR = 2e-3
"""Residuals below this (4 HU in [0, 1] units) count as this in the L1 reweighting (keeps it stable)."""


@dataclass
class CalibrationReport:
    volumes: int
    samples: int
    weighted_l1_before: float
    weighted_l1_after: float
    rmse_before_hu: float
    rmse_after_hu: float


def output_convolution(autoencoder: nn.Module) -> nn.Conv3d:
    """The decoder's last convolution (MONAI wraps it in a MaisiConvolution / Convolution)."""
    module = autoencoder.decoder.blocks[-1]
    for _ in range(3):
        if isinstance(module, nn.Conv3d):
            return module
        module = getattr(module, "conv", None)
    raise MaisiError("the decoder does not end with a 3D convolution", "calibration supports MAISI VAEs only")


def _neighbourhoods(features: torch.Tensor, conv: nn.Conv3d, points: list[torch.Tensor]) -> torch.Tensor:
    """(N, C * k^3 + 1) rows: each sampled voxel's input neighbourhood in the conv weight's order, and 1."""
    k, p = conv.kernel_size[0], conv.padding[0]
    padded = nn.functional.pad(features, (p,) * 6)
    columns = [padded[:, points[0] + a, points[1] + b, points[2] + c]
               for a in range(k) for b in range(k) for c in range(k)]
    rows = torch.stack(columns, dim=2).permute(1, 0, 2).reshape(len(points[0]), -1)
    return torch.cat([rows, torch.ones(len(points[0]), 1, dtype=rows.dtype)], dim=1)


BONE_FROM_HU = 150.0
"""Voxels at least this bright count as bone for the calibration's weights."""


def _voxel_weights(target: torch.Tensor, soft_tissue: float, bone: float) -> torch.Tensor:
    """1 everywhere, plus `soft_tissue` inside the soft-tissue window and `bone` from 150 HU up: the two
    bands whose medians the quality check and the organ tolerances look at, and that edges and air
    would otherwise outvote."""
    lo, hi = ((w + 1000.0) / 2000.0 for w in SOFT_TISSUE_WINDOW_HU)
    bone_from = (BONE_FROM_HU + 1000.0) / 2000.0
    return 1.0 + soft_tissue * ((target > lo) & (target < hi)).double() + bone * (target >= bone_from).double()


def calibrate_output(autoencoder: nn.Module, source: VolumeSource, samples_per_volume: int = 50_000,
                     soft_tissue_weight: float = 4.0, bone_weight: float = 4.0, iterations: int = 12, seed: int = 0,
                     log: Callable[[str], None] | None = None) -> CalibrationReport:
    """Refit the output convolution in place on every volume of `source`; returns before/after figures."""
    if not source.has_images or len(source) == 0:
        raise MaisiError("calibration needs CT images", "give --data/--datalist with images, or --phantoms N")
    conv = output_convolution(autoencoder)
    if conv.bias is None:
        raise MaisiError("the decoder's output convolution has no bias", "calibration supports MAISI VAEs only")
    captured: dict[str, torch.Tensor] = {}
    hook = conv.register_forward_hook(lambda module, inputs, output: captured.__setitem__("x", inputs[0].detach()))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4447]))
    rows, targets = [], []
    device = next(autoencoder.parameters()).device
    try:
        for index in range(len(source)):
            image = source.get(index).image
            assert image is not None
            padded = pad_to_multiple(image.astype(np.float32), 4, 0.0)
            x = torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(device)
            with torch.no_grad():
                autoencoder.decode(autoencoder.encode(x)[0])
            features = captured.pop("x")[0].double().cpu()
            points = [torch.from_numpy(rng.integers(0, n, samples_per_volume)) for n in image.shape]
            rows.append(_neighbourhoods(features, conv, points).float())
            targets.append(torch.from_numpy(image)[points[0], points[1], points[2]].float())
            if log:
                log(f"calibration: volume {index + 1}/{len(source)} {tuple(image.shape)}")
    finally:
        hook.remove()
    design, target = torch.cat(rows).double(), torch.cat(targets).double()
    del rows
    base = _voxel_weights(target, soft_tissue_weight, bone_weight)
    current = torch.cat([conv.weight.detach().double().reshape(-1).cpu(), conv.bias.detach().double().cpu()])
    before = (design @ current - target).abs()
    weights, beta = base.clone(), current
    for _ in range(max(1, iterations)):
        normal = design.T @ (design * weights[:, None])
        normal += 1e-6 * normal.diagonal().mean() * torch.eye(normal.shape[0], dtype=torch.float64)
        beta = torch.linalg.solve(normal, design.T @ (weights * target))
        weights = base / (design @ beta - target).abs().clamp_min(IRLS_FLOOR)
    after = (design @ beta - target).abs()
    with torch.no_grad():
        conv.weight.copy_(beta[:-1].reshape(conv.weight.shape).to(conv.weight))
        conv.bias.copy_(beta[-1:].to(conv.bias))
    return CalibrationReport(
        volumes=len(source), samples=int(len(target)),
        weighted_l1_before=float((base * before).mean()), weighted_l1_after=float((base * after).mean()),
        rmse_before_hu=float(before.pow(2).mean().sqrt() * 2000.0), rmse_after_hu=float(after.pow(2).mean().sqrt() * 2000.0),
    )
