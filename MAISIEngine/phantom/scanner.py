"""How a CT scanner sees the phantom: partial volume over each voxel, a point spread, then noise.

A scanner never point-samples: each voxel reports the mean attenuation over its footprint, blurred
by the system's point spread. Sampling the tissue map at voxel centres instead leaves 1000 HU steps
one voxel wide and aliased thin structures (fat septa, lung vessels, cortical shells) that no CT at
that spacing shows, and that no autoencoder compressing 4x per axis can reproduce. So the phantom's
materials are painted on a grid `supersample` times finer per axis, averaged over each voxel, and
blurred by a Gaussian whose full width at half maximum defaults to the voxel spacing (a CT
reconstructed with slice thickness equal to the spacing). The Gaussian alone passes about 0.4 of the
contrast at the Nyquist frequency, less with the voxel average on top, so the image is band-limited
the way real reconstructions are.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from MAISIEngine.phantom.fields import SmoothField
from MAISIEngine.phantom.tissue import COARSE_TEXTURE, FINE_TEXTURE, HU, TEXTURE, T

Axes = tuple[np.ndarray, np.ndarray, np.ndarray]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
SLAB_VOXELS = 1 << 24
"""Fine voxels painted at once: bounds the memory of large volumes (paint keeps a few float arrays)."""

MATERIAL_TABLES = np.stack([HU, TEXTURE, (np.arange(len(HU)) == T["lung"]).astype(np.float32)])
"""Per tissue: nominal HU, texture amplitude, and 1 for lung parenchyma (its gravity gradient)."""


def fine_axis(axis: np.ndarray, factor: int) -> np.ndarray:
    """Centres of `factor` equal sub-intervals of each voxel of an evenly spaced axis."""
    if factor == 1:
        return axis
    step = float(axis[1] - axis[0]) if axis.size > 1 else 1.0
    offsets = (np.arange(factor) - (factor - 1) / 2.0) * step / factor
    return (axis[:, None] + offsets[None, :]).ravel()


Materials = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Per voxel: mean nominal HU, mean texture amplitude, lung fraction (float32 arrays)."""


def point_materials(tissue: np.ndarray) -> Materials:
    """The materials of a tissue map sampled at voxel centres (no partial volume)."""
    hu, texture, lung = MATERIAL_TABLES[:, tissue]
    return hu, texture, lung


def material_means(
    paint_tissue: Callable[[Axes], np.ndarray], axes: Axes, factor: int
) -> Materials:
    """Mean nominal HU, mean texture amplitude and lung fraction of every voxel, from `factor`^3 samples.

    `paint_tissue` maps template-mm axes to a tissue-code array; it is called on slabs along the
    first axis, so the fine grid (8x the voxels at factor 2) never exists whole: memory beyond the three
    output arrays stays near SLAB_VOXELS samples.
    """
    shape = tuple(a.size for a in axes)
    fine = [fine_axis(a, factor) for a in axes]
    out = np.empty((3,) + shape, dtype=np.float32)
    plane = fine[1].size * fine[2].size * factor
    rows = max(1, SLAB_VOXELS // plane)
    for start in range(0, shape[0], rows):
        stop = min(shape[0], start + rows)
        tissue = paint_tissue((fine[0][start * factor : stop * factor], fine[1], fine[2]))
        block = out[:, start:stop]
        block[:] = 0.0
        for a in range(factor):  # sum the factor^3 sub-grids: cheaper than a 7-D reshape and mean
            for b in range(factor):
                for c in range(factor):
                    block += MATERIAL_TABLES[:, tissue[a::factor, b::factor, c::factor]]
        block *= np.float32(1.0 / factor**3)
    return out[0], out[1], out[2]


def point_spread(hu: np.ndarray, spacing, fwhm_mm: float | None) -> np.ndarray:
    """Gaussian blur with the given FWHM in mm (None: the spacing of each axis; 0: none), in place."""
    if fwhm_mm is not None and fwhm_mm <= 0:
        return hu
    sigma = [(sp if fwhm_mm is None else fwhm_mm) / FWHM_PER_SIGMA / sp for sp in spacing]
    ndimage.gaussian_filter(hu, sigma, output=hu, mode="nearest", truncate=3.0)
    return hu


def add_noise(hu: np.ndarray, seed: int, noise_hu: float) -> np.ndarray:
    """White Gaussian noise in the object; air that no tissue reaches stays exactly -1000 HU (in place)."""
    air = hu <= HU[T["air"]] + 0.5
    if noise_hu > 0:
        rng = np.random.default_rng([int(seed), 99])
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_hu)
    hu[air] = HU[T["air"]]
    return hu


def synthesize_ct(
    materials: Materials,
    axes: Axes,
    spacing,
    seed: int,
    noise_hu: float,
    psf_fwhm_mm: float | None = None,
    lung_center_y: float = -25.0,
) -> np.ndarray:
    """Nominal HU + smooth texture + lung gravity gradient, seen through the point spread, + noise (float32 HU).

    The texture fields are smooth over millimetres, so one value per voxel times the voxel's mean
    texture amplitude equals the mean of the fine samples.
    """
    hu, texture, lung = materials
    xs, ys, zs = axes
    field = 0.6 * SmoothField(seed, FINE_TEXTURE, 4.0).evaluate(xs, ys, zs)
    field += 0.8 * SmoothField(seed, COARSE_TEXTURE, 20.0).evaluate(xs, ys, zs)
    ct = hu + texture * field
    if lung.any():  # supine: dependent (posterior) lung is denser
        gradient = (-25.0 * np.clip((ys - lung_center_y) / 80.0, -1.5, 1.5)).astype(np.float32)
        ct += lung * gradient[None, :, None]
    point_spread(ct, spacing, psf_fwhm_mm)
    return add_noise(ct, seed, noise_hu)


__all__ = ["Materials", "fine_axis", "point_materials", "material_means", "point_spread", "add_noise", "synthesize_ct"]
