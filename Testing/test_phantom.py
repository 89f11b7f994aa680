"""Procedural torso phantoms: determinism, variation, anatomy, geometry, HU, tumours, writing, CLI."""

from __future__ import annotations

import hashlib
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from MAISIEngine.cli import main
from MAISIEngine.errors import MaisiError
from MAISIEngine.labels import BODY, BONE_IDS, LUNG_IDS, TUMOR_HOSTS, TUMOR_TYPES, valid_ids
from MAISIEngine.phantom import REGIONS, make_phantom, write_phantom
from MAISIEngine.phantom.scanner import material_means, point_spread
from MAISIEngine.phantom.tissue import HU, T

FOV = dict(size=(64, 64, 64), spacing=(6.0, 6.0, 6.0))  # 384 mm cube, fast
MID = dict(size=(96, 96, 96), spacing=(4.0, 4.0, 4.0))  # same field of view, finer


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def centroid_mm(phantom, label: int) -> np.ndarray:
    idx = np.argwhere(phantom.labels == label)
    assert len(idx), f"label {label} absent"
    return phantom.affine[:3, :3] @ idx.mean(axis=0) + phantom.affine[:3, 3]


def volume_ml(phantom, label: int) -> float:
    return float((phantom.labels == label).sum() * np.prod(phantom.spacing) / 1000.0)


@pytest.fixture(scope="module")
def abdomen_mid():
    return make_phantom(region="abdomen", seed=0, **MID)


@pytest.fixture(scope="module")
def chest_abdomen_128():
    return make_phantom(size=(128, 128, 128), spacing=(3.0, 3.0, 3.0), region="chest-abdomen", seed=0)


# ---- determinism and variation -------------------------------------------------------------------


def test_same_seed_gives_identical_arrays_and_hashes():
    a = make_phantom(region="chest-abdomen", seed=7, tumors=("liver",), **FOV)
    b = make_phantom(region="chest-abdomen", seed=7, tumors=("liver",), **FOV)
    assert sha(a.labels) == sha(b.labels)
    assert sha(a.ct) == sha(b.ct)
    assert np.array_equal(a.affine, b.affine)
    assert a.nominal_hu == b.nominal_hu
    assert a.tumors == b.tumors


def test_different_seeds_give_different_anatomy():
    a = make_phantom(region="abdomen", seed=0, **FOV)
    b = make_phantom(region="abdomen", seed=1, **FOV)
    assert np.mean(a.labels != b.labels) > 0.02
    # Organ size and position vary, not only the noise.
    assert abs(volume_ml(a, 1) - volume_ml(b, 1)) > 20.0
    assert np.linalg.norm(centroid_mm(a, 3) - centroid_mm(b, 3)) > 3.0
    assert sha(a.ct) != sha(b.ct)


# ---- labels per region, orientation -------------------------------------------------------------------


REQUIRED = {
    "chest": {BODY, 28, 29, 30, 31, 32, 57, 115, 6, 11, 121, 122, 114, 1, 3, 43, 44, 45, 46, 65, 77},
    "chest-abdomen": {
        BODY,
        28,
        29,
        30,
        31,
        32,
        115,
        6,
        7,
        1,
        3,
        4,
        5,
        14,
        10,
        12,
        19,
        62,
        121,
        122,
        34,
        35,
        36,
        37,
        38,
        41,
        71,
        83,
    },
    "abdomen": {BODY, 1, 3, 4, 5, 14, 6, 7, 10, 12, 15, 19, 62, 33, 34, 35, 36, 37, 93, 94, 95, 96, 97, 121},
}
FORBIDDEN = {
    "chest": {15, 93, 94, 95, 96, 97, 33, 34},
    "chest-abdomen": {15, 93, 94, 49},
    "abdomen": {57, 115, 49, 48, 28, 30},
}


@pytest.mark.parametrize("region", REGIONS)
def test_labels_present_per_region_are_valid_maisi_ids(region):
    phantom = make_phantom(region=region, seed=0, **MID)
    present = set(np.unique(phantom.labels).tolist())
    assert present <= valid_ids()
    assert phantom.labels.dtype == np.uint8 and phantom.ct.dtype == np.int16
    missing = REQUIRED[region] - present
    assert not missing, f"{region}: missing {sorted(missing)}"
    extra = FORBIDDEN[region] & present
    assert not extra, f"{region}: unexpected {sorted(extra)}"
    assert set(phantom.nominal_hu) == present


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_other_seeds_keep_valid_ids(seed):
    for region in REGIONS:
        labels = make_phantom(region=region, seed=seed, size=(48, 48, 48), spacing=(8.0, 8.0, 8.0)).labels
        assert set(np.unique(labels).tolist()) <= valid_ids()


def test_ras_orientation_of_organs(chest_abdomen_128):
    p = chest_abdomen_128
    assert centroid_mm(p, 1)[0] > 20  # liver on the patient's right (+x)
    assert centroid_mm(p, 3)[0] < -40  # spleen on the left
    assert centroid_mm(p, 5)[0] > 30 and centroid_mm(p, 14)[0] < -30  # right / left kidney
    assert centroid_mm(p, 30)[0] > 0 and centroid_mm(p, 28)[0] < 0  # right / left upper lobe
    assert centroid_mm(p, 115)[1] > centroid_mm(p, 37)[1] + 40  # heart anterior to the spine
    assert centroid_mm(p, 38)[2] > centroid_mm(p, 37)[2] + 15  # T12 above L1
    assert centroid_mm(p, 115)[2] > centroid_mm(p, 1)[2] + 60  # heart above the liver
    assert centroid_mm(p, 30)[2] > centroid_mm(p, 32)[2]  # upper lobe above lower lobe
    assert centroid_mm(p, 82)[0] > 0 and centroid_mm(p, 70)[0] < 0  # right / left rib 8


def test_affine_centres_the_volume_and_origin_only_moves_it():
    p = make_phantom(region="chest", seed=4, **FOV)
    assert np.allclose(np.diag(p.affine), [6.0, 6.0, 6.0, 1.0])
    centre = p.affine @ np.array([31.5, 31.5, 31.5, 1.0])
    assert np.allclose(centre[:3], 0.0)
    q = make_phantom(region="chest", seed=4, origin=(10.0, -20.0, 300.0), **FOV)
    assert np.allclose(q.affine[:3, 3], [10.0, -20.0, 300.0])
    assert np.array_equal(p.labels, q.labels)
    anisotropic = make_phantom(size=(40, 50, 30), spacing=(8.0, 7.0, 10.0), seed=4)
    assert anisotropic.labels.shape == (40, 50, 30)
    assert np.allclose(np.diag(anisotropic.affine)[:3], [8.0, 7.0, 10.0])


# ---- same anatomy at any spacing ---------------------------------------------------------------------


def test_same_seed_same_anatomy_at_two_spacings():
    coarse = make_phantom(region="chest-abdomen", seed=3, noise_hu=0, **FOV)
    fine = make_phantom(region="chest-abdomen", seed=3, noise_hu=0, size=(128, 128, 128), spacing=(3.0, 3.0, 3.0))
    for label in (1, 3, 5, 14, 115, 12):
        distance = np.linalg.norm(centroid_mm(coarse, label) - centroid_mm(fine, label))
        assert distance < 3.0, f"label {label} moved {distance:.2f} mm"  # well within one coarse voxel
        assert volume_ml(coarse, label) == pytest.approx(volume_ml(fine, label), rel=0.06)


# ---- CT values --------------------------------------------------------------------------------------------


def test_nominal_hu_table_and_ct_medians(abdomen_mid):
    p = abdomen_mid
    assert p.nominal_hu[0] == -1000.0
    assert p.nominal_hu[1] == 62.0 and p.nominal_hu[3] == 52.0 and p.nominal_hu[4] == 42.0
    assert p.nominal_hu[5] == 80.0 and p.nominal_hu[14] == 80.0
    # Kidneys: at 4 mm their 80 HU cortex and 50 HU medulla share voxels (partial volume).
    for label, tolerance in ((1, 8), (3, 8), (4, 12), (5, 20), (14, 20), (6, 10), (7, 10), (15, 10)):
        median = float(np.median(p.ct[p.labels == label]))
        assert abs(median - p.nominal_hu[label]) <= tolerance, (label, median, p.nominal_hu[label])
    lung = np.isin(p.labels, list(LUNG_IDS))
    # Lung bases are thin here and share voxels with the diaphragm, so partial volume lifts them.
    assert abs(float(np.median(p.ct[lung])) - (-850.0)) <= 70
    bone = np.isin(p.labels, list(BONE_IDS))
    assert 180 <= float(np.median(p.ct[bone])) <= 400
    assert float(np.percentile(p.ct[bone], 95)) > 600  # cortical shells


def test_noise_level_and_outside_air(abdomen_mid):
    p = abdomen_mid
    near_body = ndimage.binary_dilation(p.labels > 0, np.ones((3, 3, 3), bool), iterations=2)
    assert np.all(p.ct[~near_body] == -1000)
    skin_side_air = p.ct[(p.labels == 0) & near_body]
    assert skin_side_air.max() > -900  # the point spread reaches a voxel past the skin
    core = ndimage.binary_erosion(p.labels == 1, iterations=2)  # liver away from partial-volume edges
    liver = p.ct[core].astype(float)
    assert 8.0 <= liver.std() <= 25.0
    quiet = make_phantom(region="abdomen", seed=0, noise_hu=0, **MID)
    assert quiet.ct[core].astype(float).std() < liver.std() / 1.5
    assert np.array_equal(quiet.labels, p.labels)


def test_body_has_fat_and_muscle_layers(abdomen_mid):
    p = abdomen_mid
    body = p.ct[p.labels == BODY].astype(float)
    assert np.mean(np.abs(body - HU[T["fat"]]) < 35) > 0.2
    assert np.mean(np.abs(body - HU[T["muscle"]]) < 25) > 0.1
    # Walking from the patient's left skin toward the centre on a mid-abdominal line: fat, then muscle.
    j, k = p.labels.shape[1] // 2, p.labels.shape[2] // 2
    row = p.labels[:, j, k]
    first = int(np.flatnonzero(row)[0])
    line = p.ct[first : first + 15, j, k].astype(float)
    fat_at = int(np.argmax(line < -60))
    assert line[fat_at] < -60
    assert np.any(line[fat_at:] > 20)


def test_lungs_have_vessel_texture(chest_abdomen_128):
    p = chest_abdomen_128
    lung = p.ct[np.isin(p.labels, list(LUNG_IDS))].astype(float)
    vessel_fraction = float(np.mean(lung > -300))
    assert 0.01 < vessel_fraction < 0.2
    assert abs(float(np.median(lung)) + 850) < 20


def test_partial_volume_is_the_exact_tissue_fraction_of_each_voxel():
    # Air (code 0) left of x = 0.3 mm, liver right of it; voxels 1 mm wide centred on integers.
    axis = np.arange(-2.0, 3.0)
    liver = T["liver"]

    def paint_tissue(sub):
        x = sub[0][:, None, None] + 0 * sub[1][None, :, None] + 0 * sub[2][None, None, :]
        return np.where(x > 0.3, liver, T["air"]).astype(np.uint8)

    hu, texture, lung = material_means(paint_tissue, (axis, axis[:2], axis[:2]), 4)
    # Sub-samples at -0.375, -0.125, 0.125, 0.375 of the voxel at 0: one of four lies in the liver.
    expected = np.array([-1000.0, -1000.0, 0.75 * -1000.0 + 0.25 * HU[liver], HU[liver], HU[liver]])
    np.testing.assert_allclose(hu[:, 0, 0], expected, atol=1e-3)
    np.testing.assert_allclose(texture[2, 0, 0], 0.25 * 5.0, atol=1e-6)
    assert np.all(lung == 0)


def test_point_spread_of_fwhm_one_voxel_gives_a_neighbour_one_sixteenth():
    impulse = np.zeros((9, 9, 9), dtype=np.float32)
    impulse[4, 4, 4] = 1.0
    point_spread(impulse, (3.0, 3.0, 3.0), None)  # FWHM = spacing: exp(-4 ln 2) = 1/16 one voxel away
    for offset in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        ratio = impulse[4 + offset[0], 4 + offset[1], 4 + offset[2]] / impulse[4, 4, 4]
        assert ratio == pytest.approx(1 / 16, rel=1e-4)
    assert float(impulse.sum()) == pytest.approx(1.0, rel=1e-5)
    same = impulse.copy()
    assert np.array_equal(point_spread(same, (3.0, 3.0, 3.0), 0.0), impulse)


def test_scanner_smooths_the_skin_and_sharp_phantoms_stay_available():
    kw = dict(size=(64, 64, 64), spacing=(6.0, 6.0, 6.0), region="abdomen", seed=1, noise_hu=0)
    scanned, sharp = make_phantom(**kw), make_phantom(supersample=1, psf_fwhm_mm=0, **kw)
    assert np.array_equal(scanned.labels, sharp.labels) and scanned.nominal_hu == sharp.nominal_hu
    j, k = 32, 32
    row_sharp, row_scanned = sharp.ct[:, j, k].astype(float), scanned.ct[:, j, k].astype(float)
    first = int(np.flatnonzero(sharp.labels[:, j, k])[0])
    assert row_sharp[first - 1] == -1000 and row_sharp[first] > -200  # one-voxel step
    assert -1000 < row_scanned[first - 1] < -800 and -900 < row_scanned[first] < row_sharp[first]
    # Interiors keep their values: the liver's median moves by a few HU at most.
    liver = scanned.labels == 1
    assert abs(float(np.median(scanned.ct[liver])) - float(np.median(sharp.ct[liver]))) <= 5


@pytest.mark.parametrize("bad,words", [(dict(supersample=0), "supersample"), (dict(supersample=2.5), "supersample"),
                                       (dict(psf_fwhm_mm=-1.0), "point spread"),
                                       (dict(psf_fwhm_mm=float("nan")), "point spread")])
def test_bad_scanner_settings_are_refused(bad, words):
    with pytest.raises(MaisiError, match=words):
        make_phantom(size=(16, 16, 16), **bad)


# ---- tumours ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,region",
    [("liver", "chest-abdomen"), ("lung", "chest"), ("pancreas", "abdomen"), ("colon", "abdomen"), ("bone", "abdomen")],
)
def test_tumor_lies_inside_its_host(kind, region):
    # Without the scanner's blur, so that small tumors show their tissue value exactly.
    unblurred = dict(noise_hu=0, supersample=1, psf_fwhm_mm=0)
    plain = make_phantom(region=region, seed=2, **unblurred, **MID)
    sick = make_phantom(region=region, seed=2, tumors=(kind,), **unblurred, **MID)
    label = TUMOR_TYPES[kind]
    tumor = sick.labels == label
    assert tumor.sum() >= 8
    assert set(np.unique(plain.labels[tumor]).tolist()) <= set(TUMOR_HOSTS[label])
    assert np.array_equal(sick.labels[~tumor], plain.labels[~tumor])
    assert len(sick.tumors) == 1 and sick.tumors[0].label == label
    centre = np.linalg.inv(sick.affine) @ np.append(sick.tumors[0].center_ras, 1.0)
    assert tumor[tuple(np.round(centre[:3]).astype(int))]
    assert abs(float(np.median(sick.ct[tumor])) - sick.nominal_hu[label]) <= 10


def test_hepatic_tumor_is_hypodense_and_several_tumors_do_not_overlap():
    p = make_phantom(region="chest-abdomen", seed=5, tumors=("liver", "liver", "lung"), **MID)
    assert p.nominal_hu[26] < p.nominal_hu[1] - 20
    assert [t.kind for t in p.tumors] == ["liver", "liver", "lung"]
    assert np.linalg.norm(np.subtract(p.tumors[0].center_ras, p.tumors[1].center_ras)) > p.tumors[0].radius_mm


def test_tumor_outside_the_field_of_view():
    with pytest.raises(MaisiError, match="pancreas"):
        make_phantom(region="chest", seed=0, tumors=("pancreas",), size=(48, 48, 48), spacing=(4.0, 4.0, 4.0))
    lenient = make_phantom(
        region="chest", seed=0, tumors=("pancreas",), size=(48, 48, 48), spacing=(4.0, 4.0, 4.0), strict_tumors=False
    )
    assert lenient.tumors == () and 24 not in np.unique(lenient.labels)


# ---- input validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(size=(64, 64)), "three"),
        (dict(size=(4, 64, 64)), "out of range"),
        (dict(size=(64.5, 64, 64)), "whole"),
        (dict(spacing=(0.0, 3.0, 3.0)), "spacing"),
        (dict(spacing=(float("nan"), 3.0, 3.0)), "spacing"),
        (dict(region="head"), "unknown region"),
        (dict(seed=-1), "seed"),
        (dict(tumors=("brain",)), "unknown tumor type"),
        (dict(size=(1024, 1024, 1024)), "voxels"),
    ],
)
def test_bad_requests_raise_maisi_error(kwargs, words):
    with pytest.raises(MaisiError, match=words) as info:
        make_phantom(**kwargs)
    assert info.value.hint


# ---- writing and CLI ----------------------------------------------------------------------------------------


def test_write_phantom_round_trip(tmp_path):
    p = make_phantom(region="abdomen", seed=1, tumors=("liver",), **FOV)
    paths = write_phantom(p, tmp_path / "out")
    mask, ct = nib.load(str(paths["mask"])), nib.load(str(paths["ct"]))
    assert mask.get_data_dtype() == np.uint8 and ct.get_data_dtype() == np.int16
    assert np.array_equal(np.asanyarray(mask.dataobj), p.labels)
    assert np.array_equal(np.asanyarray(ct.dataobj), p.ct)
    assert np.allclose(mask.affine, p.affine) and np.allclose(ct.affine, p.affine)
    assert b"SYNTHETIC" in bytes(mask.header["descrip"])
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["ct.nii.gz", "mask.nii.gz"]


def test_cli_writes_phantom_matching_the_api(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "phantom",
            "--size",
            "48",
            "40",
            "32",
            "--spacing",
            "8",
            "8",
            "10",
            "--region",
            "abdomen",
            "--seed",
            "3",
            "--tumor",
            "liver",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "liver tumor" in text and "mask.nii.gz" in text
    labels = np.asanyarray(nib.load(str(out / "mask.nii.gz")).dataobj)
    expected = make_phantom(size=(48, 40, 32), spacing=(8, 8, 10), region="abdomen", seed=3, tumors=("liver",))
    assert np.array_equal(labels, expected.labels)
    assert np.array_equal(np.asanyarray(nib.load(str(out / "ct.nii.gz")).dataobj), expected.ct)


def test_cli_scanner_options_reach_the_ct(tmp_path):
    out = tmp_path / "sharp"
    args = ["--size", "32", "32", "24", "--spacing", "8", "8", "8", "--seed", "4"]
    assert main(["phantom", *args, "--supersample", "1", "--psf-fwhm", "0", "-o", str(out)]) == 0
    sharp = make_phantom(size=(32, 32, 24), spacing=(8, 8, 8), seed=4, supersample=1, psf_fwhm_mm=0)
    written = np.asanyarray(nib.load(str(out / "ct.nii.gz")).dataobj)
    assert np.array_equal(written, sharp.ct)
    assert not np.array_equal(written, make_phantom(size=(32, 32, 24), spacing=(8, 8, 8), seed=4).ct)


@pytest.mark.parametrize(
    "args,words",
    [
        (["--region", "pelvis"], "unknown region"),
        (["--spacing", "0", "3", "3"], "spacing"),
        (["--size", "2", "64", "64"], "size"),
        (["--tumor", "skin"], "unknown tumor type"),
        (["--supersample", "9"], "supersample"),
        (["--psf-fwhm", "-2"], "point spread"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, words):
    code = main(["phantom", *args, "-o", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "(" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "x" / "mask.nii.gz").exists()


# ---- speed -------------------------------------------------------------------------------------------------------


def test_128_cubed_phantom_is_fast():
    make_phantom(size=(32, 32, 32))  # imports and caches
    best = min(_timed(lambda: make_phantom(size=(128, 128, 128), spacing=(3.0, 3.0, 3.0), seed=s)) for s in (0, 1))
    assert best < 4.0, f"128^3 phantom took {best:.2f} s"  # partial volume paints 8x the samples


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
