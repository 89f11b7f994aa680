"""CTs that the shipped demo model generates from held-out phantom masks: the paper's quality check passes,
and organ medians sit near the phantom's tissue values (the demo model's acceptance, on the first 4 of the
10 seeds `bench/demo_quality.py` measures: 128^3 at 3 mm, 20 steps, about 6 s each on 2 cores).

At smaller sizes or 4 mm the demo model does worse (96^3: the quality check passes on 3 of 6); its model
card says so, and this test measures what the card claims.
"""

from __future__ import annotations

import numpy as np
import pytest

from MAISIEngine.io.nifti import Volume
from MAISIEngine.models import load_model
from MAISIEngine.phantom import make_phantom
from MAISIEngine.phantom.fidelity import organ_errors
from MAISIEngine.pipeline import GenerationRequest, generate
from MAISIEngine.quality import check_quality

HELD_OUT_SEED = 900_000
"""Phantom seeds from here on were never in a training pool (as in bench/demo_quality.py)."""
REGIONS = ("chest-abdomen", "chest", "abdomen")
CASES = range(4)
ALWAYS_WITHIN = ("liver", "spleen", "lungs", "bone")
"""Organ groups within tolerance on every case; kidneys and heart miss now and then (2 of 10 seeds)."""
MIN_ALL_ORGANS = 3


@pytest.fixture(scope="module")
def generated() -> list[tuple[int, dict, object]]:
    model = load_model("demo", "cpu")
    rows = []
    for index in CASES:
        phantom = make_phantom(size=(128, 128, 128), spacing=(3.0, 3.0, 3.0), region=REGIONS[index % 3],
                               seed=HELD_OUT_SEED + index)
        request = GenerationRequest(model="demo", mask=Volume(phantom.labels, phantom.affine),
                                    mask_source="held-out phantom", seed=index, device="cpu")
        image = np.asarray(generate(request, model=model).image.array, np.float32)
        errors = organ_errors(image, phantom.labels, phantom.nominal_hu)
        print(f"seed {index}: " + ", ".join(f"{k} {v['median_hu']:.0f}/{v['nominal_hu']:.0f}" for k, v in errors.items()))
        rows.append((index, errors, check_quality(image, phantom.labels)))
    return rows


def test_the_papers_quality_check_passes_on_every_case(generated):
    failed = {index: list(quality.failed) for index, _, quality in generated if not quality.passed}
    assert failed == {}


def test_liver_spleen_lungs_and_bone_are_near_the_phantoms_tissue_on_every_case(generated):
    misses = {(index, group): entry["error_hu"] for index, errors, _ in generated
              for group, entry in errors.items() if group in ALWAYS_WITHIN and not entry["ok"]}
    assert misses == {}
    bone_medians = [errors["bone"]["median_hu"] for _, errors, _ in generated]
    assert min(bone_medians) >= 80.0  # bone within 150 HU of the phantom's 230: it used to come out at 59-98


def test_all_organ_tolerances_hold_on_most_cases(generated):
    all_within = [index for index, errors, _ in generated if all(entry["ok"] for entry in errors.values())]
    assert len(all_within) >= MIN_ALL_ORGANS, all_within
