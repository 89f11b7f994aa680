"""Soft organs, vessels and airways of the phantom, placed against the landmarks.

Each function returns structures in painting order. Sizes follow adult anatomy (liver ~1.3 L,
kidneys ~11 cm long at T12-L3, aorta 3 cm at the root tapering to 1.7 cm at its L4 bifurcation);
positions, sizes and surface shapes vary by seed through `Variation`.
"""

from __future__ import annotations

import numpy as np

from MAISIEngine.labels import BODY, LUNG_IDS
from MAISIEngine.phantom.landmarks import Landmarks
from MAISIEngine.phantom.shapes import Blob, Clip, Region, Tube, Union, smooth_tube
from MAISIEngine.phantom.structures import (
    AIRWAY,
    AORTA,
    BLADDER,
    COLON,
    ESOPHAGUS,
    GALLBLADDER,
    HEART,
    IVC,
    KIDNEY_L,
    KIDNEY_R,
    LIVER,
    LUNG_LEFT_LOWER,
    LUNG_LEFT_UPPER,
    LUNG_RIGHT_LOWER,
    LUNG_RIGHT_MIDDLE,
    LUNG_RIGHT_UPPER,
    PANCREAS,
    SMALL_BOWEL,
    SOFT_OVER,
    SPLEEN,
    STOMACH,
    TRACHEA,
    Structure,
    Variation,
    const,
    frame_from_axis,
    shell,
)
from MAISIEngine.phantom.tissue import T

CHEST_OVER = SOFT_OVER | LUNG_IDS
HILA = (np.array([45.0, -25.0, 60.0]), np.array([-45.0, -25.0, 55.0]))
"""Where the pulmonary vessels enter each lung (their texture is thickest there)."""


def lungs(lm: Landmarks, draw: Variation) -> list[Structure]:
    """Five lobes: each lung fills the cavity above the diaphragm, beside the mediastinum and spine."""
    apex_z = draw.uniform(155.0, 175.0)
    med_half = draw.uniform(20.0, 28.0)
    torso = lm.torso

    def lung_region(side: int) -> Region:
        def fn(x, y, z):
            f = 1.0 + (torso.cavity_s(x, y, z) + 3.0) / 50.0  # pleural margin inside the wall
            f = np.maximum(f, 1.0 + (lm.diaphragm(x, y) + 3.0 - z) / 50.0)
            f = np.maximum(f, 1.0 + (8.0 - side * x) / 50.0)
            apex = np.maximum(z - 60.0, 0.0) / (apex_z - 60.0)
            f = np.maximum(f, ((x - side * 60.0) / 68.0) ** 2 + ((y + 18.0) / 70.0) ** 2 + apex**2)
            yv = lm.spine_y(z)
            f = np.maximum(f, 2.0 - ((x / 36.0) ** 2 + ((y - yv + 12.0) / 42.0) ** 2))  # paravertebral
            half = med_half + 12.0 * np.clip((z - 50.0) / 50.0, 0.0, 1.0)  # wider upper mediastinum
            return np.maximum(f, np.where(y > yv + 8.0, 1.0 + (half - np.abs(x + 5.0)) / 50.0, 0.0))

        lo = [8.0 if side > 0 else -175.0, -140.0, -130.0]
        hi = [175.0 if side > 0 else -8.0, 110.0, apex_z]
        return Region(fn, lo, hi)

    oblique = {s: (draw.uniform(60.0, 90.0), draw.uniform(-0.65, -0.45)) for s in (1, -1)}
    horizontal_z = draw.uniform(25.0, 45.0)

    def above_oblique(side: int) -> Region:
        z0, slope = oblique[side]
        return Region(lambda x, y, z: 1.0 + (z0 + slope * (y + 90.0) - z) / 50.0)

    above_horizontal = Region(lambda x, y, z: 1.0 + (horizontal_z - z) / 50.0)
    right, left = lung_region(1), lung_region(-1)
    lung = const(T["lung"])
    return [
        Structure("right lung lower lobe", LUNG_RIGHT_LOWER, right, lung),
        Structure(
            "right lung middle lobe",
            LUNG_RIGHT_MIDDLE,
            Clip(right, above_oblique(1)),
            lung,
            over=frozenset({LUNG_RIGHT_LOWER}),
        ),
        Structure(
            "right lung upper lobe",
            LUNG_RIGHT_UPPER,
            Clip(right, above_oblique(1), above_horizontal),
            lung,
            over=frozenset({LUNG_RIGHT_MIDDLE}),
        ),
        Structure("left lung lower lobe", LUNG_LEFT_LOWER, left, lung),
        Structure(
            "left lung upper lobe",
            LUNG_LEFT_UPPER,
            Clip(left, above_oblique(-1)),
            lung,
            over=frozenset({LUNG_LEFT_LOWER}),
        ),
    ]


def heart(lm: Landmarks, draw: Variation) -> tuple[list[Structure], list[Structure], np.ndarray]:
    """Pericardial fat (cut into the lungs first), then the heart; also returns the heart centre."""
    center = draw.jitter([-15.0, 22.0, 32.0 + lm.z_right], 4.0)
    radii = draw.scale([62.0, 48.0, 44.0], 0.9, 1.1)
    rot = frame_from_axis(draw.jitter([-0.65, 0.45, -0.5], 0.06), secondary=(0.3, 0.0, 1.0))  # apex left-down-front
    on_diaphragm = lm.above_diaphragm(3.0)
    fat = Structure(
        "pericardial fat", BODY, Clip(Blob(center, radii + 6.0, rot=rot), on_diaphragm), const(T["fat"]), CHEST_OVER
    )
    solid = Clip(Blob(center, radii, rot=rot, bumps=draw.bumps(2, 0.04)), on_diaphragm)
    organ = Structure("heart", HEART, solid, shell(T["myocardium"], T["blood"], 0.8), CHEST_OVER)
    return [fat], [organ], center


def deep_muscles(lm: Landmarks) -> list[Structure]:
    """Unlabelled muscle HU behind the spine (erector spinae) and beside the lumbar spine (psoas)."""
    out = []
    for side in (1, -1):
        pts, radii = [], []
        for z in np.linspace(-290.0, 200.0, 12):
            c, _ = lm.canal_center(z)
            lumbar = z < -120
            pts.append([c[0] + side * (32.0 if lumbar else 27.0), c[1] - (16.0 if lumbar else 12.0), z])
            radii.append(26.0 if lumbar else (20.0 if z < 150 else 14.0))
        back = Clip(smooth_tube(pts, radii, 3), lm.cavity(-12.0))
        out.append(Structure("paraspinal muscle", BODY, back, const(T["muscle"]), CHEST_OVER))
        psoas = [
            [side * 25.0, float(lm.spine_y(-110.0)) + 5.0, -110.0],
            [side * 40.0, float(lm.spine_y(-200.0)) - 2.0, -200.0],
            [side * 55.0, -35.0, -290.0],
            [side * 72.0, -10.0, -370.0],
            [side * 80.0, 0.0, -440.0],
        ]
        out.append(Structure("psoas", BODY, smooth_tube(psoas, [8.0, 17.0, 22.0, 20.0, 17.0], 4), const(T["muscle"])))
    return out


def aorta_and_esophagus(lm: Landmarks, draw: Variation, heart_center: np.ndarray) -> list[Structure]:
    """Aortic root, arch and descending aorta down to the L4 bifurcation; the oesophagus behind the trachea."""
    front = lm.front_of_spine
    aorta = [
        heart_center + np.array([12.0, 0.0, 15.0]),
        [8.0, 22.0, 85.0 + lm.z_right],
        [0.0, 5.0, 112.0],
        [-18.0, -25.0, 104.0],
        [-28.0, front(70.0, 2.0), 70.0],
        [-25.0, front(0.0, 5.0), 0.0],
        [-14.0, front(-100.0, 9.0), -100.0],
        [-8.0, front(-180.0, 11.0), -180.0],
        [-5.0, front(-235.0, 10.0), -235.0],
    ]
    aorta = [draw.jitter(p, 2.0) for p in aorta]
    aorta_r = draw.scale([15.0, 15.0, 14.0, 13.0, 12.0, 11.0, 10.5, 9.5, 8.5], 0.9, 1.1)
    esophagus = [
        [-2.0, -12.0, 245.0],
        [-4.0, front(150.0, 6.0), 150.0],
        [-6.0, front(60.0, 14.0), 60.0],
        [-14.0, -20.0, -15.0],
        [-38.0, -12.0, -42.0 + lm.z_left],
    ]
    esophagus = [draw.jitter(p, 2.0) for p in esophagus]
    return [
        Structure("aorta", AORTA, smooth_tube(aorta, aorta_r, 5), const(T["blood"]), CHEST_OVER),
        Structure("esophagus", ESOPHAGUS, smooth_tube(esophagus, 8.0, 4), const(T["esophagus"]), CHEST_OVER),
    ]


def upper_abdomen(lm: Landmarks, draw: Variation) -> list[Structure]:
    """Liver (filling the right dome), gallbladder, inferior vena cava, spleen, kidneys, stomach, pancreas."""
    below = lm.below_diaphragm(4.0)
    zr, zl = lm.z_right, lm.z_left
    right_lobe = Blob(
        draw.jitter([64.0, 0.0, zr - 62.0]), draw.scale([72.0, 80.0, 84.0], 0.9, 1.1), p=2.2, bumps=draw.bumps(3, 0.07)
    )
    left_lobe = Blob(draw.jitter([-8.0, 36.0, zr - 48.0]), draw.scale([48.0, 36.0, 26.0]), bumps=draw.bumps(2, 0.06))
    liver = Clip(Union(right_lobe, left_lobe), below, lm.cavity(3.0), lm.outside_spine())
    out = [Structure("liver", LIVER, liver, const(T["liver"]))]

    gb_rot = frame_from_axis(draw.jitter([0.1, 0.55, -0.8], 0.08), secondary=(1.0, 0.0, 0.0))  # fundus down-front
    gb = Blob(draw.jitter([45.0, 42.0, zr - 92.0], 4.0), draw.scale([38.0, 16.0, 17.0], 0.8, 1.15), rot=gb_rot)
    bile = shell(T["soft tissue"], T["bile"], 0.9)
    out.append(Structure("gallbladder", GALLBLADDER, Clip(gb, lm.cavity(3.0)), bile, SOFT_OVER | {LIVER}))

    front = lm.front_of_spine
    ivc = [
        [20.0, 5.0, -2.0 + zr],
        [22.0, -15.0, -50.0],
        [22.0, front(-120.0, 6.0), -120.0],
        [20.0, front(-235.0, 8.0), -235.0],
    ]
    ivc_tube = smooth_tube([draw.jitter(p, 2.0) for p in ivc], draw.scale([13.0, 12.0, 11.0, 11.0], 0.9, 1.1), 5)
    out.append(Structure("inferior vena cava", IVC, ivc_tube, const(T["blood"]), SOFT_OVER | {LIVER}))

    spleen_rot = frame_from_axis(draw.jitter([-0.35, 0.75, -0.55], 0.08), secondary=(-1.0, 0.0, 0.0))
    spleen = Blob(
        draw.jitter([-92.0, -45.0, zl - 55.0]),
        draw.scale([55.0, 25.0, 36.0]),
        rot=spleen_rot,
        bumps=draw.bumps(2, 0.07),
    )
    out.append(Structure("spleen", SPLEEN, Clip(spleen, below, lm.cavity(3.0)), const(T["spleen"])))

    kidney_tissue = shell(T["kidney cortex"], T["kidney medulla"], 0.7)
    for side, label, zc in ((1, KIDNEY_R, -165.0), (-1, KIDNEY_L, -148.0)):
        center = draw.jitter([side * 68.0, -58.0, zc], 5.0)
        hilum_dir = (side * np.cos(np.deg2rad(30)), -np.sin(np.deg2rad(30)), 0.0)  # minus: medial and anterior
        rot = frame_from_axis(draw.jitter([side * -0.2, 0.15, 1.0], 0.05), secondary=hilum_dir)  # upper pole medial
        radii = draw.scale([55.0, 29.0, 22.0], 0.9, 1.1)
        kidney = Clip(Blob(center, radii, rot=rot, bumps=draw.bumps(1, 0.04)), lm.cavity(3.0))
        out.append(Structure("kidney", label, kidney, kidney_tissue, SOFT_OVER | {LIVER, SPLEEN}))
        hilum = center + rot @ np.array([0.0, -radii[1] * 0.95, 0.0])
        sinus = Blob(hilum, [20.0, 12.0, 10.0], rot=rot)
        out.append(Structure("renal sinus fat", BODY, sinus, const(T["fat"]), frozenset({label})))

    stomach = [
        [-55.0, -5.0, zl - 28.0],
        [-62.0, 22.0, zl - 75.0],
        [-38.0, 45.0, zl - 118.0],
        [2.0, 48.0, zl - 125.0],
        [24.0, 32.0, zl - 112.0],
    ]
    stomach = [draw.jitter(p, 4.0) for p in stomach]
    stomach_r = draw.scale([40.0, 36.0, 30.0, 21.0, 13.0], 0.85, 1.15)
    gas_level = draw.uniform(48.0, 62.0)  # supine: gas rises to the front

    def gastric(f, axes):
        ys = axes[1]
        gas = np.where(ys[None, :, None] > gas_level, np.uint8(T["gas"]), np.uint8(T["gastric content"]))
        return np.broadcast_to(gas, f.shape).copy()

    out.append(Structure("stomach", STOMACH, Clip(smooth_tube(stomach, stomach_r, 5), below, lm.cavity(3.0)), gastric))

    pancreas = [
        [30.0, 5.0, -168.0],
        [6.0, 26.0, -150.0],
        [-28.0, 12.0, -136.0],
        [-66.0, -18.0, -122.0],
        [-84.0, -30.0, -112.0],
    ]
    pancreas = [draw.jitter(p, 3.0) for p in pancreas]  # head in the duodenal sweep, tail at the splenic hilum
    tube = smooth_tube(pancreas, draw.scale([17.0, 12.0, 11.0, 10.0, 8.0], 0.85, 1.15), 5)
    out.append(Structure("pancreas", PANCREAS, tube, const(T["pancreas"])))
    return out


def bowel_and_bladder(lm: Landmarks, draw: Variation) -> list[Structure]:
    """Small-bowel loops (a persistent random walk kept in the mesenteric space), colon frame, bladder."""
    center, radii = np.array([0.0, 25.0, -238.0]), np.array([88.0, 55.0, 78.0])
    turns = draw.rng.normal(0.0, 1.0, (80, 3))
    point = np.array([-25.0, 15.0, -165.0])  # duodeno-jejunal flexure
    direction = np.array([0.0, 0.3, -1.0]) / np.linalg.norm([0.0, 0.3, -1.0])
    path = [point.copy()]
    for turn in turns:
        direction = direction + 0.9 * turn
        direction /= np.linalg.norm(direction)
        u = (point + 21.0 * direction - center) / radii
        if np.linalg.norm(u) > 0.85:  # reflect back inside
            normal = u / radii
            normal /= np.linalg.norm(normal)
            direction = direction - 2.0 * (direction @ normal) * normal
        point = point + 21.0 * direction
        path.append(point.copy())
    out = [
        Structure("small bowel", SMALL_BOWEL, Clip(smooth_tube(path, 13.0, 3), lm.cavity(4.0)), const(T["small bowel"]))
    ]

    colon = [
        [68.0, 10.0, -272.0], [80.0, -15.0, -205.0], [82.0, -18.0, -160.0], [72.0, 12.0, -152.0],
        [38.0, 55.0, -168.0], [0.0, 62.0, -188.0], [-40.0, 52.0, -162.0], [-78.0, 15.0, -125.0],
        [-88.0, -18.0, -170.0], [-88.0, -15.0, -230.0], [-70.0, 12.0, -292.0], [-32.0, 32.0, -318.0],
        [0.0, 12.0, -330.0], [5.0, -58.0, -360.0], [0.0, -75.0, -420.0], [0.0, -68.0, -470.0],
    ]  # fmt: skip
    colon = [draw.jitter(p, 5.0) for p in colon]  # caecum, ascending, transverse, descending, sigmoid, rectum
    colon_r = draw.scale([26, 22, 21, 21, 20, 19, 19, 19, 18, 17, 16, 15, 15, 15, 17, 16], 0.85, 1.15)
    wall = shell(T["colon wall"], T["colon content"], 0.78)
    out.append(
        Structure("colon", COLON, Clip(smooth_tube(colon, colon_r, 4), lm.cavity(3.0)), wall, SOFT_OVER | {SMALL_BOWEL})
    )

    fill = draw.uniform(0.7, 1.1)
    bladder = Clip(
        Blob(draw.jitter([0.0, 42.0, -392.0], 4.0), np.array([45.0, 36.0, 34.0]) * fill, p=2.2), lm.cavity(3.0)
    )
    urine = shell(T["soft tissue"], T["urine"], 0.93)
    out.append(Structure("bladder", BLADDER, bladder, urine, SOFT_OVER | {SMALL_BOWEL, COLON}))
    return out


def airways(lm: Landmarks, draw: Variation) -> list[Structure]:
    """Trachea from the neck to the carina (~T4-T5) and the two main bronchi (MAISI 'airway')."""
    carina = draw.jitter([0.0, -15.0, 95.0 + lm.z_right * 0.5], 3.0)
    trachea = smooth_tube(
        [[0.0, 12.0, 250.0], [0.0, 6.0, 170.0], [0.0, -6.0, 130.0], carina], draw.uniform(8.0, 10.0), 4
    )
    air = shell(T["airway wall"], T["airway air"], 0.85)
    out = [Structure("trachea", TRACHEA, trachea, air, CHEST_OVER | {ESOPHAGUS})]
    for dx, dz in ((44.0, -30.0), (-50.0, -38.0)):  # the right bronchus is shorter and steeper
        bronchus = Tube([carina, carina + [dx * 0.5, -5.0, dz * 0.45], carina + [dx, -10.0, dz]], [6.5, 6.0, 5.0])
        out.append(Structure("main bronchus", AIRWAY, bronchus, air, CHEST_OVER))
    return out
