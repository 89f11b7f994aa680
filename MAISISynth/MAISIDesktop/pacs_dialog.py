"""File > Send to PACS: the shown CT and its labels, exported as DICOM CT + SEG and pushed to a PACS.

Two ways, as `maisi export-dicom` offers them: DICOM C-STORE to `AE@HOST:PORT`, or DICOMweb STOW-RS
to a service root with an optional bearer token read from a file. The export goes to a temporary
folder that is removed after sending, both in a background thread; the PACS's answer for every
instance is listed in the dialog as it comes.
Re-sending the same generation lands in its existing study unless "New study" is ticked. The
destination, URL and token file's path (never the token) are kept in the app's settings under `pacs/`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from PyQt5 import QtCore, QtWidgets

from MAISIEngine.errors import MaisiError
from MAISIDesktop.dialogs import show_error

DICOM_MODE, DICOMWEB_MODE = "DICOM (C-STORE)", "DICOMweb (STOW-RS)"
REMEMBERED = ("mode", "destination", "calling_ae", "url", "token_file")


class PacsDialog(QtWidgets.QDialog):
    """Where to send, a Send button, and one row per instance with the PACS's status."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window_ = window
        self.results: list[Any] = []
        self.setObjectName("pacsDialog")
        self.setWindowTitle("Send to PACS")
        self.mode = QtWidgets.QComboBox()
        self.mode.addItems([DICOM_MODE, DICOMWEB_MODE])
        self.destination = QtWidgets.QLineEdit()
        self.destination.setPlaceholderText("AE@HOST:PORT, e.g. ORTHANC@pacs.example.org:4242")
        self.calling_ae = QtWidgets.QLineEdit("MAISISYNTH")
        self.url = QtWidgets.QLineEdit()
        self.url.setPlaceholderText("https://pacs.example.org/dicom-web")
        self.token_file = QtWidgets.QLineEdit()
        self.token_file.setPlaceholderText("optional: file holding a bearer token")
        browse = QtWidgets.QPushButton("Browse...")
        browse.clicked.connect(self._ask_token_file)
        token_row = QtWidgets.QHBoxLayout()
        token_row.addWidget(self.token_file)
        token_row.addWidget(browse)
        self.new_study = QtWidgets.QCheckBox("New study (default: the generation's own study)")
        self.send_button = QtWidgets.QPushButton("Send")
        self.send_button.setObjectName("pacsSend")
        self.send_button.clicked.connect(self.send)
        self.summary = QtWidgets.QLabel("")
        self.table = QtWidgets.QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["File", "Outcome", "Status"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)

        form = QtWidgets.QFormLayout()
        form.addRow("Protocol", self.mode)
        form.addRow("Destination", self.destination)
        form.addRow("Calling AE title", self.calling_ae)
        form.addRow("DICOMweb URL", self.url)
        form.addRow("Token file", token_row)
        form.addRow("", self.new_study)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.send_button, QtWidgets.QDialogButtonBox.ActionRole)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.mode.currentTextChanged.connect(self._sync_mode)
        self._restore()
        self._sync_mode()
        self.resize(620, 480)

    def _settings(self) -> QtCore.QSettings | None:
        return getattr(self.window_, "settings", None)

    def _restore(self) -> None:
        settings = self._settings()
        if settings is None:
            return
        for key in REMEMBERED:
            value = settings.value(f"pacs/{key}")
            if not value:
                continue
            if key == "mode":
                self.mode.setCurrentText(str(value))
            else:
                getattr(self, key).setText(str(value))

    def _remember(self) -> None:
        settings = self._settings()
        if settings is None:
            return
        for key in REMEMBERED:
            widget = getattr(self, key)
            settings.setValue(f"pacs/{key}", widget.currentText() if key == "mode" else widget.text())
        settings.sync()

    def _sync_mode(self) -> None:
        dicom = self.mode.currentText() == DICOM_MODE
        for widget in (self.destination, self.calling_ae):
            widget.setEnabled(dicom)
        for widget in (self.url, self.token_file):
            widget.setEnabled(not dicom)

    def _ask_token_file(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Bearer token file")
        if path:
            self.token_file.setText(path)

    def send(self) -> None:
        """Check the form, then export and send in a background thread (the window stays responsive).

        Problems found before sending, and any failure of the send itself, become one error dialog.
        """
        try:
            job = self._prepare()
        except MaisiError as exc:
            self._fail(exc.message, exc.hint)
            return
        self.results = []
        self.table.setRowCount(0)
        self.send_button.setEnabled(False)
        self.summary.setText("Sending...")
        self._thread = QtCore.QThread(self)
        self._worker = _SendWorker(job)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.instance.connect(self._add_row)
        self._worker.done.connect(self._done)
        self._worker.failed.connect(self._fail)
        for signal in (self._worker.done, self._worker.failed):
            signal.connect(self._thread.quit)
        self._thread.start()

    def is_sending(self) -> bool:
        return not self.send_button.isEnabled()

    def _prepare(self) -> Callable[[Callable[[Any], None]], list[Any]]:
        """Validate the form now; return the export-and-send job for the worker thread."""
        from MAISIEngine.io.dicom import export_dicom
        from MAISIEngine.io.dicom.send import parse_destination, read_token, send_cstore, send_stow

        study = getattr(self.window_, "study", None)
        if study is None or study.ct is None:
            raise MaisiError("there is no CT to send", "generate or open a CT first")
        dicom = self.mode.currentText() == DICOM_MODE
        destination = parse_destination(self.destination.text()) if dicom else None
        url = self.url.text().strip()
        if not dicom and not url:
            raise MaisiError("no DICOMweb URL was given", "enter the service root, e.g. https://pacs.example.org/dicom-web")
        token = None if dicom else read_token(Path(self.token_file.text()) if self.token_file.text().strip() else None)
        calling_ae = self.calling_ae.text().strip() or "MAISISYNTH"
        # Copies: the user may keep painting while the export runs in the other thread.
        ct, labels = np.array(study.ct), None if study.labels is None else np.array(study.labels)
        affine, provenance, new_study = np.array(study.affine), dict(study.provenance or {}), self.new_study.isChecked()

        def job(progress: Callable[[Any], None]) -> list[Any]:
            with tempfile.TemporaryDirectory(prefix="maisi-pacs-") as folder:
                result = export_dicom(ct, labels, Path(folder) / "dicom", provenance=provenance, affine=affine,
                                      new_study=new_study)
                files = result.ct_files + ([result.seg_file] if result.seg_file else [])
                if destination is not None:
                    return send_cstore(files, destination, calling_ae, progress=progress)
                return send_stow(files, url, token, progress=progress)

        return job

    def _done(self, results: list[Any]) -> None:
        self.results = list(results)
        self.send_button.setEnabled(True)
        self._remember()
        failed = sum(not r.ok for r in self.results)
        self.summary.setText(f"{len(self.results) - failed} of {len(self.results)} instances stored"
                             + (f"; {failed} refused" if failed else ""))

    def _fail(self, message: str, hint: str) -> None:
        self.send_button.setEnabled(True)
        self.summary.setText(f"Not sent: {message}")
        self.error_dialog = show_error(self, message, hint, title="Send to PACS")

    def _add_row(self, item: Any) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        for column, text in enumerate((item.file, item.outcome, item.status)):
            self.table.setItem(row, column, QtWidgets.QTableWidgetItem(text))

    def done(self, code: int) -> None:
        """Closing waits for a send in flight: its thread belongs to this dialog."""
        thread = getattr(self, "_thread", None)
        if thread is not None and thread.isRunning():
            thread.wait()
        super().done(code)


class _SendWorker(QtCore.QObject):
    """Runs one export-and-send job in a QThread and reports through queued signals."""

    instance = QtCore.pyqtSignal(object)
    done = QtCore.pyqtSignal(object)
    failed = QtCore.pyqtSignal(str, str)

    def __init__(self, job: Callable[[Callable[[Any], None]], list[Any]]) -> None:
        super().__init__()
        self.job = job

    def run(self) -> None:
        try:
            results = self.job(self.instance.emit)
        except MaisiError as exc:
            self.failed.emit(exc.message, exc.hint)
        except Exception as exc:  # a network library's own error must not kill the app
            self.failed.emit(f"sending failed ({exc.__class__.__name__}: {exc})", "check the destination and the network")
        else:
            self.done.emit(results)


def open_pacs_dialog(window: Any) -> PacsDialog:
    """The File menu's hook: a non-blocking Send to PACS dialog for the window's study."""
    dialog = PacsDialog(window)
    dialog.setAttribute(QtCore.Qt.WA_DeleteOnClose)
    dialog.show()
    window.pacs_dialog = dialog
    return dialog
