"""Sending an export to a real PACS: Debian's Orthanc (DICOM + DICOMweb plugin) started on 127.0.0.1.

The volume is a 32^3 phantom on an anisotropic grid, so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("dicomweb_client")

from orthanc_server import AE_TITLE, bearer_token_gate, orthanc_available, running_orthanc  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # noqa: E402

from MAISIEngine.cli import main  # noqa: E402
from MAISIEngine.io.dicom.send import parse_destination  # noqa: E402
from MAISIEngine.phantom import make_phantom  # noqa: E402

pytestmark = pytest.mark.skipif(not orthanc_available(), reason="Debian packages orthanc and orthanc-dicomweb are needed")
SPACING = (6.0, 7.0, 8.0)
PROVENANCE = {"model": "demo", "seed": 3, "region": ["chest", "abdomen"], "created_utc": "2026-12-05T06:00:00+00:00"}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def generation(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("generation")
    phantom = make_phantom(size=(32, 32, 32), spacing=SPACING, region="chest-abdomen", seed=0, supersample=1)
    nib.save(nib.Nifti1Image(np.asarray(phantom.ct, np.int16), phantom.affine), folder / "image.nii.gz")
    nib.save(nib.Nifti1Image(phantom.labels.astype(np.uint8), phantom.affine), folder / "labels.nii.gz")
    (folder / "provenance.json").write_text(json.dumps(PROVENANCE))
    return folder


def export_args(generation: Path, out: Path) -> list[str]:
    return ["export-dicom", str(generation / "image.nii.gz"), str(generation / "labels.nii.gz"), "-o", str(out)]


def c_find(orthanc, level: str, **keys) -> list[pydicom.Dataset]:
    ae = AE(ae_title="MAISITEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=AE_TITLE)
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    found = [identifier for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
             if status and status.Status in (0xFF00, 0xFF01)]
    assoc.release()
    return found


def check_pacs_holds_the_export(orthanc, out: Path, summary: dict) -> None:
    """1 patient, 1 study, CT series of 32 + SEG of 1, found by C-FIND, pixels and geometry intact."""
    stats = orthanc.get("/statistics")
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"], stats["CountInstances"]) == (1, 1, 2, 33)
    studies = c_find(orthanc, "STUDY", PatientID=summary["patient_id"], StudyInstanceUID="")
    assert [str(s.StudyInstanceUID) for s in studies] == [summary["study_uid"]]
    series = c_find(orthanc, "SERIES", StudyInstanceUID=summary["study_uid"], SeriesInstanceUID="", Modality="",
                    NumberOfSeriesRelatedInstances="")
    assert sorted((str(s.Modality), int(s.NumberOfSeriesRelatedInstances)) for s in series) == [("CT", 32), ("SEG", 1)]
    # Every instance comes back byte-identical in its pixel data.
    ours = {}
    for path in out.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ours[str(ds.SOPInstanceUID)] = ds.PixelData
    for instance in orthanc.get("/instances"):
        theirs = pydicom.dcmread(__import__("io").BytesIO(orthanc.get_bytes(f"/instances/{instance}/file")))
        assert theirs.PixelData == ours[str(theirs.SOPInstanceUID)]
    # Orthanc's own slice ordering of the CT series forms a volume with the source spacing.
    ct_series = [s for s in orthanc.get("/series") if orthanc.get(f"/series/{s}")["MainDicomTags"]["Modality"] == "CT"]
    ordered = orthanc.get(f"/series/{ct_series[0]}/ordered-slices")["Dicom"]
    positions, pixel_spacing = [], None
    for uri in ordered:
        tags = orthanc.get(uri.replace("/file", "/simplified-tags"))
        positions.append([float(v) for v in tags["ImagePositionPatient"].split("\\")])
        pixel_spacing = [float(v) for v in tags["PixelSpacing"].split("\\")]
    steps = np.linalg.norm(np.diff(np.array(positions), axis=0), axis=1)
    assert len(positions) == 32
    np.testing.assert_allclose(steps, SPACING[2], atol=1e-4)
    np.testing.assert_allclose(pixel_spacing, [SPACING[1], SPACING[0]], atol=1e-6)


def test_send_stores_one_patient_one_study_two_series(orthanc, generation, tmp_path, capsys):
    orthanc.clear()
    code = main(export_args(generation, tmp_path / "out") + ["--send", orthanc.destination])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    statuses = summary["send"]["instances"]
    assert len(statuses) == 33 and {s["status"] for s in statuses} == {"0x0000"}
    assert captured.err.count("success") == 33  # one status line per instance
    check_pacs_holds_the_export(orthanc, tmp_path / "out", summary)


def test_stow_stores_the_same_and_a_reexport_joins_its_study(orthanc, generation, tmp_path, capsys):
    orthanc.clear()
    token = tmp_path / "token"
    token.write_text("not-needed-by-this-orthanc\n")
    code = main(export_args(generation, tmp_path / "out") + ["--stow", orthanc.dicomweb, "--token-file", str(token)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert {s["outcome"] for s in summary["stow"]["instances"]} == {"success"} and len(summary["stow"]["instances"]) == 33
    check_pacs_holds_the_export(orthanc, tmp_path / "out", summary)
    # The same generation exported again lands in the same study; --new-study makes a second one.
    assert main(export_args(generation, tmp_path / "again") + ["--send", orthanc.destination]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["study_uid"] == summary["study_uid"]
    assert (orthanc.get("/statistics")["CountStudies"], orthanc.get("/statistics")["CountSeries"]) == (1, 4)
    assert main(export_args(generation, tmp_path / "new") + ["--send", orthanc.destination, "--new-study"]) == 0
    assert json.loads(capsys.readouterr().out)["study_uid"] != summary["study_uid"]
    assert orthanc.get("/statistics")["CountStudies"] == 2


def test_wrong_called_ae_and_bad_destinations_get_one_clear_message(orthanc, generation, tmp_path, capsys):
    code = main(export_args(generation, tmp_path / "out") + ["--send", f"NOTORTHANC@127.0.0.1:{orthanc.dicom_port}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot open a DICOM association with NOTORTHANC@127.0.0.1" in err and "Traceback" not in err
    for bad in ("ORTHANC@127.0.0.1", "127.0.0.1:4242", "A_TITLE_LONGER_THAN_16@h:1", "ORTHANC@h:70000"):
        code = main(export_args(generation, tmp_path / "never") + ["--send", bad])
        err = capsys.readouterr().err
        assert code == 2 and "is not a DICOM destination" in err, (bad, err)
    assert not (tmp_path / "never").exists()  # refused before anything was written
    empty = tmp_path / "empty_token"
    empty.write_text("\n")
    code = main(export_args(generation, tmp_path / "never") + ["--stow", orthanc.dicomweb, "--token-file", str(empty)])
    assert code == 2 and "is empty" in capsys.readouterr().err
    code = main(export_args(generation, tmp_path / "out2") + ["--stow", orthanc.url + "/no-such-root"])
    err = capsys.readouterr().err
    assert code == 2 and "HTTP 404" in err


def test_stow_sends_the_token_from_the_file_and_a_wrong_token_is_one_clear_error(orthanc, generation, tmp_path, capsys):
    orthanc.clear()
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    with bearer_token_gate(orthanc.url, "s3cret-token") as gate:
        code = main(export_args(generation, tmp_path / "out") + ["--stow", gate.url + "/dicom-web", "--token-file", str(token)])
        assert code == 0, capsys.readouterr().err
        assert gate.seen == ["Bearer s3cret-token"] * 2  # 33 = 32 + 1
        assert orthanc.get("/statistics")["CountInstances"] == 33
        token.write_text("expired\n")
        code = main(export_args(generation, tmp_path / "again") + ["--stow", gate.url + "/dicom-web", "--token-file", str(token)])
        err = capsys.readouterr().err
        assert code == 2 and "answered HTTP 401" in err and "check the token file" in err and "expired" not in err


def test_destinations_parse_as_written():
    assert str(parse_destination("PACS@[fd00::5]:104")) == "PACS@[fd00::5]:104"
    assert parse_destination(" ORTHANC@pacs.example.org:4242 ").host == "pacs.example.org"
    assert parse_destination("ORTHANC@10.0.0.7:11112").port == 11112
