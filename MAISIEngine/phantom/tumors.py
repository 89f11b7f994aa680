"""Tumours placed inside their host organs, chosen by seed among points of the analytic anatomy.

A candidate centre is accepted when it and 14 probe points on a sphere of 0.9 x the tumour radius
all carry a host label (so the lesion sits well inside the organ) and the sphere lies in the field of
view. The lesion is then painted only over host voxels, so it never leaves its organ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MAISIEngine.errors import MaisiError
from MAISIEngine.labels import TUMOR_HOSTS, TUMOR_TYPES, name_of
from MAISIEngine.phantom.anatomy import Anatomy
from MAISIEngine.phantom.paint import labels_at
from MAISIEngine.phantom.shapes import Blob
from MAISIEngine.phantom.structures import Structure, const, frame_from_axis
from MAISIEngine.phantom.tissue import T

RADIUS_MM: dict[str, tuple[float, float]] = {
    "lung": (6.0, 14.0),
    "liver": (10.0, 22.0),
    "pancreas": (7.0, 11.0),
    "colon": (8.0, 13.0),
    "bone": (6.0, 9.0),
}
"""Range of tumour radii (mm) per type."""

TISSUE_OF: dict[str, str] = {
    "lung": "lung tumor",
    "liver": "hepatic tumor",
    "pancreas": "pancreatic tumor",
    "colon": "colon tumor",
    "bone": "bone lesion",
}

_CANDIDATES = 768
_PROBES = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
    + [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
    dtype=np.float64,
)
_PROBES /= np.linalg.norm(_PROBES, axis=1, keepdims=True)


@dataclass(frozen=True)
class TumorPlan:
    kind: str
    label: int
    center: np.ndarray  # template mm
    radius: float  # template mm
    structure: Structure


def place_tumors(
    anatomy: Anatomy,
    kinds: tuple[str, ...],
    fov_lo: np.ndarray,
    fov_hi: np.ndarray,
    min_radius: float,
    strict: bool = True,
) -> list[TumorPlan]:
    """Choose centre, size and shape of each requested tumour (template mm), in request order.

    A tumour whose host is not in the field of view raises a MaisiError, or is left out when
    `strict` is False (training pools draw tumour types without knowing what each grid covers).
    """
    rng = np.random.default_rng([anatomy.seed, 2])
    plans: list[TumorPlan] = []
    structures = list(anatomy.structures)
    for kind in kinds:
        label = TUMOR_TYPES[kind]
        hosts = TUMOR_HOSTS[label]
        # Fixed number of draws per tumour, whatever happens below: results stay seed-stable.
        radius0 = float(rng.uniform(*RADIUS_MM[kind]))
        unit = rng.uniform(0.0, 1.0, (_CANDIDATES, 3))
        order = rng.permutation(len(anatomy.vertebral_bodies))
        stretch = rng.uniform(0.85, 1.15, 3)
        axis = rng.normal(0.0, 1.0, 3)
        bumps = [(0.08, rng.uniform(1.0, 3.0, 3), rng.uniform(0, 2 * np.pi, 3)) for _ in range(2)]

        plan = None
        for shrink in (1.0, 0.8, 0.64):
            radius = max(radius0 * shrink, min_radius)
            lo, hi = fov_lo + radius, fov_hi - radius
            if np.any(lo >= hi):
                break
            if kind == "bone":
                bodies = [anatomy.vertebral_bodies[i] for i in order]
                points = np.array([c for _, c, r in bodies if r > radius * 1.1]).reshape(-1, 3)
            else:
                boxes = [s.shape for s in structures if s.label in hosts]
                host_lo = np.max([np.min([b.lo for b in boxes], axis=0), lo], axis=0)
                host_hi = np.min([np.max([b.hi for b in boxes], axis=0), hi], axis=0)
                if np.any(host_lo >= host_hi):
                    continue
                points = host_lo + unit * (host_hi - host_lo)
            points = points[np.all((points >= lo) & (points <= hi), axis=1)]
            if len(points) == 0:
                continue
            inside = np.isin(labels_at(structures, points), list(hosts))
            points = points[inside]
            if len(points) == 0:
                continue
            probes = points[:, None, :] + 0.9 * radius * _PROBES[None, :, :]
            probe_ok = np.isin(labels_at(structures, probes.reshape(-1, 3)), list(hosts)).reshape(len(points), -1)
            good = np.flatnonzero(probe_ok.all(axis=1))
            if len(good):
                center = points[good[0]]
                shape = Blob(center, radius * stretch, rot=frame_from_axis(axis), bumps=bumps)
                structure = Structure(f"{kind} tumor", label, shape, const(T[TISSUE_OF[kind]]), over=frozenset(hosts))
                plan = TumorPlan(kind, label, center, radius, structure)
                break
        if plan is None and not strict:
            continue
        if plan is None:
            host_names = "lungs" if kind == "lung" else ("bones" if kind == "bone" else name_of(next(iter(hosts))))
            raise MaisiError(
                f"cannot place a {kind} tumor: its host ({host_names}) is not in the field of view or too small there",
                "choose a region and size that cover it (e.g. --region abdomen for liver, pancreas, colon)",
            )
        plans.append(plan)
        structures.append(plan.structure)
    return plans
