"""The desktop app's Server mode against a real `maisi serve` on 127.0.0.1, in a real window under Xvfb:
the Compute box, Test connection, a generation run on the server and shown here, a wrong token, and
the choice kept in the settings file (without the token)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("vtk")

from PyQt5 import QtCore, QtWidgets  # noqa: E402

from desktop_fixtures import open_main_window, torso_labels, write_nifti  # noqa: E402
from MAISIDesktop.main_window import MainWindow, read_execution_settings  # noqa: E402
from MAISISynthLib.execution import ExecutionSettings  # noqa: E402
from server_fixtures import TOKEN, running_server  # noqa: E402

JOB_TIMEOUT_MS = 180_000


def settings_file(tmp_path: Path) -> QtCore.QSettings:
    return QtCore.QSettings(str(tmp_path / "maisi-desktop.ini"), QtCore.QSettings.IniFormat)


@pytest.fixture
def window(qtbot, tmp_path):
    yield from open_main_window(qtbot, tmp_path)


def type_into(qtbot, line_edit: QtWidgets.QLineEdit, text: str) -> None:
    """Replace a line edit's text the way a user does: select all, type, Enter."""
    line_edit.setFocus()
    line_edit.selectAll()
    qtbot.keyClicks(line_edit, text)
    qtbot.keyClick(line_edit, QtCore.Qt.Key_Return)


def choose_server(qtbot, window, url: str, token_path: Path) -> None:
    panel = window.generate_panel
    panel.run_on_combo.setCurrentIndex(panel.run_on_combo.findText("Server"))
    assert panel.server_url.isEnabled() and panel.token_file.isEnabled()
    type_into(qtbot, panel.server_url, url)
    type_into(qtbot, panel.token_file, str(token_path))


def test_compute_box_starts_on_this_computer_with_server_fields_disabled(window):
    panel = window.generate_panel
    assert panel.run_on_combo.currentText() == "This computer"
    assert [panel.run_on_combo.itemText(i) for i in range(panel.run_on_combo.count())] == ["This computer", "Server"]
    assert not panel.server_url.isEnabled() and not panel.token_file.isEnabled()
    assert not panel.test_connection_button.isEnabled()
    assert panel.execution_settings() == ExecutionSettings()


def test_generation_runs_on_the_server_and_the_result_is_shown_here(window, qtbot, tmp_path, tiny_model_dir):
    token_path = tmp_path / "maisi.token"
    token_path.write_text(TOKEN + "\n")
    labels = torso_labels((32, 32, 32))
    assert window.load_label_file(write_nifti(tmp_path / "mask32.nii.gz", labels, np.diag([8.0, 8.0, 8.0, 1.0])))
    panel = window.generate_panel
    with running_server(tmp_path / "server-jobs", model_dirs=[tiny_model_dir]) as (url, store):
        choose_server(qtbot, window, url, token_path)
        assert panel.weights_label.text() == "Weights: on the server (checked when a job starts)"
        qtbot.mouseClick(panel.test_connection_button, QtCore.Qt.LeftButton)
        assert panel.connection_label.text().endswith("on cpu; token accepted."), panel.connection_label.text()
        assert window.last_error is None

        panel.set_model(str(tiny_model_dir))
        panel.steps.setValue(2)
        panel.seed.setValue(5)
        assert panel.generate_button.isEnabled(), panel.check_label.text()
        fractions: list[float] = []
        window.jobs.progressed.connect(lambda fraction, _text: fractions.append(fraction))
        with qtbot.waitSignal(window.jobFinished, timeout=JOB_TIMEOUT_MS) as finished:
            qtbot.mouseClick(panel.generate_button, QtCore.Qt.LeftButton)
            assert type(window.jobs.job).__name__ == "RemoteJob"
            assert panel.cancel_button.isEnabled() and not panel.run_on_combo.isEnabled()
        assert finished.args == ["succeeded"], window.last_error

        # The server ran it: one job, done, with the uploaded mask inside its own folder.
        (job_id,) = [state.id for state in store.states.values()]
        state = store.get(job_id)
        assert state.status == "done" and state.provenance["seed"] == 5
        server_job = json.loads((store.folder(job_id) / "job.json").read_text())
        assert Path(server_job["mask"]).parent == store.folder(job_id) / "inputs"
        assert server_job["steps"] == 2 and server_job["model"] == str(tiny_model_dir)

    # Progress came from the server's events: rising, ending at 100 %.
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(0.0 < f < 1.0 for f in fractions)
    assert panel.progress.value() == 100
    # The result was downloaded into this run's folder and is what the views show.
    (entry,) = window.history.entries
    run_dir = Path(entry.run_dir)
    assert entry.kind == "generate" and entry.provenance["seed"] == 5
    assert Path(entry.result["image"]) == run_dir / "output" / "image.nii.gz"
    assert not (run_dir / "job.json").exists()  # no local worker was started
    served = np.asarray(nib.load(str(store.folder(job_id) / "output" / "image.nii.gz")).dataobj)
    study = window.study
    assert study.ct is not None and study.shape == (32, 32, 32)
    np.testing.assert_array_equal(study.ct, served.astype(study.ct.dtype))
    np.testing.assert_array_equal(study.labels, labels)
    assert np.allclose(study.affine, np.diag([8.0, 8.0, 8.0, 1.0]))
    assert panel.generate_button.isEnabled() and panel.run_on_combo.isEnabled()


def test_cancel_stops_the_job_on_the_server_and_leaves_no_run(window, qtbot, tmp_path, tiny_model_dir):
    token_path = tmp_path / "maisi.token"
    token_path.write_text(TOKEN)
    assert window.load_label_file(write_nifti(tmp_path / "mask32.nii.gz", torso_labels((32, 32, 32)),
                                              np.diag([8.0, 8.0, 8.0, 1.0])))
    panel = window.generate_panel
    with running_server(tmp_path / "server-jobs", model_dirs=[tiny_model_dir]) as (url, store):
        choose_server(qtbot, window, url, token_path)
        panel.set_model(str(tiny_model_dir))
        panel.steps.setValue(500)
        qtbot.mouseClick(panel.generate_button, QtCore.Qt.LeftButton)
        qtbot.waitUntil(lambda: "Sampling" in panel.stage_label.text(), timeout=JOB_TIMEOUT_MS)
        (job_id,) = list(store.states)
        assert store.get(job_id).status == "running"
        with qtbot.waitSignal(window.jobFinished, timeout=30_000) as finished:
            qtbot.mouseClick(panel.cancel_button, QtCore.Qt.LeftButton)
        assert finished.args == ["cancelled"]
        state = store.get(job_id)
        assert state.status == "cancelled" and state.result_files == [] and not store.processes
    assert not window.runs_dir.exists() or list(window.runs_dir.iterdir()) == []
    assert window.history.entries == [] and window.last_error is None
    assert panel.generate_button.isEnabled() and panel.stage_label.text() == "Cancelled"


def test_wrong_token_shows_a_dialog_and_the_app_stays_usable(window, qtbot, tmp_path, tiny_model_dir):
    wrong = tmp_path / "wrong.token"
    wrong.write_text("this-is-not-the-servers-token")
    mask = write_nifti(tmp_path / "mask32.nii.gz", torso_labels((32, 32, 32)), np.diag([8.0, 8.0, 8.0, 1.0]))
    assert window.load_label_file(mask)
    panel = window.generate_panel
    with running_server(tmp_path / "server-jobs", model_dirs=[tiny_model_dir]) as (url, store):
        choose_server(qtbot, window, url, wrong)
        qtbot.mouseClick(panel.test_connection_button, QtCore.Qt.LeftButton)
        assert window.last_error == ("the MAISI server refused the access token", "check the token file you chose")
        assert window.error_dialog.isVisible()
        assert panel.connection_label.text() == "Not connected: the MAISI server refused the access token"
        window.error_dialog.close()
        window.last_error = None

        panel.set_model(str(tiny_model_dir))
        panel.steps.setValue(2)
        qtbot.mouseClick(panel.generate_button, QtCore.Qt.LeftButton)
        assert window.last_error == ("the MAISI server refused the access token", "check the token file you chose")
        assert window.error_dialog.isVisible() and "refused the access token" in window.error_dialog.text()
        assert not window.jobs.is_running() and store.states == {}
    assert not window.runs_dir.exists() or list(window.runs_dir.iterdir()) == []  # the run folder is gone
    assert panel.generate_button.isEnabled() and not panel.cancel_button.isEnabled()
    window.error_dialog.close()
    # Still usable: another file opens, and an unreadable token file is one clear dialog, not a traceback.
    assert window.load_label_file(mask)
    type_into(qtbot, panel.token_file, str(tmp_path / "missing.token"))
    assert not window.start_generate()
    message, hint = window.last_error
    assert message == f"cannot read the token file {tmp_path / 'missing.token'} (No such file or directory)"
    assert "--token-file" in hint


def test_compute_choice_is_kept_in_the_settings_file_without_the_token(qtbot, tmp_path):
    token_path = tmp_path / "maisi.token"
    token_path.write_text(TOKEN)
    first = MainWindow(runs_dir=tmp_path / "runs", settings=settings_file(tmp_path))
    qtbot.addWidget(first)
    choose_server(qtbot, first, "http://gpu-server:8765", token_path)
    expected = ExecutionSettings("server", "http://gpu-server:8765", str(token_path))
    assert first.generate_panel.execution_settings() == expected
    assert read_execution_settings(settings_file(tmp_path)) == expected
    stored = (tmp_path / "maisi-desktop.ini").read_text()
    assert "gpu-server" in stored and TOKEN not in stored
    first.close()
    second = MainWindow(runs_dir=tmp_path / "runs", settings=settings_file(tmp_path))
    qtbot.addWidget(second)
    panel = second.generate_panel
    assert panel.run_on_combo.currentText() == "Server" and panel.server_url.text() == "http://gpu-server:8765"
    assert panel.token_file.text() == str(token_path) and panel.test_connection_button.isEnabled()
    second.close()
