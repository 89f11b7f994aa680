"""CTs that the shipped demo model generates from held-out phantom masks: the paper's quality check passes,
and organ medians sit near the phantom's tissue values. This is the demo model's acceptance measured by
`bench/demo_quality.py`, on the first 4 of its 10 seeds (128^3 at 3 mm, 20 steps, about 6 s each on 2 cores).

At smaller sizes or 4 mm the demo model does worse (96^3: the quality check passes on 3 of 6); its model
card says so, and this test measures what the card claims.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from demo_quality import generation_figures

SEEDS = 4
ALWAYS_WITHIN = ("liver", "spleen", "lungs", "bone")
"""Organ groups within tolerance on every seed; kidneys and heart miss now and then (2 of 10 seeds)."""
MIN_ALL_ORGANS = 3


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generation_figures("demo", SEEDS)["rows"]


def test_the_papers_quality_check_passes_on_every_seed(rows):
    assert {row["seed"]: row["quality_failed"] for row in rows if not row["quality_passed"]} == {}


def test_liver_spleen_lungs_and_bone_are_near_the_phantoms_tissue_on_every_seed(rows):
    misses = {(row["seed"], group): entry["error_hu"] for row in rows
              for group, entry in row["organs"].items() if group in ALWAYS_WITHIN and not entry["ok"]}
    assert misses == {}
    bone_medians = [row["organs"]["bone"]["median_hu"] for row in rows]
    assert min(bone_medians) >= 80.0  # bone within 150 HU of the phantom's 230: it used to come out at 59-98


def test_all_organ_tolerances_hold_on_most_seeds(rows):
    all_within = [row["seed"] for row in rows if row["organs_ok"]]
    assert len(all_within) >= MIN_ALL_ORGANS, all_within
