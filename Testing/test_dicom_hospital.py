"""What a hospital checks in an export: no input path anywhere, upright in 2D viewers, scanner fields set.

Inputs sit in folders named like patients; every output byte (DICOM, NIfTI, JSON, gzip-decompressed
too) is searched for those names. Orientation is checked on a phantom label map in RAS order (as NIfTI
and Slicer hold it) by where its spinal cord and left kidney fall in the stored CT slice and SEG frame.
"""

from __future__ import annotations

import getpass
import gzip
import hashlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

hd = pytest.importorskip("highdicom")

from conftest import block_mask  # noqa: E402
from dicom_fixtures import on_source_grid  # noqa: E402
from MAISIEngine.cli import main  # noqa: E402
from MAISIEngine.io.dicom import export_dicom  # noqa: E402
from MAISIEngine.io.nifti import Volume  # noqa: E402
from MAISIEngine.io.privacy import scrub  # noqa: E402
from MAISIEngine.phantom import make_phantom  # noqa: E402

PATIENT_FOLDER = "DOE_JOHN_MRN99887766"
MODEL_FOLDER = "SMITH_ANNA_MRN11223344"
SPINAL_CORD, LEFT_KIDNEY, RIGHT_KIDNEY = 121, 14, 5
PROVENANCE = {"model": "demo", "seed": 3, "region": ["chest", "abdomen"], "created_utc": "2026-12-05T06:07:08+00:00"}
needs_dciodvfy = pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dicom3tools is needed")


def every_output_byte(folder: Path) -> list[tuple[Path, bytes]]:
    """Each file under `folder` as stored, and decompressed as well when it is gzip."""
    contents = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        contents.append((path, data))
        if data[:2] == b"\x1f\x8b":
            contents.append((path, gzip.decompress(data)))
    return contents


def local_needles(tmp_path: Path) -> list[bytes]:
    needles = [PATIENT_FOLDER, "DOE_JOHN", "MRN99887766", MODEL_FOLDER, "MRN11223344", str(tmp_path)]
    needles += [name for name in (getpass.getuser(), socket.gethostname()) if len(name) >= 4]
    return [n.encode() for n in needles]


def test_no_input_folder_user_or_host_name_reaches_any_output(tiny_model_dir, tmp_path, capsys):
    patient = tmp_path / PATIENT_FOLDER
    patient.mkdir()
    mask = patient / f"{PATIENT_FOLDER}_labels.nii.gz"
    nib.save(nib.Nifti1Image(block_mask((32, 32, 32)), np.diag([2.0, 2.0, 3.0, 1.0])), mask)
    model = tmp_path / MODEL_FOLDER / "model"
    shutil.copytree(tiny_model_dir, model)
    out = tmp_path / "out"
    code = main(["generate", "--model", str(model), "--mask", str(mask), "--steps", "2", "--seed", "1",
                 "--format", "dicom", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["mask_source"] == "file sha256:" + hashlib.sha256(mask.read_bytes()).hexdigest()
    # An older provenance that still holds paths (and a warning quoting one) is cleaned on export too.
    old = dict(provenance, mask_source=str(mask), warnings=[f"resampled {mask} onto the model grid"],
               note=f"run by {getpass.getuser()} in {patient}")
    (tmp_path / "old_provenance.json").write_text(json.dumps(old))
    assert main(["export-dicom", str(out / "image.nii.gz"), str(out / "labels.nii.gz"), "-o", str(out / "again"),
                 "--provenance", str(tmp_path / "old_provenance.json")]) == 0
    capsys.readouterr()
    # Exported again from its own provenance.json, the generation keeps the study it was written with.
    assert main(["export-dicom", str(out / "image.nii.gz"), str(out / "labels.nii.gz"), "-o", str(tmp_path / "re")]) == 0
    assert json.loads(capsys.readouterr().out)["study_uid"] == pydicom.dcmread(out / "dicom" / "SEG.dcm").StudyInstanceUID
    files = every_output_byte(out)
    assert sum(p.suffix == ".dcm" for p, _ in files) == 2 * (32 + 1)
    assert {p.name for p, _ in files} >= {"image.nii.gz", "labels.nii.gz", "provenance.json", "SEG.dcm"}
    for path, data in files:
        for needle in local_needles(tmp_path):
            assert needle not in data, (path, needle)
    exported = pydicom.dcmread(out / "again" / "SEG.dcm")
    assert '"mask_source":"file (name withheld)"' in exported[0x0011, 0x1001].value


def test_the_worker_reports_provenance_without_the_input_folder(tiny_model_dir, tmp_path):
    """The worker's result event is what `maisi serve` hands to remote clients."""
    patient = tmp_path / PATIENT_FOLDER
    patient.mkdir()
    mask = patient / "labels.nii.gz"
    nib.save(nib.Nifti1Image(block_mask((32, 32, 32)), np.diag([2.0, 2.0, 3.0, 1.0])), mask)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"type": "generate", "model": str(tiny_model_dir), "mask": str(mask), "steps": 2,
                               "device": "cpu", "output_dir": str(tmp_path / "out")}))
    run = subprocess.run([sys.executable, "-m", "MAISIEngine.worker", str(job)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["event"] == "result"
    assert result["provenance_data"]["mask_source"] == "file sha256:" + hashlib.sha256(mask.read_bytes()).hexdigest()
    assert PATIENT_FOLDER not in run.stdout


def test_scrub_withholds_paths_and_local_names_and_keeps_the_rest():
    data = {"mask_source": "scans/DOE_JOHN/labels.nii.gz", "image_source": "file sha256:ab", "seed": 4,
            "warnings": ["read C:\\Users\\jdoe\\a.nii and /home/jdoe/b.nii.gz", "HU/mm ratio kept", "host ward7-pc busy"],
            "region": ["chest", "abdomen"], "source": "phantom region=chest seed=4"}
    clean = scrub(data, names=("jdoe", "ward7-pc"))
    assert clean == {"mask_source": "file (name withheld)", "image_source": "file sha256:ab", "seed": 4,
                     "warnings": ["read <path withheld> and <path withheld>", "HU/mm ratio kept", "host <name withheld> busy"],
                     "region": ["chest", "abdomen"], "source": "phantom region=chest seed=4"}


# --- orientation -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ras_export(tmp_path_factory):
    """A phantom label map in RAS order (i -> right, j -> anterior), its CT coding each voxel's label."""
    phantom = make_phantom(size=(32, 32, 24), spacing=(10.0, 10.0, 12.0), region="chest-abdomen", seed=0, supersample=1)
    assert np.all(np.diag(phantom.affine)[:3] > 0)  # RAS: the order 2D viewers show upside down and mirrored
    labels = phantom.labels
    hu = labels.astype(np.int16) * 10 - 1000  # the CT says which label each pixel holds
    out = tmp_path_factory.mktemp("ras") / "dicom"
    result = export_dicom(Volume(hu, phantom.affine), labels, out, provenance=PROVENANCE)
    return {"result": result, "labels": labels, "affine": phantom.affine}


def centroid(mask: np.ndarray) -> np.ndarray:
    assert mask.any()
    return np.argwhere(mask).mean(axis=0)  # (row, column)


def test_first_ct_slice_of_a_ras_label_map_faces_as_a_scanner_writes(ras_export):
    first = pydicom.dcmread(ras_export["result"].ct_files[0])
    assert first.data_element("ImageOrientationPatient").value == ["1", "0", "0", "0", "1", "0"]
    assert b"1\\0\\0\\0\\1\\0" in ras_export["result"].ct_files[0].read_bytes()
    z = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in ras_export["result"].ct_files]
    assert np.all(np.diff(z) == pytest.approx(12.0))  # instance 1 at the feet, one slice thickness apart


def test_middle_slice_as_stored_has_the_spine_at_the_bottom_and_the_left_on_the_right(ras_export):
    result = ras_export["result"]
    middle = next(k for k in range(len(result.ct_files)) if (ras_export["labels"][:, :, k] == SPINAL_CORD).any()
                  and k >= len(result.ct_files) // 2)
    ct = pydicom.dcmread(result.ct_files[middle])
    hu = ct.pixel_array.astype(np.int32) + int(ct.RescaleIntercept)
    rows, columns = hu.shape
    cord = centroid(hu == SPINAL_CORD * 10 - 1000)
    assert cord[0] > 0.6 * rows  # posterior = bottom of the image
    seg = hd.seg.segread(result.seg_file)
    number = next(n for n, name in result.segments.items() if name == "spinal cord")
    frame = seg.get_pixels_by_source_instance([ct.SOPInstanceUID], segment_numbers=[number])[0, :, :, 0]
    np.testing.assert_allclose(centroid(frame > 0), cord)  # the SEG frame follows its CT slice pixel for pixel
    kidney_slice = next(k for k in range(ras_export["labels"].shape[2]) if (ras_export["labels"][:, :, k] == LEFT_KIDNEY).any())
    ct = pydicom.dcmread(result.ct_files[kidney_slice])
    hu = ct.pixel_array.astype(np.int32) + int(ct.RescaleIntercept)
    assert centroid(hu == LEFT_KIDNEY * 10 - 1000)[1] > 0.5 * columns  # patient's left on the viewer's right
    assert centroid(hu == RIGHT_KIDNEY * 10 - 1000)[1] < 0.5 * columns


def test_an_oblique_grid_takes_the_nearest_scanner_order(tmp_path):
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [8, -6, 12], degrees=True).as_matrix() @ np.diag([-2.0, 2.5, -3.0])
    labels = block_mask((16, 14, 10))
    result = export_dicom(Volume(labels.astype(np.int16), affine), labels, tmp_path / "dicom")
    orientation = np.array([float(v) for v in pydicom.dcmread(result.ct_files[0]).ImageOrientationPatient])
    assert orientation[0] > 0.95 and orientation[4] > 0.95  # columns towards the left, rows towards the back
    positions = np.array([[float(v) for v in pydicom.dcmread(p).ImagePositionPatient] for p in result.ct_files])
    assert np.all(np.diff(positions[:, 2]) > 0)  # feet to head


# --- scanner fields, synthetic markers, character set -----------------------------------------------------


def dciodvfy(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line.strip() for line in (run.stdout + run.stderr).splitlines() if line.strip()]


def test_scanner_fields_and_synthetic_markers(ras_export):
    ct = pydicom.dcmread(ras_export["result"].ct_files[0])
    seg = pydicom.dcmread(ras_export["result"].seg_file)
    assert ct.PatientPosition == "HFS" and ct.BodyPartExamined == "CHESTABDOMEN" == seg.BodyPartExamined
    assert (ct.StudyDate, ct.StudyTime, ct.AcquisitionDate, ct.AcquisitionTime) == ("20261205", "060708", "20261205", "060708")
    assert len(ct.SeriesDate) == 8 and len(ct.SeriesTime) == 6 and (seg.SeriesDate, seg.SeriesTime) == (ct.SeriesDate, ct.SeriesTime)
    for ds in (ct, seg):
        assert ds.DerivationDescription.startswith("SYNTHETIC")
        assert "SyntheticData" not in ds  # see docs/dicom.md: Debian's dciodvfy rejects it
        assert ds.SpecificCharacterSet == "ISO_IR 100"


@needs_dciodvfy
def test_synthetic_data_element_on_request_and_what_the_validator_says(tmp_path):
    labels = block_mask((16, 14, 6))
    result = export_dicom(Volume(labels.astype(np.int16), np.eye(4)), labels, tmp_path / "dicom",
                          provenance=PROVENANCE, synthetic_data_element=True)
    for path in (result.ct_files[0], result.seg_file):
        assert pydicom.dcmread(path).SyntheticData == "YES"
        errors = [line for line in dciodvfy(path) if "Error" in line]
        # The measured reason it is not the default: dicom3tools 2022 knows no (0008,001C).
        assert errors == ["Error - Attribute with an even group number is not a recognized standard attribute - (0x0008,0x001c)  ?"]


@needs_dciodvfy
def test_text_outside_latin1_is_written_as_utf8(tmp_path):
    labels = block_mask((16, 14, 6))
    result = export_dicom(Volume(labels.astype(np.int16), np.eye(4)), labels, tmp_path / "dicom",
                          provenance={**PROVENANCE, "model": "李-ct"})
    for path in (result.ct_files[0], result.seg_file):
        ds = pydicom.dcmread(path)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.SeriesDescription.startswith("SYNTHETIC") and "李-ct" in ds.SeriesDescription
        assert "李-ct".encode() in path.read_bytes()
        assert not [line for line in dciodvfy(path) if "Error" in line]
    assert "李-ct" in pydicom.dcmread(result.ct_files[0]).StudyDescription


# --- other readers see the source geometry -----------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("dcm2niix"), reason="dcm2niix is needed")
def test_dcm2niix_and_highdicom_read_back_the_source_geometry(ras_export, tmp_path):
    result, labels, affine = ras_export["result"], ras_export["labels"], ras_export["affine"]
    run = subprocess.run(["dcm2niix", "-z", "n", "-f", "%s", "-o", str(tmp_path), str(result.out_dir)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    nii = nib.load(tmp_path / "1.nii")
    ct = np.asarray(nii.dataobj).astype(np.int32)
    np.testing.assert_array_equal(on_source_grid((ct, nii.affine), affine), labels.astype(np.int32) * 10 - 1000)
    volume = hd.seg.segread(result.seg_file).get_volume(combine_segments=True, relabel=False)
    numbers = {n: label_id for n, label_id in enumerate(sorted(int(v) for v in np.unique(labels) if v), start=1)}
    ids = np.vectorize(lambda n: numbers.get(int(n), 0))(volume.array).astype(np.uint8)
    ras_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine  # highdicom's affine is in LPS
    np.testing.assert_array_equal(on_source_grid((ids, ras_affine), affine), labels)
