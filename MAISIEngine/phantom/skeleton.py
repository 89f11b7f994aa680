"""Bones of the phantom: vertebrae with discs and canal, sacrum, hips, femurs, ribs, sternum.

Every bone has a cortical rind around cancellous bone (the femoral shaft around fatty marrow), so the
median HU of the bone group sits near 250, like the real CTs behind MAISI's quality statistics.
"""

from __future__ import annotations

import numpy as np

from MAISIEngine.labels import BODY, LUNG_IDS
from MAISIEngine.phantom.landmarks import VERTEBRAE, Landmarks
from MAISIEngine.phantom.shapes import Blob, Clip, Region, Shell, Tube, Union
from MAISIEngine.phantom.structures import (
    BONE_OVER,
    COLON,
    COSTAL_CARTILAGE,
    FEMUR_L,
    FEMUR_R,
    HIP_L,
    HIP_R,
    RIB_LEFT_1,
    RIB_RIGHT_1,
    SACRUM,
    SMALL_BOWEL,
    SOFT_OVER,
    SPINAL_CORD,
    STERNUM,
    Structure,
    Variation,
    const,
    max_all,
    shell,
)
from MAISIEngine.phantom.tissue import T

CORTEX = T["cortical bone"]
CANCELLOUS = T["cancellous bone"]
PELVIS_OVER = BONE_OVER | {SMALL_BOWEL, COLON}


def spine(lm: Landmarks) -> tuple[list[Structure], list[tuple[int, np.ndarray, float]]]:
    """Discs, vertebral bodies and arches (with spinous and transverse processes), L5 to C3.

    Also returns (id, centre, smaller radius) of each vertebral body, where bone lesions may go.
    """
    out, bodies = [], []
    body_bone = shell(CORTEX, CANCELLOUS, 0.93)
    arch_bone = shell(CORTEX, CANCELLOUS, 0.75)
    for lv in lm.levels:
        kind = lv.name[0]  # L, T or C
        height = lv.z_top - lv.z_bottom
        disc = {"C": 4.0, "T": 5.0, "L": 8.0}[kind]
        half = (height - disc) / 2.0
        zc = lv.z_bottom + disc + half
        c = np.array([float(lm.spine_x(zc)), float(lm.spine_y(zc)), zc])
        bodies.append((lv.label, c, min(lv.rx, lv.ry)))
        disc_shape = Blob([c[0], c[1], lv.z_bottom + disc / 2.0], [lv.rx, lv.ry, disc / 2.0 + 1.0], p=2.2, q=4.0)
        out.append(Structure(f"disc below {lv.name}", BODY, disc_shape, const(T["disc"]), SOFT_OVER | LUNG_IDS))
        out.append(
            Structure(
                f"vertebra {lv.name}", lv.label, Blob(c, [lv.rx, lv.ry, half], p=2.2, q=6.0), body_bone, BONE_OVER
            )
        )

        rc = lv.rc
        cc = np.array([c[0], c[1] - lv.ry - 0.9 * rc, zc])  # canal centre
        arch = Blob(cc, [rc + 6.5, rc + 6.0, half * 0.8], p=2.0, q=4.0)
        spinous_len = {"L": 30.0, "T": 26.0, "C": 18.0}[kind]
        spinous_drop = 6.0 if kind == "L" else 16.0  # thoracic spines point steeply down
        spinous = Tube([cc + [0.0, -rc - 3.0, 0.0], cc + [0.0, -rc - spinous_len, -spinous_drop]], [5.0, 4.0])
        reach = {"L": 28.0, "T": 24.0, "C": 14.0}[kind]
        transverse = [Tube([cc + [s * rc, 2.0, 0.0], cc + [s * (rc + reach), -4.0, 2.0]], [5.0, 4.0]) for s in (1, -1)]
        posterior = Union(arch, spinous, *transverse)
        out.append(Structure(f"vertebra {lv.name} arch", lv.label, posterior, arch_bone, BONE_OVER | {lv.label}))
    return out, bodies


def spinal_canal(lm: Landmarks, draw: Variation) -> list[Structure]:
    """CSF-filled canal through the arches, and the cord ending at the conus (~L1)."""
    zs = np.linspace(-300.0, 250.0, 23)
    points, radii = zip(*[lm.canal_center(z) for z in zs])
    vertebrae = frozenset(v[0] for v in VERTEBRAE)
    canal = Structure("spinal canal", BODY, Tube(points, radii), const(T["csf"]), SOFT_OVER | vertebrae | {SACRUM})
    conus = draw.uniform(-160.0, -130.0)
    cord_z = np.linspace(conus, 250.0, 16)
    cord_r = np.interp(cord_z, [conus, conus + 30.0, 250.0], [2.0, 4.5, 5.5])
    cord = Tube([lm.canal_center(z)[0] for z in cord_z], cord_r)
    return [canal, Structure("spinal cord", SPINAL_CORD, cord, const(T["spinal cord"]))]


def sacrum() -> list[Structure]:
    """Five fused segments curving back and down from the promontory, then the coccyx."""
    parts = [
        ([0.0, -58.0, -296.0], [52.0, 22.0, 15.0]),
        ([0.0, -68.0, -323.0], [42.0, 18.0, 13.0]),
        ([0.0, -80.0, -346.0], [32.0, 14.0, 12.0]),
        ([0.0, -93.0, -366.0], [23.0, 11.0, 11.0]),
        ([0.0, -103.0, -385.0], [15.0, 9.0, 10.0]),
        ([0.0, -108.0, -403.0], [8.0, 7.0, 10.0]),
    ]
    bone = Union(*[Blob(c, r, p=2.3) for c, r in parts])
    return [Structure("sacrum", SACRUM, bone, shell(CORTEX, CANCELLOUS, 0.9), PELVIS_OVER)]


def pelvis_and_femurs(draw: Variation) -> list[Structure]:
    """Each hip: iliac wing, acetabulum, pubic and ischial rami; each femur: head, neck, trochanter, shaft."""
    out = []
    w = draw.uniform(0.94, 1.06)  # pelvic width
    for side, hip_label, femur_label in ((1, HIP_R, FEMUR_R), (-1, HIP_L, FEMUR_L)):
        sector = Region(
            lambda x, y, z, s=side: max_all(
                1.0 + (z + 222.0) / 50.0,  # below the iliac crest
                1.0 - (z + 335.0) / 50.0,  # above the acetabulum
                1.0 + (44.0 - s * x) / 50.0,  # lateral to the sacro-iliac joint
                1.0 - (y + 86.0) / 50.0,
                1.0 + (y - 42.0) / 50.0,
            )
        )
        wing = Clip(Shell([side * 40.0 * w, -12.0, -252.0], [92.0 * w, 80.0, 100.0], 9.0), sector)
        head_c = np.array([side * 88.0 * w, 6.0, -370.0])
        acetabulum = Blob(head_c + [side * -2.0, 0.0, 14.0], [30.0, 33.0, 30.0])
        pubic = Tube(
            [head_c + [side * -8.0, 20.0, -8.0], [side * 40.0 * w, 55.0, -393.0], [side * 6.0, 60.0, -405.0]],
            [10.0, 9.0, 8.0],
        )
        ischium = Tube(
            [head_c + [side * -6.0, -22.0, -6.0], [side * 66.0 * w, -32.0, -420.0], [side * 56.0 * w, -26.0, -446.0]],
            [11.0, 11.0, 12.0],
        )
        ramus = Tube([[side * 56.0 * w, -26.0, -446.0], [side * 30.0, 22.0, -440.0], [side * 7.0, 56.0, -420.0]], 7.0)
        hip = Union(wing, acetabulum, pubic, ischium, ramus)
        out.append(Structure("hip", hip_label, hip, shell(CORTEX, CANCELLOUS, 0.72), PELVIS_OVER))

        head = Blob(head_c, [23.0, 23.0, 23.0])
        neck = Tube([head_c, head_c + [side * 30.0, -10.0, -24.0]], [15.0, 16.0])
        trochanter = Blob(head_c + [side * 34.0, -14.0, -26.0], [15.0, 18.0, 22.0])
        top = Union(head, neck, trochanter)  # carves the socket out of the acetabulum
        out.append(Structure("femur", femur_label, top, shell(CORTEX, CANCELLOUS, 0.88), PELVIS_OVER | {hip_label}))
        shaft = Tube(
            [head_c + [side * 30.0, -10.0, -34.0], [side * 104.0 * w, 6.0, -530.0], [side * 92.0 * w, 10.0, -720.0]],
            [15.0, 14.0, 13.5],
        )
        marrow = shell(CORTEX, T["marrow"], 0.62)
        out.append(Structure("femur shaft", femur_label, shaft, marrow, PELVIS_OVER | {femur_label}))
    return out


def thoracic_cage(lm: Landmarks, draw: Variation) -> list[Structure]:
    """Twelve rib pairs following the chest wall from the transverse processes, costal cartilages, sternum."""
    torso = lm.torso
    out = []
    sternum_top = draw.uniform(112.0, 124.0)
    sternum_bottom = lm.z_right - draw.uniform(35.0, 50.0)
    sternum_len = sternum_top - sternum_bottom
    drops = [35, 50, 60, 70, 75, 80, 82, 85, 82, 78, 45, 30]  # mm lower at the front end than at the spine
    ends = [70, 70, 70, 70, 70, 70, 68, 58, 48, 38, 0, -28]  # front end angle (deg; 90 = midline)
    radius = draw.uniform(4.5, 5.5)
    rib_bone = shell(CORTEX, CANCELLOUS, 0.78)

    def on_wall(theta: float, z: float, side: int) -> list[float]:
        """Point 4 mm outside the cavity contour (inside the muscle wall) at angle theta and height z."""
        _, _, yc, _ = torso.profile(np.asarray(z))
        rho = float(torso.cavity_radius(np.asarray(theta), np.asarray(z))) + 4.0
        return [side * rho * np.cos(theta), float(yc) + rho * np.sin(theta), z]

    for k in range(1, 13):
        lv = lm.level(50 - k)  # rib k articulates with T_k (T1 = 49 ... T12 = 38)
        z_att = lv.z_top - (lv.z_top - lv.z_bottom) * 0.3
        cc, rc = lm.canal_center(z_att)
        thetas = np.deg2rad(np.linspace(-58.0, ends[k - 1], 12))
        heights = z_att - drops[k - 1] * np.linspace(0.0, 1.0, len(thetas)) ** 1.4
        for side, first in ((1, RIB_RIGHT_1), (-1, RIB_LEFT_1)):
            points = [[cc[0] + side * (rc + 22.0), cc[1] - 2.0, z_att]]  # tip of the transverse process
            points += [on_wall(t, z, side) for t, z in zip(thetas, heights)]
            out.append(Structure(f"rib {k}", first + k - 1, Tube(points, radius), rib_bone, BONE_OVER))
            if k <= 7:  # true ribs: cartilage to the sternum's edge
                z_st = sternum_top - 12.0 - (k - 1) * sternum_len / 7.5
                tip = on_wall(np.deg2rad(84.0), z_st, side)
                tip[0] += side * 4.0
                cartilage = Tube([points[-1], tip], radius * 0.85)
                out.append(Structure("costal cartilage", COSTAL_CARTILAGE, cartilage, const(T["cartilage"]), BONE_OVER))

    def piece(z: float, radii, p: float = 2.0, q: float = 2.0) -> Blob:
        return Blob([0.0, torso.front_y(z) + 4.0, z], radii, p=p, q=q)

    body_len = sternum_len - 60.0
    manubrium = piece(sternum_top - 24.0, [26.0, 7.0, 24.0], p=2.2)
    gladiolus = [
        piece(sternum_top - 50.0 - body_len * f, [16.0, 6.5, body_len / 6.0 + 6.0], 2.2, 3.0) for f in (0.15, 0.5, 0.85)
    ]
    xiphoid = piece(sternum_bottom + 8.0, [9.0, 4.5, 10.0])
    sternum = Union(manubrium, *gladiolus, xiphoid)
    out.append(Structure("sternum", STERNUM, sternum, shell(CORTEX, CANCELLOUS, 0.8), BONE_OVER | {COSTAL_CARTILAGE}))
    return out
