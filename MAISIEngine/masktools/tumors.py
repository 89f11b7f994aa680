"""Tumor masks: a shape grown from a point inside its host organ, and the tumor mask augmentation.

A user places a tumor by clicking a point and giving a size; MAISI only ever saw tumors inside their
host organ (a hepatic tumor inside the liver, a lung tumor inside a lung lobe), so every shape made or
changed here is clipped to that organ. Every random choice comes from a generator seeded by the
caller, so the same seed gives the same voxels.

The augmentation follows the paper's mask augmentation for tumors: move, scale, erode/dilate and
elastic deformation, each followed by clipping to the host and a small closing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from MAISIEngine import labels as label_table
from MAISIEngine.errors import MaisiError

_HOST_GROUP_WORDS = {23: "a lung lobe", 128: "a bone"}
_BUMPS = 8  # number of low-frequency bumps on the tumor surface
_BUMP_SHARPNESS = 4.0  # von Mises-Fisher concentration: ~30 degree wide bumps
_CONNECT6 = ndimage.generate_binary_structure(3, 1)


# --------------------------------------------------------------------------------------------------
# Tumor types and host organs
# --------------------------------------------------------------------------------------------------


def resolve_tumor_type(tumor_type: str | int) -> int:
    """Tumor label id for a type name ("liver") or a tumor label id (26)."""
    if isinstance(tumor_type, (int, np.integer)) and int(tumor_type) in label_table.TUMOR_HOSTS:
        return int(tumor_type)
    key = str(tumor_type).strip().lower()
    if key in label_table.TUMOR_TYPES:
        return label_table.TUMOR_TYPES[key]
    if key.isdigit() and int(key) in label_table.TUMOR_HOSTS:
        return int(key)
    raise MaisiError(f"unknown tumor type {tumor_type!r}", f"use one of {', '.join(label_table.TUMOR_TYPES)}")


def tumor_type_name(tumor_id: int) -> str:
    """The CLI name of a tumor id (26 -> "liver")."""
    return next(name for name, value in label_table.TUMOR_TYPES.items() if value == tumor_id)


def _id_ranges(ids: Sequence[int]) -> str:
    """Compact "33-56, 63-97, 120" form of a sorted id list."""
    ids = sorted(ids)
    parts: list[str] = []
    start = prev = ids[0]
    for value in ids[1:] + [None]:  # type: ignore[operator]
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ", ".join(parts)


def host_description(tumor_id: int) -> str:
    """Words naming the organ a tumor must lie in, with its label ids, for messages."""
    hosts = sorted(label_table.TUMOR_HOSTS[tumor_id])
    if len(hosts) == 1:
        return f"the {label_table.name_of(hosts[0])} (label {hosts[0]})"
    return f"{_HOST_GROUP_WORDS.get(tumor_id, 'its host organ')} (labels {_id_ranges(hosts)})"


def host_mask(labels: np.ndarray, tumor_type: str | int) -> np.ndarray:
    """Voxels where a tumor of this type may lie: its host organ, plus existing tumor of that type."""
    tumor_id = resolve_tumor_type(tumor_type)
    allowed = sorted(label_table.TUMOR_HOSTS[tumor_id] | {tumor_id})
    return np.isin(np.asarray(labels), allowed)


def _label_words(label_id: int) -> str:
    try:
        return f"{label_table.name_of(label_id)} (label {label_id})"
    except KeyError:
        return f"label {label_id}"


def check_tumor_in_host(labels: np.ndarray, tumor_mask: np.ndarray, tumor_type: str | int) -> None:
    """Refuse an empty tumor, a tumor on another grid, or one with voxels outside its host organ."""
    tumor_id = resolve_tumor_type(tumor_type)
    labels = np.asarray(labels)
    mask = np.asarray(tumor_mask).astype(bool)
    if mask.shape != labels.shape:
        raise MaisiError(
            f"the tumor mask has shape {mask.shape} but the label map has {labels.shape}",
            "give the tumor on the label map's grid",
        )
    if not mask.any():
        raise MaisiError("the tumor mask is empty", "paint at least one tumor voxel")
    outside = mask & ~host_mask(labels, tumor_id)
    if outside.any():
        values, counts = np.unique(labels[outside], return_counts=True)
        where = ", ".join(_label_words(int(v)) for v in values[np.argsort(-counts)][:3])
        raise MaisiError(
            f"{int(outside.sum())} of {int(mask.sum())} {tumor_type_name(tumor_id)} tumor voxels lie outside "
            f"{host_description(tumor_id)}, in {where}",
            f"a {tumor_type_name(tumor_id)} tumor must lie inside {host_description(tumor_id)}",
        )


def apply_tumor(labels: np.ndarray, tumor_mask: np.ndarray, tumor_type: str | int, *, clip: bool = False) -> np.ndarray:
    """A copy of `labels` with the tumor id written where `tumor_mask` is set.

    With `clip`, tumor voxels outside the host organ are dropped instead of refused.
    """
    tumor_id = resolve_tumor_type(tumor_type)
    labels = np.asarray(labels)
    mask = np.asarray(tumor_mask).astype(bool)
    if clip and mask.shape == labels.shape:
        mask = mask & host_mask(labels, tumor_id)
    check_tumor_in_host(labels, mask, tumor_id)
    out = labels.copy()
    out[mask] = tumor_id
    return out


# --------------------------------------------------------------------------------------------------
# Tumor shape from a point
# --------------------------------------------------------------------------------------------------


def _point_to_voxel(
    point: Sequence[float], affine: np.ndarray, shape: tuple[int, ...], point_space: str
) -> tuple[int, int, int]:
    values = np.asarray(point, dtype=np.float64)
    if values.shape != (3,) or not np.all(np.isfinite(values)):
        raise MaisiError(f"a point needs three finite coordinates, got {list(point)}", "give x y z")
    if point_space == "voxel":
        ijk = np.rint(values)
    elif point_space == "ras":
        ijk = np.rint((np.linalg.inv(affine) @ np.append(values, 1.0))[:3])
    else:
        raise ValueError(f"point_space must be 'ras' or 'voxel', not {point_space!r}")
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(shape)):
        unit = "voxel" if point_space == "voxel" else "RAS mm"
        raise MaisiError(
            f"the point {tuple(float(v) for v in values)} ({unit}) lies outside the label map",
            f"give a point inside the volume (voxel grid {tuple(shape)})",
        )
    return tuple(int(v) for v in ijk)  # type: ignore[return-value]


def _diameters(size_mm: float | Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Three ellipsoid diameters: as given, or from one size with two axes shortened at random."""
    sizes = np.atleast_1d(np.asarray(size_mm, dtype=np.float64))
    if sizes.size not in (1, 3) or not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise MaisiError(f"tumor size must be one or three positive numbers (mm), got {size_mm}", "e.g. --size-mm 20")
    if sizes.size == 1:
        return sizes[0] * np.array([1.0, *rng.uniform(0.7, 1.0, 2)])
    return sizes


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _fibonacci_sphere(count: int) -> np.ndarray:
    index = np.arange(count) + 0.5
    polar = np.arccos(1 - 2 * index / count)
    azimuth = np.pi * (1 + 5**0.5) * index
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=-1)


def _radial_noise(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth function on the unit sphere in [-1, 1]: a sum of a few broad random bumps."""
    directions = rng.standard_normal((_BUMPS, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    weights = rng.uniform(-1.0, 1.0, _BUMPS)

    def raw(unit: np.ndarray) -> np.ndarray:
        return np.exp(_BUMP_SHARPNESS * (unit @ directions.T - 1.0)) @ weights

    reference = raw(_fibonacci_sphere(2000))
    centre = float(reference.mean())
    spread = float(np.abs(reference - centre).max()) or 1.0
    return lambda unit: np.clip((raw(unit) - centre) / spread, -1.0, 1.0)


def tumor_from_point(
    labels: np.ndarray,
    affine: np.ndarray,
    point: Sequence[float],
    size_mm: float | Sequence[float],
    tumor_type: str | int,
    seed: int = 0,
    *,
    point_space: str = "ras",
    irregularity: float = 0.25,
) -> np.ndarray:
    """A tumor mask (bool, shape of `labels`) around `point`, clipped to the host organ.

    The shape is an ellipsoid with the given diameter(s) in mm, randomly oriented, whose radius varies
    smoothly with direction by up to `irregularity` (a lobulated, not spherical, boundary). `point` is
    in RAS mm (`point_space="ras"`) or a voxel index (`"voxel"`); it must lie in the host organ.
    Only the part connected to the point survives the clipping.
    """
    tumor_id = resolve_tumor_type(tumor_type)
    labels = np.asarray(labels)
    affine = np.asarray(affine, dtype=np.float64)
    if labels.ndim != 3:
        raise MaisiError(f"the label map must be 3D, got shape {labels.shape}", "give a 3D label map")
    if not 0.0 <= irregularity < 0.8:
        raise MaisiError(f"irregularity must be in [0, 0.8), got {irregularity}", "use e.g. 0.25")
    centre = _point_to_voxel(point, affine, labels.shape, point_space)
    host = host_mask(labels, tumor_id)
    if not host[centre]:
        found = _label_words(int(labels[centre])) if labels[centre] != 0 else "background (label 0)"
        raise MaisiError(
            f"the point is in {found}, not in {host_description(tumor_id)}",
            f"a {tumor_type_name(tumor_id)} tumor must start inside {host_description(tumor_id)}; pick a point there",
        )

    rng = np.random.default_rng(seed)
    semi_axes = _diameters(size_mm, rng) / 2.0
    rotation = _random_rotation(rng)
    noise = _radial_noise(rng)

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    reach = np.ceil(semi_axes.max() * (1.0 + irregularity) / spacing).astype(int) + 1
    low = np.maximum(np.asarray(centre) - reach, 0)
    high = np.minimum(np.asarray(centre) + reach + 1, labels.shape)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high)], indexing="ij"), axis=-1)
    offsets_mm = (grid - np.asarray(centre)) @ affine[:3, :3].T  # physical offsets (RAS mm)
    scaled = (offsets_mm @ rotation) / semi_axes  # in the ellipsoid's frame, unit radius at the surface
    radius = np.linalg.norm(scaled, axis=-1)
    unit = scaled / np.maximum(radius, 1e-9)[..., None]
    inside = radius <= 1.0 + irregularity * noise(unit)

    box = tuple(slice(a, b) for a, b in zip(low, high))
    inside &= host[box]
    components, _ = ndimage.label(inside, structure=_CONNECT6)
    inside = components == components[tuple(np.asarray(centre) - low)]
    mask = np.zeros(labels.shape, dtype=bool)
    mask[box] = inside
    return mask


# --------------------------------------------------------------------------------------------------
# Augmentation: move, scale, erode/dilate, elastic
# --------------------------------------------------------------------------------------------------

Transform = Callable[[np.ndarray, np.random.Generator, np.ndarray], np.ndarray]
"""(tumor crop, rng, spacing) -> transformed tumor crop of the same shape."""


def _as_spacing(spacing: Sequence[float]) -> np.ndarray:
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape != (3,) or np.any(values <= 0):
        raise MaisiError(f"spacing must be three positive numbers (mm), got {spacing}", "e.g. 1.5 1.5 2.0")
    return values


def _augment(
    labels: np.ndarray,
    tumor_mask: np.ndarray,
    tumor_type: str | int,
    seed: int,
    spacing: Sequence[float],
    margin_mm: float,
    transform: Transform,
    min_inside: float,
    tries: int,
) -> np.ndarray:
    """Run `transform` on a crop around the tumor until enough of the result lies in the host.

    The tumor's own voxels count as host (they were organ before the tumor was painted). The result is
    clipped to the host and closed; if no try keeps `min_inside` of the transformed tumor inside the
    host, the try that kept the most is used, and the input is returned unchanged if all came out empty.
    """
    tumor_id = resolve_tumor_type(tumor_type)
    labels = np.asarray(labels)
    mask = np.asarray(tumor_mask).astype(bool)
    check_tumor_in_host(labels, mask, tumor_id)
    spacing_mm = _as_spacing(spacing)
    host = host_mask(labels, tumor_id) | mask

    where = np.argwhere(mask)
    margin = np.ceil(margin_mm / spacing_mm).astype(int) + 2
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + margin + 1, labels.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    tumor_crop, host_crop = mask[box], host[box]

    rng = np.random.default_rng(seed)
    best: np.ndarray | None = None
    best_kept = 0
    for _ in range(tries):
        moved = transform(tumor_crop, rng, spacing_mm)
        kept = ndimage.binary_closing(moved & host_crop, structure=_CONNECT6) & host_crop
        count = int(kept.sum())
        if count > best_kept:
            best, best_kept = kept, count
        if count and count >= min_inside * max(int(moved.sum()), 1):
            best = kept
            break
    out = mask.copy()
    if best is not None:
        out[box] = best
    return out


def _shift(crop: np.ndarray, rng: np.random.Generator, spacing: np.ndarray, max_shift_mm: float) -> np.ndarray:
    shift = np.rint(rng.uniform(-max_shift_mm, max_shift_mm, 3) / spacing)
    return ndimage.shift(crop.astype(np.uint8), shift, order=0, mode="constant", cval=0) > 0


def _zoom(
    crop: np.ndarray, rng: np.random.Generator, spacing: np.ndarray, scale_range: tuple[float, float]
) -> np.ndarray:
    factor = rng.uniform(*scale_range)
    centre = np.argwhere(crop).mean(axis=0)
    matrix = np.eye(3) / factor
    offset = centre - matrix @ centre
    return ndimage.affine_transform(crop.astype(np.float32), matrix, offset=offset, order=1) > 0.5


def _erode_or_dilate(
    crop: np.ndarray, rng: np.random.Generator, spacing: np.ndarray, radius_mm: tuple[float, float]
) -> np.ndarray:
    radius = rng.uniform(*radius_mm)
    if rng.random() < 0.5:
        grown = ndimage.distance_transform_edt(~crop, sampling=spacing) <= radius
        return grown
    while radius > 0.25 * float(spacing.min()):
        shrunk = ndimage.distance_transform_edt(crop, sampling=spacing) > radius
        if shrunk.any():
            return shrunk
        radius /= 2.0
    return crop.copy()


def _elastic(
    crop: np.ndarray, rng: np.random.Generator, spacing: np.ndarray, sigma_mm: float, magnitude_mm: float
) -> np.ndarray:
    sigma = sigma_mm / spacing
    coordinates = np.indices(crop.shape, dtype=np.float32)
    for axis in range(3):
        field = ndimage.gaussian_filter(rng.standard_normal(crop.shape), sigma)
        field *= (magnitude_mm / spacing[axis]) / max(float(np.abs(field).max()), 1e-12)
        coordinates[axis] += field.astype(np.float32)
    return ndimage.map_coordinates(crop.astype(np.float32), coordinates, order=1, mode="constant") > 0.5


def move_tumor(
    labels: np.ndarray,
    tumor_mask: np.ndarray,
    tumor_type: str | int,
    seed: int = 0,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    max_shift_mm: float = 10.0,
    min_inside: float = 0.85,
    tries: int = 30,
) -> np.ndarray:
    """Shift the tumor by up to `max_shift_mm` per axis to a place inside its host organ."""
    return _augment(
        labels, tumor_mask, tumor_type, seed, spacing, max_shift_mm,
        lambda c, r, s: _shift(c, r, s, max_shift_mm), min_inside, tries,
    )


def scale_tumor(
    labels: np.ndarray,
    tumor_mask: np.ndarray,
    tumor_type: str | int,
    seed: int = 0,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    scale_range: tuple[float, float] = (0.8, 1.25),
    min_inside: float = 0.85,
    tries: int = 30,
) -> np.ndarray:
    """Scale the tumor about its centroid by a factor drawn from `scale_range`."""
    check_tumor_in_host(labels, tumor_mask, tumor_type)
    extent_mm = float(np.ptp(np.argwhere(np.asarray(tumor_mask)), axis=0).max() + 1) * float(max(spacing))
    margin = extent_mm * max(scale_range[1] - 1.0, 0.0) / 2.0 + 1.0
    return _augment(
        labels, tumor_mask, tumor_type, seed, spacing, margin,
        lambda c, r, s: _zoom(c, r, s, scale_range), min_inside, tries,
    )


def erode_dilate_tumor(
    labels: np.ndarray,
    tumor_mask: np.ndarray,
    tumor_type: str | int,
    seed: int = 0,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    radius_mm: tuple[float, float] = (1.0, 3.0),
    min_inside: float = 0.85,
    tries: int = 30,
) -> np.ndarray:
    """Erode or dilate (chosen at random) the tumor by a radius in mm drawn from `radius_mm`."""
    return _augment(
        labels, tumor_mask, tumor_type, seed, spacing, radius_mm[1],
        lambda c, r, s: _erode_or_dilate(c, r, s, radius_mm), min_inside, tries,
    )


def elastic_tumor(
    labels: np.ndarray,
    tumor_mask: np.ndarray,
    tumor_type: str | int,
    seed: int = 0,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    sigma_mm: float = 6.0,
    magnitude_mm: float = 4.0,
    min_inside: float = 0.85,
    tries: int = 30,
) -> np.ndarray:
    """Deform the tumor with a smooth random displacement field (up to `magnitude_mm`)."""
    return _augment(
        labels, tumor_mask, tumor_type, seed, spacing, magnitude_mm,
        lambda c, r, s: _elastic(c, r, s, sigma_mm, magnitude_mm), min_inside, tries,
    )


AUGMENTATIONS: dict[str, Callable[..., np.ndarray]] = {
    "move": move_tumor,
    "scale": scale_tumor,
    "erode_dilate": erode_dilate_tumor,
    "elastic": elastic_tumor,
}


def augment_tumor(
    labels: np.ndarray,
    tumor_mask: np.ndarray,
    tumor_type: str | int,
    seed: int = 0,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    steps: Sequence[str] = ("move", "scale", "erode_dilate", "elastic"),
) -> np.ndarray:
    """Apply the named augmentations in order, each with its own seed derived from `seed`."""
    unknown = [s for s in steps if s not in AUGMENTATIONS]
    if unknown:
        raise MaisiError(f"unknown tumor augmentation(s) {unknown}", f"use {', '.join(AUGMENTATIONS)}")
    seeds = np.random.SeedSequence(seed).generate_state(len(steps))
    mask = np.asarray(tumor_mask).astype(bool)
    for step, step_seed in zip(steps, seeds):
        mask = AUGMENTATIONS[step](labels, mask, tumor_type, int(step_seed), spacing=spacing)
    return mask
