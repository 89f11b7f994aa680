"""Mask tools: TotalSegmentator import, body envelope, tumor shapes and augmentation, mask database, CLI."""

from __future__ import annotations

import argparse
import json
import stat
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from MAISIEngine import labels as label_table
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.nifti import write_volume
from MAISIEngine.masktools import body, cli, maskdb, totalseg, tumors

SPACING = (1.5, 1.5, 2.0)


def _affine(spacing=SPACING, origin=(-40.0, -50.0, 10.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape).astype(np.float64)
    return sum(((grid[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0


def _phantom_labels(shape=(64, 64, 48)) -> np.ndarray:
    """Liver, spleen, and two lung lobes side by side, on a body background."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[_ellipsoid(shape, (44, 30, 16), (34, 34, 34))] = label_table.BODY
    labels[_ellipsoid(shape, (26, 30, 14), (14, 12, 10))] = 1  # liver
    labels[_ellipsoid(shape, (52, 30, 14), (6, 6, 6))] = 3  # spleen
    labels[20:32, 20:40, 30:44] = 30  # right lung upper lobe
    labels[32:44, 20:40, 30:44] = 32  # right lung lower lobe
    return labels


def _point_ras(affine: np.ndarray, ijk) -> np.ndarray:
    return (affine @ np.append(np.asarray(ijk, dtype=np.float64), 1.0))[:3]


# ----------------------------------------------------------------------------------------------
# TotalSegmentator
# ----------------------------------------------------------------------------------------------

# TotalSegmentator v2 "total" id -> expected MAISI id
TS_V2_CASES = {
    5: 1,  # liver
    1: 3,  # spleen
    2: 5,  # kidney_right -> right kidney
    3: 14,  # kidney_left -> left kidney
    27: 33,  # vertebrae_L5
    32: 38,  # vertebrae_T12
    50: 56,  # vertebrae_C1
    10: 28,  # lung_upper_lobe_left -> left lung upper lobe
    11: 29,  # lung_lower_lobe_left
    12: 30,  # lung_upper_lobe_right
    13: 31,  # lung_middle_lobe_right
    14: 32,  # lung_lower_lobe_right
    92: 63,  # rib_left_1 -> left rib 1
    77: 95,  # hip_left -> left hip
    21: 15,  # urinary_bladder -> bladder
    26: 127,  # vertebrae_S1
    117: 114,  # costal_cartilages
}


def _blocks(ids: list[int], shape=(8, 8, 60)) -> tuple[np.ndarray, dict[int, tuple]]:
    """A label map with one block per id, block n being n+1 slices thick (distinct voxel counts)."""
    array = np.zeros(shape, dtype=np.int16)
    where: dict[int, tuple] = {}
    k = 0
    for n, value in enumerate(ids):
        region = (slice(0, 8), slice(0, 4), slice(k, k + 1 + n % 3))
        array[region] = value
        where[value] = region
        k += 1 + n % 3
    return array, where


def test_totalseg_v2_classes_become_maisi_ids():
    source, where = _blocks(list(TS_V2_CASES))
    out, report = totalseg.totalseg_to_maisi(source, "v2")
    assert out.dtype == np.uint8 and out.shape == source.shape
    for ts_id, maisi_id in TS_V2_CASES.items():
        assert np.all(out[where[ts_id]] == maisi_id), (ts_id, np.unique(out[where[ts_id]]))
    assert np.all(out[source == 0] == 0)
    by_id = {c.ts_id: c for c in report.mapped}
    assert set(by_id) == set(TS_V2_CASES)
    assert (by_id[5].name, by_id[5].maisi_id, by_id[5].maisi_name) == ("liver", 1, "liver")
    assert (by_id[2].name, by_id[2].maisi_name) == ("kidney_right", "right kidney")
    assert by_id[10].voxels == int(np.count_nonzero(source == 10))
    assert report.dropped == [] and report.unknown == []


def test_totalseg_unknown_and_unmapped_classes_are_reported():
    source, where = _blocks([5, 150, 255])
    out, report = totalseg.totalseg_to_maisi(source, "v2")
    assert np.all(out[where[5]] == 1)
    assert np.all(out[where[150]] == 0) and np.all(out[where[255]] == 0)
    assert [(c.ts_id, c.voxels) for c in report.unknown] == [(150, 64), (255, 96)]
    assert any("unknown id 150 (64 voxels)" in line for line in report.lines())

    # v1 has classes MAISI cannot express (pulmonary artery, face); heart parts merge into the heart.
    source, where = _blocks([49, 93, 44, 46, 5])
    out, report = totalseg.totalseg_to_maisi(source, "v1")
    assert [(c.ts_id, c.name, c.voxels) for c in report.dropped] == [(49, "pulmonary_artery", 32), (93, "face", 64)]
    assert np.all(out[where[49]] == 0) and np.all(out[where[93]] == 0)
    assert np.all(out[where[44]] == 115) and np.all(out[where[46]] == 115)
    assert np.all(out[where[5]] == 1)  # v1 liver is 5 too
    assert any(line.startswith("dropped pulmonary_artery") for line in report.lines())


def test_totalseg_table_covers_every_v2_class_with_the_same_anatomy():
    table = totalseg.mapping_table("v2")
    assert sorted(table) == list(range(1, 118))
    maisi_ids = [c.maisi_id for c in table.values()]
    assert len(set(maisi_ids)) == 117 and set(maisi_ids) <= label_table.valid_ids()
    for cls in table.values():
        assert label_table.name_of(cls.maisi_id) == cls.maisi_name
        for side in ("left", "right"):
            assert (side in cls.name.split("_")) == (side in cls.maisi_name.split())
    assert totalseg.mapping_table("v1")[104].maisi_id == 15  # v1 urinary_bladder


def test_totalseg_refuses_fractional_values_and_unknown_versions():
    with pytest.raises(MaisiError, match="non-integer"):
        totalseg.totalseg_to_maisi(np.full((2, 2, 2), 1.5, dtype=np.float32))
    with pytest.raises(MaisiError, match="version"):
        totalseg.totalseg_to_maisi(np.zeros((2, 2, 2), np.uint8), "v9")
    out, _ = totalseg.totalseg_to_maisi(np.full((2, 2, 2), 5.0, dtype=np.float32))  # float but integral
    assert np.all(out == 1)


# ----------------------------------------------------------------------------------------------
# Body envelope
# ----------------------------------------------------------------------------------------------


def _ct_with_table(shape=(96, 96, 12)):
    """Torso with two lungs, on a thin dense table joined to the back by a cushion strip."""
    ct = np.full(shape, -1000.0, dtype=np.float32)
    ii, jj = np.indices(shape[:2])
    torso = ((ii - 48) / 35) ** 2 + ((jj - 50) / 25) ** 2 <= 1
    lungs = (((ii - 33) / 10) ** 2 + ((jj - 52) / 12) ** 2 <= 1) | (((ii - 63) / 10) ** 2 + ((jj - 52) / 12) ** 2 <= 1)
    table = np.zeros(shape[:2], bool)
    table[8:88, 18:20] = True  # posterior (low j = posterior in RAS)
    cushion = np.zeros(shape[:2], bool)
    cushion[45:51, 20:26] = True
    ct[torso] = 40.0
    ct[lungs] = -850.0
    ct[table] = 300.0
    ct[cushion & ~torso] = -200.0
    return ct, torso, table


def test_body_envelope_removes_the_table_and_fills_the_lungs():
    ct, torso, table = _ct_with_table()
    affine = np.eye(4)
    naive = body._largest_component(ct > -500)
    assert naive[table].all()  # thresholding alone keeps the table: the removal below is real work

    mask = body.body_envelope_from_ct(ct, affine)
    torso3d = np.repeat(torso[..., None], ct.shape[2], axis=2)
    table3d = np.repeat(table[..., None], ct.shape[2], axis=2)
    assert mask.dtype == bool and mask.shape == ct.shape
    assert not mask[table3d].any()
    assert mask[torso3d].all()  # lungs (-850 HU) inside the torso are filled
    assert mask[:, 20:23, :].sum() == 0  # the cushion's far end went with the table
    assert np.count_nonzero(mask & ~torso3d) <= 12 * ct.shape[2]  # at most a stub of cushion at the back


def test_body_envelope_uses_the_axial_axis_of_the_affine():
    ct, _, table = _ct_with_table()
    moved = np.transpose(ct, (2, 0, 1))  # voxel axis 0 is now head-foot
    affine = np.zeros((4, 4))
    affine[0, 1] = affine[1, 2] = 1.0
    affine[2, 0] = 2.5
    affine[3, 3] = 1.0
    assert body.axial_axis(affine) == 0
    mask = body.body_envelope_from_ct(moved, affine)
    np.testing.assert_array_equal(np.transpose(mask, (1, 2, 0)), body.body_envelope_from_ct(ct, np.eye(4)))
    with pytest.raises(MaisiError, match="above -500 HU"):
        body.body_envelope_from_ct(np.full((4, 4, 4), -1000.0), np.eye(4))


def test_add_body_fills_only_unlabelled_body_voxels():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1, 1, 1] = 1
    envelope = np.zeros((4, 4, 4), bool)
    envelope[:2] = True
    out = body.add_body(labels, envelope)
    assert out[1, 1, 1] == 1
    assert np.count_nonzero(out == 200) == 31 and np.all(out[2:] == 0)
    assert labels.max() == 1  # input untouched
    with pytest.raises(MaisiError, match="has shape"):
        body.add_body(labels, envelope[:3])


# ----------------------------------------------------------------------------------------------
# Tumors
# ----------------------------------------------------------------------------------------------


def test_tumor_from_point_is_deterministic_irregular_and_inside_the_liver():
    labels, affine = _phantom_labels(), _affine()
    point = _point_ras(affine, (26, 30, 14))
    first = tumors.tumor_from_point(labels, affine, point, 15.0, "liver", seed=7)
    again = tumors.tumor_from_point(labels, affine, point, 15.0, "liver", seed=7)
    other = tumors.tumor_from_point(labels, affine, point, 15.0, "liver", seed=8)
    np.testing.assert_array_equal(first, again)
    assert np.count_nonzero(first != other) > 20
    assert first[26, 30, 14] and np.all(labels[first] == 1)
    assert ndimage.label(first)[1] == 1
    sphere_voxels = (4 / 3) * np.pi * 7.5**3 / np.prod(SPACING)  # 15 mm sphere: ~392 voxels
    assert 0.25 * sphere_voxels < first.sum() < 1.3 * sphere_voxels
    smooth = tumors.tumor_from_point(labels, affine, point, 15.0, "liver", seed=7, irregularity=0.0)
    assert np.count_nonzero(first != smooth) > 10  # the boundary noise changes the shape
    voxel = tumors.tumor_from_point(labels, affine, (26, 30, 14), 15.0, 26, seed=7, point_space="voxel")
    np.testing.assert_array_equal(voxel, first)


def test_tumor_is_clipped_to_the_host_organ():
    labels, affine = _phantom_labels(), _affine()
    edge = (14, 30, 14)  # 2 voxels inside the liver's lateral edge
    assert labels[edge] == 1 and labels[11, 30, 14] != 1
    mask = tumors.tumor_from_point(labels, affine, _point_ras(affine, edge), 20.0, "liver", seed=1)
    assert np.all(labels[mask] == 1)
    assert mask[14, 30, 14] and not mask[:12].any()


def test_tumor_outside_its_host_is_refused_with_the_organ_named():
    labels, affine = _phantom_labels(), _affine()
    in_spleen = _point_ras(affine, (52, 30, 14))
    with pytest.raises(MaisiError) as caught:
        tumors.tumor_from_point(labels, affine, in_spleen, 10.0, "liver")
    assert "spleen" in caught.value.message and "liver (label 1)" in caught.value.message
    with pytest.raises(MaisiError, match="lung lobe"):
        tumors.tumor_from_point(labels, affine, _point_ras(affine, (26, 30, 14)), 10.0, "lung")
    with pytest.raises(MaisiError, match="outside the label map"):
        tumors.tumor_from_point(labels, affine, (500.0, 0.0, 0.0), 10.0, "liver")
    with pytest.raises(MaisiError, match="unknown tumor type"):
        tumors.tumor_from_point(labels, affine, in_spleen, 10.0, "kidney")


def test_lung_tumor_may_cross_lobes_but_not_leave_the_lungs():
    labels, affine = _phantom_labels(), _affine()
    mask = tumors.tumor_from_point(labels, affine, _point_ras(affine, (32, 30, 37)), 14.0, "lung", seed=2)
    assert set(np.unique(labels[mask]).tolist()) == {30, 32}


def test_apply_tumor_writes_the_tumor_id_and_refuses_spill():
    labels, affine = _phantom_labels(), _affine()
    mask = tumors.tumor_from_point(labels, affine, _point_ras(affine, (26, 30, 14)), 12.0, "liver", seed=0)
    out = tumors.apply_tumor(labels, mask, "liver")
    assert np.all(out[mask] == 26) and np.array_equal(out[~mask], labels[~mask])
    spill = mask.copy()
    spill[52, 30, 14] = True  # one voxel in the spleen
    with pytest.raises(MaisiError, match=r"1 of .* outside the liver \(label 1\), in spleen"):
        tumors.apply_tumor(labels, spill, "liver")
    np.testing.assert_array_equal(tumors.apply_tumor(labels, spill, "liver", clip=True), out)
    with pytest.raises(MaisiError, match="empty"):
        tumors.apply_tumor(labels, np.zeros_like(mask), "liver")
    with pytest.raises(MaisiError, match="has shape"):
        tumors.apply_tumor(labels, mask[:10], "liver")


@pytest.mark.parametrize("name", sorted(tumors.AUGMENTATIONS))
def test_augmentation_is_deterministic_and_keeps_the_tumor_in_its_host(name):
    labels, affine = _phantom_labels(), _affine()
    # near the liver's edge, so unclipped moves and growth would leave it
    mask = tumors.tumor_from_point(labels, affine, _point_ras(affine, (17, 30, 14)), 12.0, "liver", seed=0)
    labels = tumors.apply_tumor(labels, mask, "liver")
    host = np.isin(labels, [1, 26])
    augment = tumors.AUGMENTATIONS[name]
    results = [augment(labels, mask, "liver", seed, spacing=SPACING) for seed in range(4)]
    for seed, result in enumerate(results):
        assert result.any() and np.all(host[result]), (name, seed)
        np.testing.assert_array_equal(result, augment(labels, mask, "liver", seed, spacing=SPACING))
    assert any(np.count_nonzero(r != mask) > 5 for r in results), name


def test_augment_tumor_chain_stays_in_the_lungs():
    labels, affine = _phantom_labels(), _affine()
    mask = tumors.tumor_from_point(labels, affine, _point_ras(affine, (30, 30, 36)), 10.0, "lung", seed=3)
    out = tumors.augment_tumor(labels, mask, "lung", seed=5, spacing=SPACING)
    np.testing.assert_array_equal(out, tumors.augment_tumor(labels, mask, "lung", seed=5, spacing=SPACING))
    assert out.any() and np.all(np.isin(labels[out], [30, 32])) and np.count_nonzero(out != mask) > 0
    with pytest.raises(MaisiError, match="unknown tumor augmentation"):
        tumors.augment_tumor(labels, mask, "lung", steps=["twist"])


# ----------------------------------------------------------------------------------------------
# Mask database
# ----------------------------------------------------------------------------------------------

TARGET_SIZE, TARGET_SPACING = (32, 32, 32), (2.0, 2.0, 2.0)
ABDOMEN = [0, 0, 1, 0]
CHEST = [0, 1, 0, 0]


def _mask(dim, fill: dict[int, tuple]) -> np.ndarray:
    array = np.zeros(dim, np.uint8)
    array[2:-2, 2:-2, 2:-2] = 200
    for value, region in fill.items():
        array[region] = value
    return array


def _make_db(tmp_path: Path, extra_members: dict[str, bytes] | None = None) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A small database in the official layout: zip with a top folder, JSON list of entries."""
    liver, spleen = (slice(8, 16), slice(8, 16), slice(8, 16)), (slice(18, 24), slice(8, 14), slice(8, 14))
    masks = {
        # exact field of view at another grid; its liver is one voxel that nearest resampling skips
        "SetE/e_lossy.nii.gz": (
            _mask((64, 64, 32), {1: (20, 21, 10), 3: (slice(30, 50), slice(20, 40), slice(8, 20))}),
            (1.0, 1.0, 2.0),
            ABDOMEN,
        ),
        "SetA/a_best.nii.gz": (_mask((32, 32, 34), {1: liver, 3: spleen}), (2.0, 2.0, 2.0), ABDOMEN),
        "SetB/b_large.nii.gz": (_mask((40, 40, 40), {1: liver, 3: spleen}), (2.0, 2.0, 2.0), ABDOMEN),
        "SetC/c_tumor.nii.gz": (_mask((32, 32, 32), {1: liver, 3: spleen, 26: (10, 10, 10)}), (2.0, 2.0, 2.0), ABDOMEN),
        "SetD/d_chest.nii.gz": (_mask((32, 32, 32), {1: liver, 3: spleen, 28: (4, 4, 4)}), (2.0, 2.0, 2.0), CHEST),
    }
    zip_path = tmp_path / maskdb.DB_ZIP_NAME
    entries, arrays = [], {}
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, (array, spacing, region) in masks.items():
            image = nib.Nifti1Image(array, np.diag([*spacing, 1.0]))
            archive.writestr(f"{maskdb.DB_FOLDER_NAME}/{name}", _gz(image))
            arrays[name] = array
            entries.append({
                "pseudo_label_filename": f"./{name}" if name.startswith("SetA") else name,
                "label_list": sorted(int(v) for v in np.unique(array) if v),
                "dim": list(array.shape),
                "spacing": list(spacing),
                "top_region_index": region,
                "bottom_region_index": region,
            })
        for name, data in (extra_members or {}).items():
            archive.writestr(name, data)
    db_json = tmp_path / maskdb.DB_JSON_NAME
    db_json.write_text(json.dumps(entries))
    return db_json, zip_path, arrays


def _gz(image: nib.Nifti1Image) -> bytes:
    import gzip

    return gzip.compress(image.to_bytes(), mtime=0)


def test_find_masks_ranks_by_field_of_view_and_excludes_unrequested_tumors(tmp_path):
    db_json, zip_path, _ = _make_db(tmp_path)
    grid = {"size": TARGET_SIZE, "spacing": TARGET_SPACING}
    ranked = maskdb.find_masks(db_json, zip_path, ["liver", "spleen"], "abdomen", **grid)
    assert [c.entry.mask_path for c in ranked] == ["SetE/e_lossy.nii.gz", "./SetA/a_best.nii.gz", "SetB/b_large.nii.gz"]
    assert ranked[0].fov_error == 0.0 and ranked[1].fov_error == pytest.approx(4 / 64 / 3)
    no_region = maskdb.find_masks(db_json, zip_path, [1, 3], None, **grid)
    assert "SetD/d_chest.nii.gz" in [c.entry.mask_path for c in no_region]
    with_tumor = maskdb.find_masks(db_json, zip_path, ["liver", "hepatic tumor"], "abdomen", **grid)
    assert [c.entry.mask_path for c in with_tumor] == ["SetC/c_tumor.nii.gz"]
    with pytest.raises(MaisiError, match="unknown anatomy"):
        maskdb.find_masks(db_json, zip_path, ["livre"], None, **grid)
    with pytest.raises(MaisiError, match="unknown body region"):
        maskdb.find_masks(db_json, zip_path, ["liver"], "belly", **grid)


def test_select_mask_refuses_a_candidate_that_loses_a_label_and_resamples_the_next(tmp_path):
    db_json, zip_path, arrays = _make_db(tmp_path)
    work = tmp_path / "work"
    selection = maskdb.select_mask(
        db_json, zip_path, ["liver", "spleen"], ["abdomen"], size=TARGET_SIZE, spacing=TARGET_SPACING, work_dir=work
    )
    assert selection.candidate.entry.mask_path == "./SetA/a_best.nii.gz"
    refused = [(c.entry.mask_path, "loses liver (1)" in why) for c, why in selection.refused]
    assert refused == [("SetE/e_lossy.nii.gz", True)]
    volume = selection.volume
    assert volume.shape == TARGET_SIZE and volume.array.dtype == np.uint8
    np.testing.assert_allclose(volume.spacing, TARGET_SPACING)
    # 34 -> 32 slices at the same spacing: centred crop, one slice off each end
    np.testing.assert_array_equal(volume.array, arrays["SetA/a_best.nii.gz"][:, :, 1:33])
    centre_out = volume.affine @ np.array([15.5, 15.5, 15.5, 1.0])
    np.testing.assert_allclose(centre_out[:3], [31.0, 31.0, 33.0])  # input centre (15.5, 15.5, 16.5) x 2 mm
    assert not any(work.rglob("*.nii.gz"))  # extracted copies are removed after reading

    with maskdb.MaskArchive(zip_path) as archive:
        entry = next(e for e in maskdb.load_database(db_json) if e.mask_path.startswith("SetE"))
        with pytest.raises(MaisiError, match="loses liver"):
            maskdb.load_candidate(archive, entry, TARGET_SIZE, TARGET_SPACING, [1, 3], work)
        kept = maskdb.load_candidate(archive, entry, TARGET_SIZE, TARGET_SPACING, [3], work)
        assert 3 in maskdb.labels_present(kept.array) and 1 not in maskdb.labels_present(kept.array)


def test_zip_entries_pointing_outside_are_refused_and_nothing_is_written(tmp_path):
    payload = _gz(nib.Nifti1Image(np.ones((2, 2, 2), np.uint8), np.eye(4)))
    link = zipfile.ZipInfo(f"{maskdb.DB_FOLDER_NAME}/SetL/link.nii.gz")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    db_json, zip_path, _ = _make_db(db_dir, {"../evil.nii.gz": payload, "../SetX/evil.nii.gz": payload})
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr(link, "/etc/passwd")
    dest = tmp_path / "db" / "out"
    for name in ("../evil.nii.gz", "SetX/evil.nii.gz", "SetL/link.nii.gz", "/abs/evil.nii.gz"):
        with pytest.raises(MaisiError, match="refused"):
            maskdb.extract_mask(zip_path, name, dest)
    assert not list(tmp_path.rglob("evil.nii.gz")) and not list(tmp_path.rglob("link.nii.gz"))
    assert not dest.exists() or not any(p.is_file() for p in dest.rglob("*"))
    # an index entry naming such a path is never offered, and selection writes nothing outside its folder
    entries = json.loads(db_json.read_text())
    entries.append({**entries[1], "pseudo_label_filename": "../evil.nii.gz", "dim": [32, 32, 32]})
    db_json.write_text(json.dumps(entries))
    ranked = maskdb.find_masks(db_json, zip_path, ["liver"], "abdomen", size=TARGET_SIZE, spacing=TARGET_SPACING)
    assert "../evil.nii.gz" not in [c.entry.mask_path for c in ranked] and len(ranked) == 3
    work = tmp_path / "db" / "work"
    maskdb.select_mask(db_json, zip_path, ["liver"], "abdomen", size=TARGET_SIZE, spacing=TARGET_SPACING, work_dir=work)
    assert not list(tmp_path.rglob("evil.nii.gz"))
    # a link planted inside the destination is not followed either
    dest.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (dest / maskdb.DB_FOLDER_NAME).symlink_to(outside, target_is_directory=True)
    with pytest.raises(MaisiError, match="outside"):
        maskdb.extract_mask(zip_path, "SetB/b_large.nii.gz", dest)
    assert not any(outside.iterdir())
    # a safe entry lands under the destination
    (dest / maskdb.DB_FOLDER_NAME).unlink()
    written = maskdb.extract_mask(zip_path, "SetB/b_large.nii.gz", dest)
    assert written == dest.resolve() / maskdb.DB_FOLDER_NAME / "SetB" / "b_large.nii.gz" and written.is_file()


def test_extracted_folder_works_like_the_zip(tmp_path):
    db_json, zip_path, arrays = _make_db(tmp_path)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / maskdb.DB_FOLDER_NAME
    selection = maskdb.select_mask(
        db_json, folder, ["liver", "spleen"], "abdomen", size=TARGET_SIZE, spacing=TARGET_SPACING,
        work_dir=tmp_path / "w",
    )
    assert selection.candidate.entry.mask_path == "./SetA/a_best.nii.gz"
    assert (folder / "SetA" / "a_best.nii.gz").is_file()  # files in a folder are read in place, not deleted
    index, archive = maskdb.locate_database(tmp_path)
    assert index == db_json and archive == tmp_path / maskdb.DB_ZIP_NAME


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="maisi")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return cli.run(parser.parse_args(argv))


def test_cli_tumor_writes_labels_on_the_input_grid(tmp_path, capsys):
    labels, affine = _phantom_labels(), _affine()
    src = write_volume(tmp_path / "labels.nii.gz", labels, affine, dtype=np.uint8)
    point = [f"{v:.3f}" for v in _point_ras(affine, (26, 30, 14))]
    out, tumor = tmp_path / "with_tumor.nii.gz", tmp_path / "tumor.nii.gz"
    rc = _run(["masks", "tumor", "--labels", str(src), "--type", "liver", "--point", *point, "--size-mm", "12",
               "--seed", "3", "--mask-out", str(tumor), "-o", str(out)])
    assert rc == 0
    image = nib.load(str(out))
    result = np.asarray(image.dataobj)
    np.testing.assert_allclose(image.affine, affine)
    expected = tumors.tumor_from_point(labels, affine, _point_ras(affine, (26, 30, 14)), 12.0, "liver", seed=3)
    np.testing.assert_array_equal(result == 26, expected)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tumor)).dataobj) == 1, expected)
    assert "liver tumor:" in capsys.readouterr().out

    bad = tmp_path / "bad.nii.gz"
    spleen = [f"{v:.3f}" for v in _point_ras(affine, (52, 30, 14))]
    rc = _run(["masks", "tumor", "--labels", str(src), "--type", "liver", "--point", *spleen, "--size-mm", "12",
               "-o", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and not bad.exists()
    assert err.startswith("error: the point is in spleen") and err.count("\n") == 1 and "(a liver tumor" in err


def test_cli_import_totalseg_with_ct_adds_the_body(tmp_path, capsys):
    ct, torso, _ = _ct_with_table()
    ts = np.zeros(ct.shape, np.uint8)
    ts[40:50, 45:55, :] = 5  # liver inside the torso
    ts[0:3, 0:3, 0:3] = 150  # an id TotalSegmentator v2 does not have
    affine = _affine((1.0, 1.0, 3.0))
    ts_path = write_volume(tmp_path / "ts.nii.gz", ts, affine, dtype=np.uint8)
    ct_path = write_volume(tmp_path / "ct.nii.gz", ct, affine, dtype=np.int16)
    out, report = tmp_path / "maisi.nii.gz", tmp_path / "report.json"
    rc = _run(["masks", "import-totalseg", str(ts_path), "--ct", str(ct_path), "--report", str(report), "-o", str(out)])
    assert rc == 0
    result = np.asarray(nib.load(str(out)).dataobj)
    assert np.all(result[ts == 5] == 1)
    torso3d = np.repeat(torso[..., None], ct.shape[2], axis=2)
    assert np.all(result[torso3d & (ts == 0)] == 200)
    assert set(np.unique(result).tolist()) == {0, 1, 200}
    assert np.count_nonzero(result[:, 18:20, :]) == 0  # no table
    data = json.loads(report.read_text())
    unknown = {"ts_id": 150, "voxels": 27, "name": None, "maisi_id": None, "maisi_name": None, "note": None}
    assert data["unknown"] == [unknown]
    assert data["mapped"][0]["maisi_name"] == "liver" and data["body_voxels"] == int(np.count_nonzero(result == 200))
    assert "unknown id 150 (27 voxels)" in capsys.readouterr().out

    other = write_volume(tmp_path / "ct_other.nii.gz", ct[:, :, :6], affine, dtype=np.int16)
    rc = _run(["masks", "import-totalseg", str(ts_path), "--ct", str(other), "-o", str(tmp_path / "x.nii.gz")])
    assert rc == 2 and "different grids" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()


def test_cli_find_picks_and_resamples_the_best_mask(tmp_path, capsys):
    db_json, zip_path, arrays = _make_db(tmp_path)
    out = tmp_path / "mask.nii.gz"
    rc = _run(["masks", "find", "--region", "abdomen", "--anatomy", "liver", "spleen", "--size", "32", "32", "32",
               "--spacing", "2", "2", "2", "--db-dir", str(tmp_path), "--list", "3", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), arrays["SetA/a_best.nii.gz"][:, :, 1:33])
    assert "refused SetE/e_lossy.nii.gz" in text and "chose ./SetA/a_best.nii.gz" in text and text.startswith("1. SetE")

    rc = _run(["masks", "find", "--anatomy", "brain", "--size", "32", "32", "32", "--spacing", "2", "2", "2",
               "--db-dir", str(tmp_path), "-o", str(tmp_path / "none.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: no mask in the database holds brain") and err.count("\n") == 1
    rc = _run(["masks", "find", "--anatomy", "liver", "--size", "32", "32", "32", "--spacing", "2", "2", "2",
               "--db-dir", str(tmp_path / "missing"), "-o", str(tmp_path / "none.nii.gz")])
    assert rc == 2 and "--db-dir" in capsys.readouterr().err
    rc = _run(["masks", "find", "--anatomy", "liver", "--size", "32", "32", "32", "--spacing", "2", "2", "2",
               "--db-dir", str(tmp_path), "-o", str(tmp_path / "mask.mha")])
    assert rc == 2 and "NIfTI" in capsys.readouterr().err


def test_database_defaults_to_the_weights_cache(tmp_path, monkeypatch, capsys):
    from MAISIEngine.weights import cache_path, entry_by_name

    monkeypatch.setenv("MAISI_HOME", str(tmp_path / "home"))
    with pytest.raises(MaisiError, match="not downloaded"):
        maskdb.locate_database(None)
    db_json, zip_path, arrays = _make_db(tmp_path)
    index, archive = cache_path(entry_by_name("mask-candidates")), cache_path(entry_by_name("mask-database"))
    index.parent.mkdir(parents=True)
    db_json.rename(index)
    zip_path.rename(archive)
    assert maskdb.locate_database(None) == (index, archive)
    out = tmp_path / "cached.nii.gz"
    rc = _run(["masks", "find", "--anatomy", "liver", "spleen", "--region", "abdomen", "--size", "32", "32", "32",
               "--spacing", "2", "2", "2", "-o", str(out)])
    assert rc == 0 and "chose ./SetA/a_best.nii.gz" in capsys.readouterr().out
