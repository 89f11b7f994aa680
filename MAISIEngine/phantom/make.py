"""`make_phantom`: a labelled torso and its CT on any grid; `write_phantom`: both as NIfTI.

Voxel axes and world: array index (i, j, k) maps through `affine` to RAS millimetres with a
diagonal, positive spacing, so i runs toward the patient's right (+x), j toward anterior (+y) and k
toward superior (+z), the orientation MAISI trains in. The anatomy is always centred on the volume
centre (the region chooses which body level sits there); `origin` only moves the affine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from MAISIEngine.errors import MaisiError
from MAISIEngine.labels import TUMOR_TYPES
from MAISIEngine.phantom.anatomy import build_anatomy
from MAISIEngine.phantom.paint import paint
from MAISIEngine.phantom.scanner import material_means, point_materials, synthesize_ct
from MAISIEngine.phantom.tissue import median_by_label, refine_tissues
from MAISIEngine.phantom.tumors import place_tumors

REGION_CENTERS: dict[str, float] = {"chest": 45.0, "chest-abdomen": -80.0, "abdomen": -215.0}
"""Template height (mm above the right diaphragm dome) at the volume centre, per region."""

Y_CENTER = -20.0
"""Template y at the volume centre: the body's antero-posterior middle."""

MAX_VOXELS = 512**3
MIN_SIZE, MAX_SIZE = 8, 1024
MIN_SPACING, MAX_SPACING = 0.2, 20.0
DEFAULT_NOISE_HU = 12.0
DEFAULT_SUPERSAMPLE = 2
"""Samples per voxel and axis for partial volume: 2 takes the one-voxel aliasing out of thin structures."""
MAX_SUPERSAMPLE = 4


@dataclass(frozen=True)
class PlacedTumor:
    kind: str
    label: int
    center_ras: tuple[float, float, float]  # mm, world (affine) coordinates
    radius_mm: float


@dataclass(frozen=True)
class Phantom:
    """Labels (uint8, MAISI ids) and CT (int16 HU) on one grid, in (i, j, k) order with a RAS affine."""

    labels: np.ndarray
    ct: np.ndarray
    affine: np.ndarray
    nominal_hu: dict[int, float]
    region: str
    seed: int
    tumors: tuple[PlacedTumor, ...] = field(default=())

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.labels.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.diag(self.affine)[:3])  # type: ignore[return-value]


def _check_triple(values, what: str, kind: type) -> tuple:
    try:
        out = tuple(kind(v) for v in values)
    except (TypeError, ValueError):
        raise MaisiError(f"{what} must be three numbers, got {values!r}", f"give {what} as X Y Z") from None
    if len(out) != 3:
        raise MaisiError(f"{what} must have three values, got {len(out)}", f"give {what} as X Y Z")
    return out


def validate_scanner(supersample, psf_fwhm_mm) -> None:
    """A MaisiError unless the partial-volume factor and the point spread are usable."""
    if isinstance(supersample, bool) or not isinstance(supersample, int | np.integer) \
            or not 1 <= int(supersample) <= MAX_SUPERSAMPLE:
        raise MaisiError(f"supersample must be a whole number from 1 to {MAX_SUPERSAMPLE}, got {supersample!r}",
                         "e.g. 2 (1 samples voxel centres only)")
    if psf_fwhm_mm is not None and (not math.isfinite(psf_fwhm_mm) or psf_fwhm_mm < 0):
        raise MaisiError(f"point spread FWHM must be a non-negative number of mm, got {psf_fwhm_mm}",
                         "e.g. 1.5, or 0 for no blur")


def validate_request(size, spacing, region: str, seed: int, tumors, origin, noise_hu: float) -> tuple:
    """Normalised (size, spacing, region, seed, tumors, origin) or a MaisiError saying what is wrong."""
    if isinstance(size, int | np.integer):
        size = (size,) * 3
    size = _check_triple(size, "size", float)
    if any(not float(s).is_integer() for s in size):
        raise MaisiError(f"size must be whole numbers of voxels, got {size}", "e.g. --size 128 128 128")
    size = tuple(int(s) for s in size)
    if any(s < MIN_SIZE or s > MAX_SIZE for s in size):
        raise MaisiError(f"size {size} is out of range", f"each axis needs {MIN_SIZE}..{MAX_SIZE} voxels")
    if math.prod(size) > MAX_VOXELS:
        raise MaisiError(
            f"size {size} has {math.prod(size)} voxels, more than {MAX_VOXELS}",
            "use a smaller size or a coarser spacing",
        )
    if isinstance(spacing, int | float | np.floating):
        spacing = (spacing,) * 3
    spacing = _check_triple(spacing, "spacing", float)
    if any(not math.isfinite(s) or s < MIN_SPACING or s > MAX_SPACING for s in spacing):
        raise MaisiError(f"spacing {spacing} mm is out of range", f"each axis needs {MIN_SPACING}..{MAX_SPACING} mm")
    if region not in REGION_CENTERS:
        raise MaisiError(f"unknown region {region!r}", "choose one of " + ", ".join(REGION_CENTERS))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**63:
        raise MaisiError(f"seed must be a non-negative integer, got {seed!r}", "e.g. --seed 0")
    if isinstance(tumors, str):
        tumors = (tumors,)
    tumors = tuple(tumors or ())
    unknown = [t for t in tumors if t not in TUMOR_TYPES]
    if unknown:
        raise MaisiError(f"unknown tumor type {unknown[0]!r}", "choose from " + ", ".join(TUMOR_TYPES))
    if origin is not None:
        origin = _check_triple(origin, "origin", float)
        if not all(math.isfinite(o) for o in origin):
            raise MaisiError(f"origin {origin} is not finite", "give three finite numbers in mm")
    if not math.isfinite(noise_hu) or noise_hu < 0:
        raise MaisiError(f"noise must be a non-negative number of HU, got {noise_hu}", "e.g. 12")
    return size, spacing, region, int(seed), tumors, origin


def make_phantom(
    size=(128, 128, 128),
    spacing=(3.0, 3.0, 3.0),
    region: str = "chest-abdomen",
    seed: int = 0,
    tumors=(),
    origin=None,
    noise_hu: float = DEFAULT_NOISE_HU,
    strict_tumors: bool = True,
    supersample: int = DEFAULT_SUPERSAMPLE,
    psf_fwhm_mm: float | None = None,
) -> Phantom:
    """A seeded torso phantom: MAISI labels, CT in HU, RAS affine and the nominal HU of each label.

    `tumors` lists tumour types ("lung", "liver", "pancreas", "colon", "bone"); each is placed
    inside its host organ; when the host is outside the field of view that is a MaisiError, or the
    tumour is left out if `strict_tumors` is False (`Phantom.tumors` lists those placed).
    `noise_hu` is the standard deviation of the white noise (0 for none). The CT is what a scanner
    would see (`scanner`): each voxel averages `supersample`^3 samples of the tissues and is blurred by
    a Gaussian of FWHM `psf_fwhm_mm` (None: the spacing of each axis; 0: no blur). Labels and the
    nominal HU per label come from the voxel centres.
    """
    size, spacing, region, seed, tumors, origin = validate_request(
        size, spacing, region, seed, tumors, origin, noise_hu
    )
    validate_scanner(supersample, psf_fwhm_mm)
    anatomy = build_anatomy(seed)
    ws, ds, hs = anatomy.scale
    rel = [(np.arange(n) - (n - 1) / 2.0) * sp for n, sp in zip(size, spacing)]
    axes = (rel[0] / ws, rel[1] / ds + Y_CENTER, rel[2] / hs + REGION_CENTERS[region])

    structures = anatomy.structures
    plans = []
    if tumors:
        fov_lo = np.array([a[0] for a in axes])
        fov_hi = np.array([a[-1] for a in axes])
        min_radius = 1.2 * max(spacing) / min(anatomy.scale)
        plans = place_tumors(anatomy, tumors, fov_lo, fov_hi, min_radius, strict_tumors)
        structures = structures + [p.structure for p in plans]

    labels, tissue = paint(structures, axes)
    refine_tissues(tissue, axes, seed, anatomy.hila)
    nominal = median_by_label(labels, tissue)

    def paint_tissue(sub_axes):
        fine = paint(structures, sub_axes)[1]
        refine_tissues(fine, sub_axes, seed, anatomy.hila)
        return fine

    materials = point_materials(tissue) if supersample == 1 else material_means(paint_tissue, axes, int(supersample))
    ct = synthesize_ct(materials, axes, spacing, seed, noise_hu, psf_fwhm_mm)
    ct = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)

    sp = np.asarray(spacing, dtype=np.float64)
    affine = np.diag(np.append(sp, 1.0))
    center_index = (np.asarray(size) - 1) / 2.0
    affine[:3, 3] = -center_index * sp if origin is None else np.asarray(origin)
    world_center = affine[:3, 3] + center_index * sp
    template_center = np.array([0.0, Y_CENTER, REGION_CENTERS[region]])
    placed = tuple(
        PlacedTumor(
            p.kind,
            p.label,
            tuple(float(v) for v in world_center + (p.center - template_center) * anatomy.scale),  # type: ignore
            float(p.radius * min(anatomy.scale)),
        )
        for p in plans
    )
    return Phantom(labels, ct, affine, nominal, region, seed, placed)


def write_phantom(phantom: Phantom, out_dir: str | Path) -> dict[str, Path]:
    """Write `mask.nii.gz` (uint8 labels) and `ct.nii.gz` (int16 HU) with the phantom's affine, atomically."""
    from MAISIEngine.io.nifti import write_volume

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MaisiError(f"cannot create output folder {out} ({exc.strerror})", "choose a writable folder") from None
    what = f"phantom seed={phantom.seed} region={phantom.region}"
    try:
        mask = write_volume(out / "mask.nii.gz", phantom.labels, phantom.affine, f"{what} labels", np.uint8)
        ct = write_volume(out / "ct.nii.gz", phantom.ct, phantom.affine, f"{what} CT HU", np.int16)
    except OSError as exc:
        raise MaisiError(
            f"cannot write the phantom into {out} ({exc.strerror})", "check free space and permissions"
        ) from None
    return {"mask": mask, "ct": ct}


__all__ = ["Phantom", "PlacedTumor", "make_phantom", "write_phantom", "REGION_CENTERS"]
