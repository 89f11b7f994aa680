"""Random augmentation of a label map retrieved from the mask database, as NVIDIA's reference does it.

A database mask is a real patient's anatomy; generating many CTs from the same few masks repeats them. The
reference therefore perturbs every retrieved mask before use: when it holds a tumor, the tumor is moved,
rotated, scaled and elastically deformed (MONAI `Rand3DElastic`, `RandAffine` for bone lesions) and
kept only where its host organ is, redrawn until at least 80 % (lung: 85 %) of its volume survives, then
smoothed by a closing; otherwise the whole map is zoomed by a random factor in [0.99, 1.01]. Only the
first tumor kind found is moved, in the reference's order: bone lesion, liver, lung, pancreas, colon.

Two differences, both for running on a CPU: the deformation is computed on the box around the host organ
(with a margin larger than the largest translation) rather than on the whole volume, and redraws stop
after `MAX_DRAWS` (the tumor then stays where it was) instead of looping without end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from MAISIEngine.labels import BODY

MAX_DRAWS = 20
MARGIN = 24  # voxels around the host organ's box: more than the largest translation (20)
CUBE5 = np.ones((5, 5, 5), dtype=bool)
LUNGS = (28, 29, 30, 31, 32)
BONES = tuple(range(33, 57)) + tuple(range(63, 98)) + (114, 127)


@dataclass(frozen=True)
class TumorMotion:
    """How one tumor kind may move: transform, ranges (voxels / radians / fraction), what must survive."""

    label: int
    elastic: bool
    translate: tuple[float, float, float]
    rotate: tuple[float, float, float]
    scale: tuple[float, float, float]
    keep: float


MOTIONS: dict[str, TumorMotion] = {
    "bone": TumorMotion(128, False, (5, 5, 0), (0, 0, 0.1), (0.15, 0.15, 0), 0.8),
    "liver": TumorMotion(26, True, (10, 10, 10), (np.pi / 36,) * 3, (0.2, 0.2, 0.2), 0.8),
    "lung": TumorMotion(23, True, (20, 20, 20), (np.pi / 36, np.pi / 36, np.pi), (0.15, 0.15, 0.15), 0.85),
    "pancreas": TumorMotion(24, True, (15, 15, 15), (np.pi / 36,) * 3, (0.1, 0.1, 0.1), 0.8),
    "colon": TumorMotion(27, True, (5, 5, 5), (np.pi / 36,) * 3, (0.1, 0.1, 0.1), 0.8),
}
ORDER = ("bone", "liver", "lung", "pancreas", "colon")


def close5(mask: np.ndarray) -> np.ndarray:
    """Dilate then erode with a 5-cube (the reference's smoothing of organ and tumor masks)."""
    grown = ndimage.binary_dilation(mask, structure=CUBE5, border_value=0)
    return ndimage.binary_erosion(grown, structure=CUBE5, border_value=1)


def _transform(motion: TumorMotion, seed: int):
    from monai.transforms import Rand3DElastic, RandAffine

    if motion.elastic:
        transform = Rand3DElastic(sigma_range=(5, 8), magnitude_range=(100, 200), prob=1.0, mode="nearest",
                                  translate_range=motion.translate, rotate_range=motion.rotate,
                                  scale_range=motion.scale, padding_mode="zeros")
    else:
        transform = RandAffine(prob=1.0, mode="nearest", translate_range=motion.translate, rotate_range=motion.rotate,
                               scale_range=motion.scale, padding_mode="zeros")
    transform.set_random_state(seed=int(seed))
    return transform


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    where = np.nonzero(mask)
    return tuple(slice(max(int(w.min()) - margin, 0), min(int(w.max()) + margin + 1, n))
                 for w, n in zip(where, mask.shape))


def _host_after_removal(volume: np.ndarray, kind: str, tumor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The map with the tumor given back to its host (as the reference fills it), and where the tumor may go."""
    out = volume.copy()
    if kind == "bone":
        out[tumor] = BODY
        allowed = np.isin(out, BONES) | tumor
    elif kind in ("liver", "pancreas"):
        organ = 1 if kind == "liver" else 4
        out[tumor] = organ
        allowed = close5(out == organ)
    elif kind == "lung":
        ring = ndimage.binary_dilation(tumor, structure=np.ones((3, 3, 3), bool)) & ~tumor & np.isin(volume, LUNGS)
        values = volume[ring]
        lobe = int(np.argmax(np.bincount(values))) if values.size else LUNGS[0]
        out[tumor] = lobe
        allowed = close5(np.isin(out, LUNGS))
    else:  # colon
        out[tumor] = 62
        allowed = close5(out == 62)
    return out, allowed


def augment_tumor(volume: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Move, turn, scale and deform the tumor of `kind` inside its host; unchanged when no draw keeps enough."""
    import torch

    motion = MOTIONS[kind]
    tumor = volume == motion.label
    size = int(tumor.sum())
    if size == 0:
        return volume
    moved, allowed = _host_after_removal(volume, kind, tumor)
    box = _box(allowed | tumor, MARGIN)
    source = torch.from_numpy(tumor[box].astype(np.float32))[None]
    transform = _transform(motion, seed)
    for _ in range(MAX_DRAWS):
        placed = np.asarray(transform(source, spatial_size=source.shape[1:]))[0] > 0.5
        placed &= allowed[box]
        if placed.sum() >= motion.keep * size:
            placed = close5(placed) & allowed[box]
            moved[box][placed] = motion.label
            return moved
    return volume


def zoom_body(volume: np.ndarray, seed: int) -> np.ndarray:
    """The whole map zoomed by a random factor in [0.99, 1.01] about its centre, size kept (nearest)."""
    from monai.transforms import RandZoom
    import torch

    zoom = RandZoom(prob=1.0, min_zoom=0.99, max_zoom=1.01, mode="nearest", keep_size=True)
    zoom.set_random_state(seed=int(seed))
    out = zoom(torch.from_numpy(volume.astype(np.int16))[None])
    return np.asarray(out)[0].astype(volume.dtype)


def augment_retrieved_mask(volume: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """The reference's augmentation of a database mask; returns the new map and what was done."""
    present = set(int(v) for v in np.unique(volume))
    for kind in ORDER:
        if MOTIONS[kind].label in present:
            return augment_tumor(volume, kind, seed), f"{kind} tumor moved"
    return zoom_body(volume, seed), "body zoomed"
