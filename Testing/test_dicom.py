"""DICOM export and import: validated by dciodvfy, read back by dcm2niix, highdicom and our reader.

The command-line checkers (dicom3tools, dcmtk, dcm2niix) are Debian packages that CI installs; the
volumes are small (24 x 20 x 12) so the whole file runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

hd = pytest.importorskip("highdicom")

from dicom_fixtures import export_order, on_source_grid  # noqa: E402
from MAISIEngine import __version__  # noqa: E402
from MAISIEngine.cli import main  # noqa: E402
from MAISIEngine.errors import MaisiError  # noqa: E402
from MAISIEngine.io.dicom import export_dicom, read_dicom_ct, read_dicom_mask  # noqa: E402
from MAISIEngine.io.dicom import writer as dicom_writer  # noqa: E402
from MAISIEngine.io.dicom.identity import canonical_json, read_provenance  # noqa: E402
from MAISIEngine.io.nifti import Volume  # noqa: E402
from MAISIEngine.io.terminology import (SLICER_CONTEXT_NAME, all_terms, slicer_terminology,  # noqa: E402
                                        terminology_data, terms_of)
from MAISIEngine.labels import color_of, name_of, valid_ids  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAPE = (24, 20, 12)
PROVENANCE = {
    "model": "demo", "seed": 5, "engine_version": __version__,
    "weights": {"autoencoder": {"file": "autoencoder.safetensors", "sha256": "a1" * 32},
                "diffusion_unet": {"file": "unet.safetensors", "sha256": "b2" * 32}},
}
LABELS_USED = {1: "liver", 5: "right kidney", 14: "left kidney", 23: "lung tumor", 65: "left rib 3",
               116: "left kidney cyst", 200: "body"}
# The one warning dciodvfy still gives: it cannot know the private provenance element's dictionary.
ALLOWED_WARNING = "(0x0011,0x1001)  ?  - Warning - Unrecognized tag - assuming explicit value representation OK"

needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("dciodvfy", "dcm2niix", "dcmdump")),
                                 reason="dicom3tools, dcm2niix and dcmtk are needed")


def make_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, size=SHAPE).astype(np.int16)


def make_labels() -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:23, 1:19, :] = 200  # body on every slice, so the SEG's frames span the whole grid
    labels[2:10, 3:9, 1:7] = 1
    labels[4:7, 4:7, 3:5] = 23  # lung tumor, inside the liver box
    labels[12:16, 5:15, 4:10] = 5
    labels[17:21, 5:15, 4:10] = 14
    labels[18:20, 6:8, 6:8] = 116
    labels[12:22, 16:18, 0:3] = 65
    return labels


def axial_affine() -> np.ndarray:
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 30.0]
    return affine


def oblique_affine() -> np.ndarray:
    """Rotated about all three axes, anisotropic; a grid dcm2niix 1.0.20220720 fails on unless guarded."""
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [20, -15, 35], degrees=True).as_matrix() @ np.diag([0.7, 1.1, 3.0])
    affine[:3, 3] = [-40.5, 12.25, 88.0]
    return affine


GEOMETRIES = {"axial": axial_affine, "oblique": oblique_affine}


@pytest.fixture(scope="module", params=sorted(GEOMETRIES))
def exported(request, tmp_path_factory):
    affine = GEOMETRIES[request.param]()
    image, labels = make_image(), make_labels()
    out = tmp_path_factory.mktemp(request.param) / "dicom"
    result = export_dicom(Volume(image, affine), labels, out, provenance=PROVENANCE)
    stored_image, stored_affine = export_order(image, affine)
    return {"name": request.param, "affine": affine, "image": image, "labels": labels, "result": result, "out": out,
            "stored_image": stored_image, "stored_labels": export_order(labels, affine)[0], "stored_affine": stored_affine}


def dciodvfy_lines(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line.strip() for line in (run.stdout + run.stderr).splitlines() if line.strip()]


# --- the exported objects -----------------------------------------------------------------------------


def test_export_writes_one_ct_file_per_slice_and_a_seg(exported):
    result = exported["result"]
    assert [p.name for p in result.ct_files] == [f"CT_{k:05d}.dcm" for k in range(1, SHAPE[2] + 1)]
    assert sorted(p.name for p in exported["out"].iterdir()) == sorted([p.name for p in result.ct_files] + ["SEG.dcm"])
    assert result.segments == {n: LABELS_USED[i] for n, i in enumerate(sorted(LABELS_USED), start=1)}
    assert not [p for p in exported["out"].parent.iterdir() if p.name.startswith(".")]  # no staging left


@needs_tools
def test_dciodvfy_reports_no_errors_for_every_ct_slice_and_the_seg(exported):
    files = exported["result"].ct_files + [exported["result"].seg_file]
    for path in files:
        lines = dciodvfy_lines(path)
        assert not [line for line in lines if "Error" in line], (path.name, lines)
        warnings = [line for line in lines if "Warning" in line]
        assert warnings == [ALLOWED_WARNING], (path.name, warnings)
        assert ("CTImage" if path.name.startswith("CT_") else "Segmentation") in lines


def test_ct_slices_carry_geometry_and_int16_pixels(exported):
    affine, image = exported["stored_affine"], exported["stored_image"]
    lps = np.diag([-1, -1, 1, 1]) @ affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    for k, path in enumerate(exported["result"].ct_files):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.InstanceNumber == k + 1
        assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 1 and ds.RescaleSlope == 1
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], lps[:3, :3] @ [0, 0, k] + lps[:3, 3], atol=2e-4)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   np.r_[lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]], atol=1e-9)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [spacing[1], spacing[0]], atol=1e-9)
        assert float(ds.SliceThickness) == pytest.approx(spacing[2]) and float(ds.SpacingBetweenSlices) == pytest.approx(spacing[2])
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, image[:, :, k].T)


@needs_tools
def test_dcm2niix_reads_back_our_voxels_and_affine(exported, tmp_path):
    run = subprocess.run(["dcm2niix", "-z", "n", "-f", "%s_%d", "-o", str(tmp_path), str(exported["out"])],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    converted = sorted(tmp_path.glob("1_*.nii"))
    assert len(converted) == 1, run.stdout
    nii = nib.load(converted[0])
    theirs, their_affine = nii.get_fdata(), nii.affine
    ours = exported["affine"]
    # dcm2niix may flip or permute axes: their voxel t is our voxel M @ t, M a signed permutation + shift.
    voxel_map = np.linalg.inv(ours) @ their_affine
    rounded = np.round(voxel_map)
    np.testing.assert_allclose(voxel_map[:3], rounded[:3], atol=1e-3)
    assert sorted(np.abs(rounded[:3, :3]).sum(axis=0)) == [1, 1, 1]
    assert np.abs(ours @ rounded - their_affine).max() < 1e-3  # world positions within 1e-3 mm
    t = np.indices(theirs.shape).reshape(3, -1)
    ijk = (rounded[:3, :3] @ t + rounded[:3, 3:]).astype(int)
    np.testing.assert_array_equal(theirs.reshape(-1), exported["image"][ijk[0], ijk[1], ijk[2]])


def test_highdicom_reads_segment_masks_equal_to_the_label_map(exported):
    seg = hd.seg.segread(exported["result"].seg_file)
    ct_uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in exported["result"].ct_files]
    assert seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == exported["result"].series_uid
    for number, label_id in enumerate(sorted(LABELS_USED), start=1):
        description = seg.get_segment_description(number)
        assert description.segment_label == name_of(label_id)
        mask = seg.get_pixels_by_source_instance(ct_uids, segment_numbers=[number])[..., 0]
        np.testing.assert_array_equal(mask.transpose(2, 1, 0), exported["stored_labels"] == label_id)


def test_seg_segments_carry_the_maisi_terminology_and_colours(exported):
    seg = pydicom.dcmread(exported["result"].seg_file)
    items = {str(item.SegmentLabel): item for item in seg.SegmentSequence}
    liver = items["liver"]
    assert (liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue, liver.SegmentedPropertyTypeCodeSequence[0].CodeValue) == ("91723000", "10200004")
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    kidney = items["right kidney"].SegmentedPropertyTypeCodeSequence[0]
    assert (kidney.CodeValue, kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue) == ("64033007", "24028007")
    tumor = items["lung tumor"]
    assert tumor.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert (tumor.SegmentedPropertyTypeCodeSequence[0].CodeValue, tumor.AnatomicRegionSequence[0].CodeValue) == ("108369006", "39607008")
    cyst = items["left kidney cyst"].AnatomicRegionSequence[0]
    assert (cyst.CodeValue, cyst.AnatomicRegionModifierSequence[0].CodeValue) == ("64033007", "7771000")
    for name, item in items.items():
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        np.testing.assert_allclose(rgb, color_of(next(i for i, n in LABELS_USED.items() if n == name)), atol=1)


def test_every_file_carries_the_synthetic_markers(exported):
    result = exported["result"]
    patient_id = "SYN-" + hashlib.sha256(canonical_json(PROVENANCE).encode()).hexdigest()[:12].upper()
    assert result.patient_id == patient_id
    for path in result.ct_files + [result.seg_file]:
        ds = pydicom.dcmread(path)
        assert str(ds.PatientName) == "SYNTHETIC^MAISI"
        assert ds.PatientID == patient_id
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.Manufacturer == "MAISISynth"
        assert __version__ in str(ds.SoftwareVersions)
        assert ds.SeriesDescription.startswith("SYNTHETIC ") and "demo seed 5" in ds.SeriesDescription
        assert ds.ImageComments.startswith("SYNTHETIC image")
        assert read_provenance(ds) == PROVENANCE
        assert ds.StudyInstanceUID == result.study_uid
        assert ds.FrameOfReferenceUID == result.frame_of_reference_uid
        if ds.Modality == "CT":
            assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
            assert ds.BurnedInAnnotation == "NO"
            assert ds.SeriesInstanceUID == result.series_uid
        else:
            assert ds.Modality == "SEG" and list(ds.ImageType)[0] == "DERIVED"


def test_a_reexported_patient_ct_keeps_nothing_of_the_patient(exported, tmp_path):
    patient = tmp_path / "patient"
    shutil.copytree(exported["out"], patient)
    (patient / "SEG.dcm").unlink()
    identifiers = {"PatientName": "DOE^JANE", "PatientID": "PAT-4711", "PatientBirthDate": "19700101",
                   "StudyInstanceUID": "1.2.3.4.5.6.7", "SeriesInstanceUID": "1.2.3.4.5.6.8",
                   "FrameOfReferenceUID": "1.2.3.4.5.6.9", "AccessionNumber": "ACC999"}
    for path in patient.iterdir():
        ds = pydicom.dcmread(path)
        for keyword, value in identifiers.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    array, affine = read_dicom_ct(patient)  # as an inpainting of a real CT would start
    result = export_dicom(Volume(array, affine), exported["labels"], tmp_path / "synthetic", provenance=PROVENANCE)
    for path in result.ct_files + [result.seg_file]:
        raw = path.read_bytes()
        assert not [v for v in identifiers.values() if v.encode() in raw], path.name


@needs_tools
def test_dcmdump_reads_an_exported_file(exported):
    run = subprocess.run(["dcmdump", str(exported["result"].ct_files[0])], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert "[SYNTHETIC^MAISI]" in run.stdout and "[MAISISynth]" in run.stdout


def all_uids(files: list[Path]) -> list[str]:
    uids = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids += [ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID]
    return uids


def test_a_reexport_keeps_its_study_and_frame_and_renews_everything_else(tmp_path):
    image, labels = make_image(), make_labels()
    first = export_dicom(Volume(image, axial_affine()), labels, tmp_path / "a", provenance=PROVENANCE)
    second = export_dicom(Volume(image, axial_affine()), labels, tmp_path / "b", provenance=PROVENANCE)
    uids_a = set(all_uids(first.ct_files + [first.seg_file]))
    uids_b = set(all_uids(second.ct_files + [second.seg_file]))
    assert uids_a & uids_b == {first.study_uid, first.frame_of_reference_uid}
    assert second.study_uid == first.study_uid and first.study_uid.startswith("2.25.")
    assert len(uids_a) == SHAPE[2] + 1 + 2 + 1 + 1  # SOPs, 2 series, study, frame of reference
    assert first.patient_id == second.patient_id  # same provenance, same synthetic patient
    other = export_dicom(Volume(image, axial_affine()), labels, tmp_path / "c", provenance={**PROVENANCE, "seed": 6})
    assert other.study_uid != first.study_uid  # another generation, another study
    fresh = export_dicom(Volume(image, axial_affine()), labels, tmp_path / "d", provenance=PROVENANCE, new_study=True)
    assert not set(all_uids(fresh.ct_files + [fresh.seg_file])) & uids_a
    assert fresh.patient_id == first.patient_id


# --- reading back ----------------------------------------------------------------------------------------


def test_read_dicom_ct_returns_our_array_and_affine(exported):
    array, affine = read_dicom_ct(exported["out"])
    assert array.dtype == np.int16
    np.testing.assert_array_equal(array, exported["stored_image"])
    np.testing.assert_allclose(affine, exported["stored_affine"], atol=2e-4)
    np.testing.assert_array_equal(on_source_grid((array, affine), exported["affine"]), exported["image"])


def test_read_dicom_mask_round_trip_from_folder_and_from_seg_file(exported):
    for source in (exported["out"], exported["result"].seg_file):
        labels, affine = read_dicom_mask(source)
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, exported["stored_labels"])
        np.testing.assert_allclose(affine, exported["stored_affine"], atol=2e-4)
        np.testing.assert_array_equal(on_source_grid((labels, affine), exported["affine"]), exported["labels"])


@pytest.mark.parametrize("flip_k", [False, True])
def test_left_handed_and_single_slice_grids_round_trip(tmp_path, flip_k):
    affine = np.diag([-0.75, 0.75, 1.25, 1.0])  # x flipped: a left-handed grid, as many NIfTI files are
    affine[:3, 3] = [60.0, -30.0, -100.0]
    if flip_k:
        affine[:3, 2] *= -1
    labels = make_labels()
    for shape, image, label_map in ((SHAPE, make_image(), labels), (SHAPE[:2] + (1,), make_image()[:, :, :1], labels[:, :, 5:6])):
        out = tmp_path / f"export_{shape[2]}"
        export_dicom(Volume(image, affine), label_map, out)
        array, ct_affine = read_dicom_ct(out)
        read, seg_affine = read_dicom_mask(out)
        np.testing.assert_array_equal(on_source_grid((array, ct_affine), affine), image)
        np.testing.assert_array_equal(on_source_grid((read, seg_affine), affine), label_map)
        if shape[2] == 1:  # one slice has no stacking direction: DICOM's normal (row x column) is taken
            np.testing.assert_allclose(ct_affine[:3, 2], [0, 0, 1.25], atol=1e-9)  # L x P = S


def test_read_dicom_mask_of_a_lone_seg_uses_its_own_frames(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:9, 2:12, 4:9] = 1  # only slices 4..8 hold segments
    labels[10:14, 2:12, 6:8] = 3
    result = export_dicom(Volume(make_image(), oblique_affine()), labels, tmp_path / "dicom")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(result.seg_file, alone / "labels.dcm")
    read, affine = read_dicom_mask(alone / "labels.dcm")
    stored, stored_affine = export_order(labels, oblique_affine())
    filled = [k for k in range(stored.shape[2]) if stored[:, :, k].any()]
    np.testing.assert_array_equal(read, stored[:, :, filled[0]:filled[-1] + 1])
    shifted = stored_affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, filled[0]], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(affine, shifted, atol=2e-4)


def test_segments_named_otherwise_map_to_maisi_ids_by_their_codes(exported, tmp_path):
    folder = tmp_path / "renamed"
    shutil.copytree(exported["out"], folder)
    seg = pydicom.dcmread(folder / "SEG.dcm")
    for item in seg.SegmentSequence:
        if item.SegmentLabel in ("liver", "right kidney", "lung tumor"):
            item.SegmentLabel = "Segment_" + str(item.SegmentNumber)
    seg.save_as(folder / "SEG.dcm")
    labels, _ = read_dicom_mask(folder)
    np.testing.assert_array_equal(labels, exported["stored_labels"])
    # A rib's codes (Rib + Left) fit twelve MAISI labels: without its name it cannot be placed.
    for item in seg.SegmentSequence:
        if item.SegmentLabel == "left rib 3":
            item.SegmentLabel = "rib"
    seg.save_as(folder / "SEG.dcm")
    with pytest.raises(MaisiError, match="match no MAISI label: .*'rib'"):
        read_dicom_mask(folder)


def test_a_seg_whose_referenced_series_is_missing_is_refused(exported, tmp_path):
    only_seg = tmp_path / "only_seg"
    only_seg.mkdir()
    shutil.copy(exported["result"].seg_file, only_seg / "SEG.dcm")
    with pytest.raises(MaisiError, match="references is not in"):
        read_dicom_mask(only_seg)
    with pytest.raises(MaisiError, match="is not a DICOM Segmentation"):
        read_dicom_mask(exported["result"].ct_files[0])
    ct_only = tmp_path / "ct_only"
    shutil.copytree(exported["out"], ct_only)
    (ct_only / "SEG.dcm").unlink()
    with pytest.raises(MaisiError, match="no DICOM SEG file found"):
        read_dicom_mask(ct_only)
    partial = tmp_path / "partial"
    shutil.copytree(exported["out"], partial)
    (partial / exported["result"].ct_files[3].name).unlink()
    with pytest.raises(MaisiError, match="missing"):
        read_dicom_mask(partial)


# --- bad input --------------------------------------------------------------------------------------------


def test_labels_on_another_grid_are_refused(tmp_path):
    image = Volume(make_image(), axial_affine())
    with pytest.raises(MaisiError, match="different grids"):
        export_dicom(image, np.zeros((24, 20, 11), np.uint8), tmp_path / "a")
    moved = axial_affine()
    moved[0, 3] += 1.0
    with pytest.raises(MaisiError, match="another grid"):
        export_dicom(image, Volume(make_labels(), moved), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unknown_label_ids_are_refused(tmp_path):
    labels = make_labels()
    labels[0, 0, 0] = 2  # a MAISI dummy id
    with pytest.raises(MaisiError, match="label ids MAISI does not know: 2"):
        export_dicom(Volume(make_image(), axial_affine()), labels, tmp_path / "out")


def test_hu_range_beyond_int16_is_refused_and_the_widest_range_round_trips(tmp_path):
    image = make_image().astype(np.float32)
    image[0, 0, 0], image[1, 0, 0] = -1024.0, 31744.0  # 32768 HU wide
    with pytest.raises(MaisiError, match="range of 32768 HU"):
        export_dicom(Volume(image, axial_affine()), None, tmp_path / "too_wide")
    image[1, 0, 0] = 31743.0  # exactly int16's span above the usual intercept
    export_dicom(Volume(image, axial_affine()), None, tmp_path / "widest")
    np.testing.assert_array_equal(on_source_grid(read_dicom_ct(tmp_path / "widest"), axial_affine()), image)
    shifted = make_image() - 3000  # below -1024: the intercept follows the minimum
    export_dicom(Volume(shifted, axial_affine()), None, tmp_path / "low")
    np.testing.assert_array_equal(on_source_grid(read_dicom_ct(tmp_path / "low"), axial_affine()), shifted)


def test_nan_and_sheared_images_are_refused(tmp_path):
    image = make_image().astype(np.float32)
    image[2, 2, 2] = np.nan
    with pytest.raises(MaisiError, match="NaN"):
        export_dicom(Volume(image, axial_affine()), None, tmp_path / "nan")
    sheared = axial_affine()
    sheared[0, 1] = 0.3
    with pytest.raises(MaisiError, match="sheared"):
        export_dicom(Volume(make_image(), sheared), None, tmp_path / "sheared")


def test_a_folder_with_another_series_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "dicom"
    out.mkdir()
    (out / "notes.txt").write_text("kept")  # other files do not block an export and are kept
    first = export_dicom(Volume(make_image(), axial_affine()), make_labels(), out)
    with pytest.raises(MaisiError, match="already holds 13 DICOM files"):
        export_dicom(Volume(make_image(1), axial_affine()), None, out)
    second = export_dicom(Volume(make_image(1), axial_affine()), None, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in second.ct_files] + ["notes.txt"])
    assert {pydicom.dcmread(p).SeriesInstanceUID for p in second.ct_files} == {second.series_uid} != {first.series_uid}
    np.testing.assert_array_equal(on_source_grid(read_dicom_ct(out), axial_affine()), make_image(1))
    assert (out / "notes.txt").read_text() == "kept"


def test_a_non_dicom_file_in_the_way_is_refused_before_writing(tmp_path):
    out = tmp_path / "dicom"
    out.mkdir()
    (out / "SEG.dcm").write_text("not DICOM")
    with pytest.raises(MaisiError, match="SEG.dcm already exists and is not a DICOM file"):
        export_dicom(Volume(make_image(), axial_affine()), make_labels(), out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom"] and [p.name for p in out.iterdir()] == ["SEG.dcm"]


def test_a_failed_write_leaves_no_partial_export_and_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "dicom"
    old = export_dicom(Volume(make_image(), axial_affine()), make_labels(), out)
    saved = []
    real_save = dicom_writer._save

    def save_until_disk_full(dataset, path):
        if len(saved) == 5:
            raise OSError(28, "No space left on device")
        saved.append(path)
        real_save(dataset, path)

    monkeypatch.setattr(dicom_writer, "_save", save_until_disk_full)
    with pytest.raises(MaisiError, match="No space left on device"):
        export_dicom(Volume(make_image(1), axial_affine()), make_labels(), out, overwrite=True)
    saved.clear()
    with pytest.raises(MaisiError, match="No space left on device"):
        export_dicom(Volume(make_image(1), axial_affine()), make_labels(), tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom"]  # no staging folders left
    assert sorted(out.iterdir()) == sorted(old.ct_files + [old.seg_file])
    np.testing.assert_array_equal(on_source_grid(read_dicom_ct(out), axial_affine()), make_image())


# --- terminology ------------------------------------------------------------------------------------------


def dicom_dictionary() -> dict[str, list[tuple[str, set[int]]]]:
    """SNOMED CT code -> (meaning, context groups) as the DICOM standard lists them (pydicom's copy)."""
    from pydicom.sr._concepts_dict import concepts

    index: dict[str, list[tuple[str, set[int]]]] = {}
    for entries in concepts["SCT"].values():
        for code, (meaning, cids) in entries.items():
            index.setdefault(code, []).append((meaning, set(cids)))
    return index


def test_every_maisi_label_has_terminology_checked_against_the_dicom_standard():
    data = terminology_data()
    coded = {int(k) for k in data["labels"]}
    assert coded == set(valid_ids()) - {0}
    index = dicom_dictionary()
    groups = {"category": {7150}, "type": {7151, 7166}, "type_modifier": {244}, "anatomic_region": {4, 7151},
              "anatomic_region_modifier": {244}}
    for label_id, entry in data["labels"].items():
        assert entry["name"] == name_of(int(label_id))
        assert entry["source"] in ("dicom", "slicer")
        for field, cids in groups.items():
            if field not in entry or (entry["source"] == "slicer" and field == "type"):
                continue
            scheme, value, meaning = entry[field]
            assert scheme == "SCT"
            assert any(m == meaning and c & cids for m, c in index[value]), (entry["name"], field, entry[field])
    assert data["generic_labels"] == [int(k) for k, e in data["labels"].items() if e["source"] == "generic"]
    assert {terms_of(i).type.value for i in (1, 3, 4, 6, 7, 57, 62, 115)} == {
        "10200004", "78961009", "15776009", "15825003", "64131007", "44567001", "71854001", "80891009"}
    assert terms_of(2).source == "generic" and terms_of(2).type.meaning == "Organ"  # a dummy id: the fallback


def test_slicer_terminology_file_is_current_and_loads_in_slicer():
    path = REPO / "MAISISynth" / "Resources" / "maisi.term.json"
    assert json.loads(path.read_text()) == slicer_terminology(), "regenerate: python -m MAISIEngine.io.terminology"
    slicer = pytest.importorskip("slicer")
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert logic.LoadTerminologyFromFile(str(path)) == SLICER_CONTEXT_NAME
    for name, type_code, modifier, rgb in (("liver", "10200004", None, (221, 130, 101)),
                                           ("left kidney", "64033007", "7771000", (185, 102, 83))):
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.FindTypeInTerminologyBy3dSlicerLabel(SLICER_CONTEXT_NAME, name, entry)
        assert entry.GetTypeObject().GetCodeValue() == type_code
        assert entry.GetTypeModifierObject().GetCodeValue() == modifier
        shown = entry.GetTypeModifierObject() if modifier else entry.GetTypeObject()
        assert tuple(shown.GetRecommendedDisplayRGBValue()) == rgb
    assert len(all_terms()) == len(valid_ids()) - 1


# --- command line -----------------------------------------------------------------------------------------


def test_cli_export_dicom_refuses_a_second_export_without_overwrite(tmp_path, capsys):
    image, labels = make_image(), make_labels()
    nib.save(nib.Nifti1Image(image, axial_affine()), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(labels, axial_affine()), tmp_path / "labels.nii.gz")
    (tmp_path / "provenance.json").write_text(json.dumps(PROVENANCE))
    args = ["export-dicom", str(tmp_path / "image.nii.gz"), str(tmp_path / "labels.nii.gz"), "-o", str(tmp_path / "out")]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ct_slices"] == SHAPE[2] and summary["segments"] == len(LABELS_USED)
    assert pydicom.dcmread(tmp_path / "out" / "SEG.dcm").SeriesDescription == "SYNTHETIC SEG maisi demo seed 5"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: output folder") and "--overwrite" in err[0]
    assert main(args + ["--overwrite"]) == 0
    np.testing.assert_array_equal(on_source_grid(read_dicom_mask(tmp_path / "out"), axial_affine()), labels)


def test_cli_export_dicom_refuses_labels_on_another_grid(tmp_path, capsys):
    nib.save(nib.Nifti1Image(make_image(), axial_affine()), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(make_labels(), oblique_affine()), tmp_path / "labels.nii.gz")
    code = main(["export-dicom", str(tmp_path / "image.nii.gz"), str(tmp_path / "labels.nii.gz"), "-o", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: the label map lies on another grid")
    assert not (tmp_path / "out").exists()
