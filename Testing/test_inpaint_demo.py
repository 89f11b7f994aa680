"""Tumor inpainting with the shipped demo model: the seam of the pasted region does not show.

A liver tumor is painted into a phantom CT (which itself has no tumor) and inpainted by both methods.
The steps the input already has where two soft tissues meet are the reference: no step across the
blending band may be larger.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MAISIEngine.inpaint import FEATHER_VOXELS, InpaintRequest, inpaint
from MAISIEngine.io.nifti import Volume
from MAISIEngine.phantom import make_phantom

SPACING = (3.0, 3.0, 3.0)
MARGIN_MM = 9.0
TUMOR_RADIUS_MM = 20.0
SOFT_TISSUE_HU = (-200.0, 300.0)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(size=(96, 96, 96), spacing=SPACING, region="abdomen", seed=12)


def tumor_in_liver(labels: np.ndarray) -> np.ndarray:
    """A ball of 20 mm radius around the point of the liver farthest from its edge."""
    liver = labels == 1
    depth = ndimage.distance_transform_edt(np.pad(liver, 1), sampling=SPACING)[1:-1, 1:-1, 1:-1]
    centre = np.unravel_index(int(np.argmax(depth)), liver.shape)
    assert depth[centre] > TUMOR_RADIUS_MM + MARGIN_MM, "the phantom's liver is too thin for the test tumor"
    grid = np.indices(liver.shape).astype(np.float32)
    distance = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, SPACING)))
    return (distance <= TUMOR_RADIUS_MM) & liver


def neighbour_steps(image: np.ndarray, pairs_wanted) -> np.ndarray:
    """|difference| of face-neighbouring voxels (along every axis) for the pairs `pairs_wanted` selects."""
    steps = []
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        selected = pairs_wanted(a, b)
        steps.append(np.abs(image[a].astype(np.float32) - image[b].astype(np.float32))[selected])
    return np.concatenate(steps)


@pytest.fixture(scope="module", params=["controlnet-repaint", "inpaint-controlnet"])
def inpainted(request, phantom):
    tumor = tumor_in_liver(phantom.labels)
    job = InpaintRequest(image=Volume(phantom.ct.copy(), phantom.affine),
                         labels=Volume(phantom.labels.copy(), phantom.affine), tumor=tumor, tumor_type="liver",
                         model="demo", method=request.param, margin_mm=MARGIN_MM, seed=0, device="cpu")
    image, _, _ = inpaint(job)
    return request.param, tumor, image.array


def test_the_blending_band_has_no_step_larger_than_the_inputs_tissue_transitions(inpainted, phantom) -> None:
    method, tumor, image = inpainted
    ct, labels = phantom.ct, phantom.labels
    soft = (ct >= SOFT_TISSUE_HU[0]) & (ct <= SOFT_TISSUE_HU[1])
    transitions = neighbour_steps(ct, lambda a, b: (labels[a] != labels[b]) & soft[a] & soft[b])
    distance = ndimage.distance_transform_edt(~tumor, sampling=SPACING)
    band = (distance > MARGIN_MM - FEATHER_VOXELS * min(SPACING) - 1e-3) & (distance <= MARGIN_MM + min(SPACING))
    seam = neighbour_steps(image, lambda a, b: (band[a] | band[b]) & (labels[a] == labels[b]))
    print(f"{method}: largest seam step {seam.max():.0f} HU over {seam.size} pairs; "
          f"largest soft-tissue transition in the input {transitions.max():.0f} HU")
    assert seam.size > 100 and transitions.size > 100
    assert seam.max() <= transitions.max()
