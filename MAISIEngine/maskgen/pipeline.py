"""A MAISI label map from nothing: anatomy sizes in, a label map on the requested grid out.

Steps: the condition vector (requested sizes completed from the size database), DDPM sampling, decode
and argmax, class -> MAISI id, the reference's post-processing, placement on the requested grid (nearest
neighbour; the field of view centred on the map, or on a body region), and the body envelope (label 200
inside the body wherever no organ is).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.nifti import Volume
from MAISIEngine.maskgen import anatomy
from MAISIEngine.maskgen.grid import check_grid
from MAISIEngine.maskgen.model import LoadedMaskModel, MaskPreset, build_mask_scheduler
from MAISIEngine.maskgen.postprocess import fold_kidney_mass, keep_largest_components, postprocess_generated
from MAISIEngine.maskgen.sampling import Progress, classes_to_maisi, decode_classes, sample_latents
from MAISIEngine.masks import add_body_envelope

REGION_LABELS: dict[str, tuple[int, ...]] = {
    "head-neck": (22, 120),
    "chest": (28, 29, 30, 31, 32),
    "abdomen": (1, 3, 4, 5, 14),
    "pelvis": (95, 96, 97),
}
"""Structures whose centre a region's field of view is centred on ("chest-abdomen": between chest and abdomen)."""
REGIONS = ("chest", "chest-abdomen", "abdomen", "pelvis", "head-neck")

CHECKED_ORGANS: dict[str, tuple[int, ...]] = {
    "liver": (1,), "spleen": (3,), "pancreas": (4,), "right kidney": (5,), "left kidney": (14,),
    "lungs": (28, 29, 30, 31, 32), "vertebrae": tuple(range(33, 57)),
}
"""Organs a chest-abdomen map should hold (the demo model's card counts them)."""


@dataclass
class GeneratedMask:
    volume: Volume  # MAISI ids on the requested grid
    condition: list[float]
    provenance: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # requested structures absent from the result


def check_mask_grid(preset: MaskPreset, size: Sequence[int], spacing: Sequence[float]) -> None:
    """Refuse grids the model's output cannot fill sensibly, as the reference's input check does."""
    check_grid(preset.name, preset.accepts, size, spacing)


def requested_labels(pairs: Sequence[tuple[str, float]]) -> dict[str, tuple[int, ...]]:
    """MAISI ids each requested structure must show (a tumor asked absent with -1 is not required)."""
    return {name: anatomy.STRUCTURE_LABELS[name] for name, size in pairs
            if not (name in anatomy.TUMORS and size == anatomy.ABSENT_TUMOR)}


def region_centre(labels: np.ndarray, region: str | None) -> np.ndarray:
    """Voxel coordinates the output field of view is centred on: the map's centre, or a region's organs (z only)."""
    centre = (np.asarray(labels.shape, dtype=np.float64) - 1) / 2.0
    if region is None:
        return centre

    def z_of(ids: tuple[int, ...]) -> float | None:
        z = np.nonzero(np.isin(labels, ids))[2]
        return float(z.mean()) if z.size else None

    if region == "chest-abdomen":
        zs = [z_of(REGION_LABELS["chest"]), z_of(REGION_LABELS["abdomen"])]
        z = None if None in zs else (zs[0] + zs[1]) / 2.0  # type: ignore[operator]
    elif region in REGION_LABELS:
        z = z_of(REGION_LABELS[region])
    else:
        raise MaisiError(f"unknown region '{region}'", f"use one of {', '.join(REGIONS)}")
    if z is None:
        raise MaisiError(f"the generated map holds no {region} organs to centre on",
                         "draw another seed, or leave out --region")
    centre[2] = z
    return centre


def place_on_grid(labels: np.ndarray, model_spacing: Sequence[float], size: Sequence[int], spacing: Sequence[float],
                  region: str | None = None) -> Volume:
    """Nearest-neighbour resampling of the model's map onto `size` x `spacing` (RAS, centred at the world
    origin). Each source voxel is the box around its centre, so a field of view equal to the model's is
    filled to its edges; beyond the model's field of view is background."""
    centre = region_centre(labels, region)
    picks = []
    for axis in range(3):
        n, step, source_step = int(size[axis]), float(spacing[axis]), float(model_spacing[axis])
        offsets_mm = (np.arange(n) - (n - 1) / 2.0) * step
        index = np.floor(centre[axis] + offsets_mm / source_step + 0.5).astype(np.int64)
        picks.append(index)
    inside = [(i >= 0) & (i < labels.shape[a]) for a, i in enumerate(picks)]
    out = np.zeros(tuple(int(s) for s in size), dtype=np.int16)
    sub = labels[np.ix_(*(i[m] for i, m in zip(picks, inside)))]
    out[np.ix_(*(np.nonzero(m)[0] for m in inside))] = sub
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(size, dtype=np.float64) - 1) / 2.0)
    return Volume(out, affine)


def close_body_envelope(labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Label 200 on every unlabelled voxel enclosed by the body in its axial slice (gaps the decoder left)."""
    if not (labels == maisi_labels.BODY).any():
        return add_body_envelope(labels, tuple(float(s) for s in spacing))  # type: ignore[arg-type]
    inside = labels > 0
    filled = np.stack([ndimage.binary_fill_holes(inside[:, :, k]) for k in range(labels.shape[2])], axis=2)
    out = labels.copy()
    out[filled & (labels == 0)] = maisi_labels.BODY
    return out


def postprocess(preset: MaskPreset, volume: np.ndarray, target_tumor: int | None) -> np.ndarray:
    if preset.postprocess == "reference":
        return postprocess_generated(volume, target_tumor)
    if preset.postprocess == "components":  # small maps: keep each organ's largest component only
        organs = [int(v) for v in np.unique(volume) if 0 < v < maisi_labels.BODY and v != target_tumor]
        return keep_largest_components(volume.astype(np.int64), organs, maisi_labels.BODY)
    raise MaisiError(f"mask model '{preset.name}' names unknown post-processing '{preset.postprocess}'",
                     "use \"reference\" or \"components\"")


def generate_mask(model: LoadedMaskModel, anatomy_sizes: Sequence[tuple[str, float]], size: Sequence[int],
                  spacing: Sequence[float], seed: int, region: str | None = None, num_steps: int | None = None,
                  database: Sequence[Sequence[float]] | None = None, progress: Progress | None = None) -> GeneratedMask:
    """One label map of MAISI ids on the requested grid, with what it was made from."""
    start = time.perf_counter()
    preset = model.preset
    pairs = anatomy.validate_anatomy_sizes(anatomy_sizes)
    check_mask_grid(preset, size, spacing)
    if region is not None and region not in REGIONS:
        raise MaisiError(f"unknown region '{region}'", f"use one of {', '.join(REGIONS)}")
    steps = int(num_steps or preset.num_inference_steps)
    if not 1 <= steps <= int(preset.scheduler["num_train_timesteps"]):
        raise MaisiError(f"{steps} sampling steps is outside 1..{preset.scheduler['num_train_timesteps']}",
                         f"the model was trained with {preset.scheduler['num_train_timesteps']} DDPM steps")
    if database is None:
        database = anatomy.load_size_database(model.files["size_database"])
    condition = anatomy.condition_vector(pairs, database)
    target_tumor = anatomy.target_tumor_label(condition)

    latents = sample_latents(model.unet, build_mask_scheduler(preset), condition, preset.latent_shape, steps, seed,
                             model.device, progress)
    classes = decode_classes(model.autoencoder, latents, model.scale_factor, len(preset.classes), progress)
    native = fold_kidney_mass(postprocess(preset, classes_to_maisi(classes, preset.classes), target_tumor))
    placed = place_on_grid(native, preset.spacing, size, spacing, region)
    labels = close_body_envelope(placed.array, spacing)
    result = Volume(labels.astype(np.int16), placed.affine)

    present = set(int(v) for v in np.unique(labels))
    missing = [name for name, ids in requested_labels(pairs).items() if not present & set(ids)]
    provenance = {
        "step": "mask generation",
        **model.provenance(),
        "anatomy_sizes": {name: size_ for name, size_ in pairs},
        "condition": dict(zip(anatomy.CONTROLLABLE, condition)),
        "target_tumor": target_tumor,
        "seed": int(seed),
        "num_inference_steps": steps,
        "model_grid": {"size": list(native.shape), "spacing": list(preset.spacing)},
        "size": [int(s) for s in size],
        "spacing": [float(s) for s in spacing],
        "region": region,
        "postprocess": preset.postprocess,
        "labels_present": sorted(present),
        "missing_requested": missing,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return GeneratedMask(result, condition, provenance, missing)
