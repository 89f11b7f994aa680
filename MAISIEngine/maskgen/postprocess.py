"""Clean-up of a generated label map, step for step as NVIDIA's reference does it after mask generation.

A diffusion model leaves speckle: small islands of an organ away from the organ, tumors of kinds nobody
asked for, bits of bowel floating in fat. The reference's post-processing keeps the body's largest
component, turns unrequested tumors into their host organ, keeps the largest component of each major
organ (the rest becomes body, 200), keeps one connected bowel system, closes small holes in each organ,
and has extra steps around a requested lung, liver or colon tumor. Written here with SciPy morphology:
a 3x3x3 cube for every dilation / erosion, zero outside the volume, 26-connected components.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from MAISIEngine.labels import BODY

CUBE = np.ones((3, 3, 3), dtype=bool)

TUMOR_HOST: dict[int, int] = {23: 28, 24: 4, 26: 1, 27: 62, 128: BODY}
"""Where an unrequested tumor's voxels go: lung tumor -> left upper lobe, pancreatic -> pancreas, hepatic ->
liver, colon -> colon, bone lesion -> body."""

LUNG_LOBES = (28, 29, 30, 31, 32)
BOWEL = (12, 13, 19, 62)  # stomach, duodenum, small bowel, colon
HEPATIC_VESSEL, AIRWAY = 25, 132


def single_component_labels(target_tumor: int | None) -> list[int]:
    """Labels reduced to their largest component: the abdominal organs, lungs, kidneys, great veins,
    adrenals, and (unless a bone lesion is asked for) the vertebrae, trachea and iliac vessels 33..59."""
    labels = [1, 4, 10, 12, 3, 28, 29, 30, 31, 32, 5, 14, 13, 6, 7, 8, 9, 10]
    if target_tumor != 128:
        labels += list(range(33, 60))
    return labels


def dilate(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_dilation(mask, structure=CUBE, border_value=0)


def erode(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(mask, structure=CUBE, border_value=0)


def closing(mask: np.ndarray, times: int = 2) -> np.ndarray:
    """Dilate then erode, `times` times (zero outside the volume, so a closing may shave the border)."""
    for _ in range(times):
        mask = erode(dilate(mask))
    return mask


def outside_two_largest(mask: np.ndarray) -> np.ndarray:
    """Voxels outside the two most populous values of the mask's component labelling (background counts
    as one value): i.e. the voxels of all but the largest component, when the background is larger."""
    out = np.zeros(mask.shape, dtype=bool)
    n_label = int(mask.sum())
    if n_label == 0:
        return out
    where = np.nonzero(mask)
    box = tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)
    components, count = ndimage.label(mask[box], structure=CUBE)
    counts = np.bincount(components.ravel(), minlength=count + 1).astype(np.int64)
    counts[0] = mask.size - n_label  # background of the whole volume, not only of the box
    # Ties (common among specks) are broken as the reference breaks them: numpy's default argsort of the
    # counts, read from the end; the counts array is the reference's, component for component (both number
    # components in raster order), so the same two are kept.
    order = np.argsort(counts)[::-1]
    keep = set(int(v) for v in order[:2])
    dropped = ~np.isin(components, list(keep))
    if 0 not in keep:  # the background itself is dropped (a label filling most of the volume)
        out[...] = True
        out[box] = dropped
    else:
        out[box] = dropped
    return out


def keep_largest_components(volume: np.ndarray, labels: list[int], fill: int) -> np.ndarray:
    """Each listed label keeps its largest component; the others' voxels become `fill`."""
    drop = np.zeros(volume.shape, dtype=bool)
    for label in labels:
        drop |= outside_two_largest(volume == label)
    out = volume.copy()
    out[drop] = fill
    return out


def fill_into_removed(volume: np.ndarray, label: int, removed: np.ndarray) -> np.ndarray:
    """Removed voxels within three voxels of the label (where that organ may take them back)."""
    return dilate(dilate(dilate(volume == label))) & removed.astype(bool)


def postprocess_generated(volume: np.ndarray, target_tumor: int | None = None) -> np.ndarray:
    """The reference's post-processing of a generated map of MAISI ids; `target_tumor` is the tumor asked for."""
    volume = np.asarray(volume).astype(np.int64, copy=True)
    hepatic_vessel = volume == HEPATIC_VESSEL
    airway = volume == AIRWAY

    body = erode(volume > 0)
    body = dilate(body & ~outside_two_largest(body))
    volume = volume * body

    for tumor, host in TUMOR_HOST.items():
        if tumor != target_tumor:
            volume[volume == tumor] = host
        else:
            volume[closing(volume == tumor)] = tumor
            volume[closing(volume == tumor)] = tumor
    if target_tumor is not None and target_tumor not in (26, 128):
        volume = keep_largest_components(volume, [target_tumor], BODY)
    tumor_mask = volume == target_tumor if target_tumor is not None else np.zeros(volume.shape, dtype=bool)

    organs = single_component_labels(target_tumor)
    data = keep_largest_components(volume, organs, BODY)
    organ_removed = volume != data
    bowel = np.isin(data, BOWEL)
    bowel_kept = bowel & ~outside_two_largest(bowel)
    bowel_removed = np.isin(data, (19, 62)) & ~bowel_kept
    data[bowel_removed] = BODY

    for organ in organs:
        data[closing(data == organ)] = organ

    if target_tumor == 23 and tumor_mask.any():
        data = _lung_tumor_steps(data, organ_removed)
    if target_tumor == 26 and tumor_mask.any():
        data, tumor_mask = _hepatic_tumor_steps(data, tumor_mask, organ_removed, bowel_removed)
    if target_tumor == 27 and tumor_mask.any():
        ring = dilate(dilate(data == 27))
        data[fill_into_removed(data, 27, ring & organ_removed)] = 27

    data[hepatic_vessel] = 1  # the model cannot size hepatic vessels: shown as liver, as the reference does
    data[airway] = AIRWAY
    if target_tumor is not None:
        data[tumor_mask] = target_tumor
    return data


def _lung_tumor_steps(data: np.ndarray, organ_removed: np.ndarray) -> np.ndarray:
    tumor = data == 23
    grown = dilate(tumor)
    around = data[grown & ~tumor]
    around = around[around > 0]
    host = int(np.argmax(np.bincount(around))) if around.size else None  # most common neighbour (smallest on ties)
    if host in LUNG_LOBES:
        grown = dilate(grown)
        data[fill_into_removed(data, host, grown & ~(data == 23))] = host
    grown = dilate(grown)
    data[fill_into_removed(data, 23, grown & organ_removed)] = 23
    for lobe in LUNG_LOBES:
        for _ in range(3):
            data[closing(data == lobe)] = lobe
    return data


def _hepatic_tumor_steps(data: np.ndarray, tumor: np.ndarray, organ_removed: np.ndarray,
                         bowel_removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(2):
        data[fill_into_removed(data, 1, bowel_removed)] = 1
    for _ in range(2):
        data[fill_into_removed(data, 3, organ_removed)] = 3
    ring = dilate(dilate(data == 26))
    data[fill_into_removed(data, 26, ring & organ_removed)] = 26
    # The reference then keeps the tumor only where tumor, vessel and liver labels overlap, which they
    # never do (one label per voxel): the final re-stamp of the tumor is empty, as there.
    tumor = np.zeros(data.shape, dtype=bool)
    for _ in range(3):
        data[closing(data == 1)] = 1
    return data, tumor


KIDNEY_MASS = 129
KIDNEYS = (5, 14)


def fold_kidney_mass(volume: np.ndarray) -> np.ndarray:
    """The official generator has a 'kidney mass' class (id 129), which MAISI's label dictionary lists as
    unused and the CT models do not take: its voxels join the nearest kidney (body if there is none)."""
    mass = volume == KIDNEY_MASS
    if not mass.any():
        return volume
    out = volume.copy()
    kidney = np.isin(volume, KIDNEYS)
    if not kidney.any():
        out[mass] = BODY
        return out
    _, nearest = ndimage.distance_transform_edt(~kidney, return_indices=True)
    out[mass] = volume[tuple(axis[mass] for axis in nearest)]
    return out
