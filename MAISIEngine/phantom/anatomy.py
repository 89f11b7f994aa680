"""One seeded person: every labelled structure as an analytic solid in template millimetres.

`build_anatomy(seed)` draws body size, fat, organ sizes, positions and shapes from one random
stream and returns the structures in painting order (later ones overwrite earlier ones, but only
over the labels each lists in `over`). Nothing here depends on a voxel grid, so the same seed gives
the same anatomy at any size, spacing and region.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from MAISIEngine.labels import BODY
from MAISIEngine.phantom import organs, skeleton
from MAISIEngine.phantom.landmarks import Landmarks
from MAISIEngine.phantom.structures import Structure, Variation
from MAISIEngine.phantom.tissue import T
from MAISIEngine.phantom.torso import BodyShape, Torso


@dataclass
class Anatomy:
    seed: int
    scale: tuple[float, float, float]  # world mm per template mm along x, y, z
    torso: Torso
    landmarks: Landmarks
    structures: list[Structure] = field(default_factory=list)
    vertebral_bodies: list[tuple[int, np.ndarray, float]] = field(default_factory=list)  # (id, centre, radius)
    hila: tuple[np.ndarray, ...] = organs.HILA


def _body(lm: Landmarks) -> Structure:
    """The body with its layers: skin, subcutaneous fat, muscle wall, and a muscular diaphragm inside."""
    shape = BodyShape(lm.torso)
    codes = {"skin": T["skin"], "fat": T["fat"], "muscle": T["muscle"], "inner": T["inner"]}

    def layers(f, axes):
        out = shape.layers(f, axes, codes)
        xs, ys, zs = axes
        band = np.abs(zs[None, None, :] - lm.diaphragm(xs[:, None, None], ys[None, :, None])) < 4.0
        out[band & (out == T["inner"])] = T["muscle"]
        return out

    return Structure("body", BODY, shape, layers, over=None)


def build_anatomy(seed: int) -> Anatomy:
    """The complete seeded person, independent of any voxel grid."""
    draw = Variation(np.random.default_rng([int(seed), 1]))
    torso = Torso.random(draw.rng)
    scale = (draw.uniform(0.92, 1.08), draw.uniform(0.92, 1.08), draw.uniform(0.94, 1.06))
    lm = Landmarks.random(draw, torso)

    pericardium, heart, heart_center = organs.heart(lm, draw)
    vertebrae, bodies = skeleton.spine(lm)
    structures = [
        _body(lm),
        *organs.lungs(lm, draw),
        *pericardium,
        *organs.deep_muscles(lm),
        *heart,
        *organs.aorta_and_esophagus(lm, draw, heart_center),
        *organs.upper_abdomen(lm, draw),
        *organs.bowel_and_bladder(lm, draw),
        *vertebrae,
        *skeleton.sacrum(),
        *skeleton.pelvis_and_femurs(draw),
        *skeleton.thoracic_cage(lm, draw),
        *skeleton.spinal_canal(lm, draw),
        *organs.airways(lm, draw),
    ]
    return Anatomy(int(seed), scale, torso, lm, structures, bodies)
