"""The desktop app's File > Send to PACS, in a real window under Xvfb, against a real Orthanc."""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("vtk")
pytest.importorskip("pynetdicom")

from PyQt5 import QtCore, QtWidgets  # noqa: E402

from desktop_fixtures import open_main_window, torso_ct, torso_labels, write_nifti  # noqa: E402
from orthanc_server import free_port, orthanc_available, running_orthanc  # noqa: E402

pytestmark = pytest.mark.skipif(not orthanc_available(), reason="Debian packages orthanc and orthanc-dicomweb are needed")


@pytest.fixture
def window(qtbot, tmp_path):
    yield from open_main_window(qtbot, tmp_path)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def open_dialog_from_the_menu(window):
    action = next(a for a in window.menuBar().actions()[0].menu().actions() if a.text() == "Send to &PACS (CT + SEG)...")
    assert action is window.pacs_action
    action.trigger()
    dialog = window.pacs_dialog
    assert dialog.isVisible() and dialog.windowTitle() == "Send to PACS"
    return dialog


def send_and_wait(dialog, qtbot) -> None:
    qtbot.mouseClick(dialog.send_button, QtCore.Qt.LeftButton)
    assert dialog.is_sending() and dialog.summary.text() == "Sending..."  # the window is not blocked
    qtbot.waitUntil(lambda: not dialog.is_sending(), timeout=120_000)


def test_send_to_pacs_over_dicom_and_dicomweb(window, orthanc, qtbot, tmp_path):
    orthanc.clear()
    labels = torso_labels((24, 24, 16))
    assert window.load_ct_file(write_nifti(tmp_path / "ct.nii.gz", torso_ct(labels)),
                               write_nifti(tmp_path / "labels.nii.gz", labels))
    dialog = open_dialog_from_the_menu(window)
    dialog.destination.setText(orthanc.destination)
    send_and_wait(dialog, qtbot)
    assert [r.status for r in dialog.results] == ["0x0000"] * 17
    assert dialog.table.rowCount() == 17 and dialog.table.item(16, 0).text() == "SEG.dcm"
    assert dialog.summary.text() == "17 of 17 instances stored"
    stats = orthanc.get("/statistics")
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"], stats["CountInstances"]) == (1, 1, 2, 17)
    ct_series = [s for s in orthanc.get("/series") if orthanc.get(f"/series/{s}")["MainDicomTags"]["Modality"] == "CT"]
    first = orthanc.get(orthanc.get(f"/series/{ct_series[0]}/ordered-slices")["Dicom"][0].replace("/file", "/simplified-tags"))
    assert first["ImageOrientationPatient"] == "1\\0\\0\\0\\1\\0"
    # The same study again over DICOMweb, with a token file: two more series, still one study.
    dialog.mode.setCurrentText("DICOMweb (STOW-RS)")
    assert not dialog.destination.isEnabled() and dialog.url.isEnabled()
    (tmp_path / "token").write_text("secret\n")
    dialog.url.setText(orthanc.dicomweb)
    dialog.token_file.setText(str(tmp_path / "token"))
    send_and_wait(dialog, qtbot)
    assert {r.outcome for r in dialog.results} == {"success"} and len(dialog.results) == 17
    stats = orthanc.get("/statistics")
    assert (stats["CountStudies"], stats["CountSeries"], stats["CountInstances"]) == (1, 4, 34)
    # The next dialog starts where this one left off (the token file's path, not the token).
    dialog.close()
    again = open_dialog_from_the_menu(window)
    assert (again.mode.currentText(), again.url.text(), again.token_file.text()) == (
        "DICOMweb (STOW-RS)", orthanc.dicomweb, str(tmp_path / "token"))
    assert again.destination.text() == orthanc.destination
    assert "secret" not in (tmp_path / "maisi-desktop.ini").read_text()


def test_a_bad_destination_shows_one_error_and_sends_nothing(window, orthanc, qtbot, tmp_path):
    orthanc.clear()
    dialog = open_dialog_from_the_menu(window)
    qtbot.mouseClick(dialog.send_button, QtCore.Qt.LeftButton)
    assert dialog.error_dialog.text() == "There is no CT to send."
    dialog.error_dialog.close()
    labels = torso_labels((24, 24, 16))
    assert window.load_ct_file(write_nifti(tmp_path / "ct.nii.gz", torso_ct(labels)),
                               write_nifti(tmp_path / "labels.nii.gz", labels))
    dialog.destination.setText("ORTHANC at localhost")
    qtbot.mouseClick(dialog.send_button, QtCore.Qt.LeftButton)
    assert "is not a DICOM destination" in dialog.error_dialog.text()
    assert isinstance(dialog.error_dialog, QtWidgets.QMessageBox) and dialog.results == []
    assert orthanc.get("/statistics")["CountInstances"] == 0
    dialog.error_dialog.close()
    dialog.destination.setText(f"ORTHANC@127.0.0.1:{free_port()}")  # nobody listens there
    send_and_wait(dialog, qtbot)
    assert dialog.error_dialog.text().startswith("Cannot open a DICOM association with ORTHANC@127.0.0.1")
    assert dialog.summary.text().startswith("Not sent:")
