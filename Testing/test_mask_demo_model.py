"""The demo mask model shipped in MAISIEngine/assets/demo: its maps hold the organs, and the liver size acts.

Runs the real shipped weights through `maisi masks generate`'s pipeline on the model's native grid
(64^3 at 6 mm), a few seconds per map on one CPU core.
"""

from __future__ import annotations

import numpy as np
import pytest

from MAISIEngine.maskgen import generate_mask, load_mask_model

LISTED_ORGANS = {"liver": (1,), "spleen": (3,), "right kidney": (5,), "left kidney": (14,), "pancreas": (4,),
                 "lungs": (28, 29, 30, 31, 32), "vertebrae": tuple(range(33, 57))}
GRID, SPACING = (64, 64, 64), (6.0, 6.0, 6.0)


@pytest.fixture(scope="module")
def demo_mask_model():
    return load_mask_model("mask-demo")


def test_shipped_demo_mask_model_generates_every_listed_organ(demo_mask_model):
    result = generate_mask(demo_mask_model, [], GRID, SPACING, seed=0, region="chest-abdomen")
    labels = np.asarray(result.volume.array)
    assert labels.shape == GRID
    assert np.isin(labels, [200]).sum() > labels.size // 10  # a body around the organs
    missing = [name for name, ids in LISTED_ORGANS.items() if not np.isin(labels, ids).any()]
    assert missing == []
    assert result.provenance["model"] == "mask-demo"
    assert set(result.provenance["weights"]) == {"mask_autoencoder", "mask_diffusion_unet", "size_database"}


def test_asking_a_larger_liver_gives_a_larger_liver(demo_mask_model):
    def liver_voxels(size: float) -> int:
        result = generate_mask(demo_mask_model, [("liver", size)], GRID, SPACING, seed=100, region="chest-abdomen")
        return int((np.asarray(result.volume.array) == 1).sum())

    small, large = liver_voxels(0.1), liver_voxels(0.9)
    assert small > 0 and large > small
