"""File operations of the main window: open, save, export, screenshot, and the questions before any of
them would lose something (unsaved edits, a running job, files already on disk).

Written as a mixin of `MainWindow` so the window class keeps to layout and views; everything here
reads `self.document`, `self.jobs` and reports problems through `self.report_error`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5 import QtGui, QtWidgets

from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import atomic_path, write_text_atomic
from MAISIEngine.io.nifti import write_volume

from MAISIDesktop import loading
from MAISIDesktop.dialogs import PhantomDialog, show_info

Button = QtWidgets.QMessageBox.StandardButton


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileActionsMixin:
    ask_before_discarding = True
    """Off only when a test ends and its window is closed by the test framework."""

    # -- questions --------------------------------------------------------------------------------
    def _question(self, name: str, text: str, informative: str, buttons, default
                  ) -> tuple[QtWidgets.QMessageBox, int]:
        """A modal question (its object name lets tests find it); returns the box and the button pressed."""
        box = QtWidgets.QMessageBox(self)
        box.setObjectName(name)
        box.setIcon(QtWidgets.QMessageBox.Warning)
        box.setWindowTitle("MAISI Desktop")
        box.setText(text)
        box.setInformativeText(informative)
        box.setStandardButtons(buttons)
        box.setDefaultButton(default)
        return box, box.exec_()

    def confirm_discard(self, doing: str) -> bool:
        """Before `doing` replaces the document: Save / Discard / Cancel when it holds unsaved edits.

        Returns True when it is fine to go on (saved, or the user chose to discard).
        """
        document = self.document
        if not self.ask_before_discarding or document is None or not document.modified:
            return True
        box, answer = self._question(
            "unsavedDialog", f"The label map \"{document.study.name}\" has edits that are not saved.",
            f"Save them before {doing}?", Button.Save | Button.Discard | Button.Cancel, Button.Save)
        if answer == Button.Save:
            return self.save_labels()
        return answer == Button.Discard

    def confirm_stop_job(self, doing: str) -> bool:
        """Before `doing` would end a running generation: stop it, or Cancel (the run goes on)."""
        if not self.ask_before_discarding or not self.jobs.is_running():
            return True
        what = {"inpaint": "An inpainting run", "download": "A weights download",
                "phantom": "A template"}.get(self._job_kind, "A generation")
        box = QtWidgets.QMessageBox(self)
        box.setObjectName("runningJobDialog")
        box.setIcon(QtWidgets.QMessageBox.Warning)
        box.setWindowTitle("MAISI Desktop")
        box.setText(f"{what} is still running.")
        box.setInformativeText(f"{doing[:1].upper() + doing[1:]} stops it and its result is lost.")
        box.setStandardButtons(Button.Discard | Button.Cancel)
        box.button(Button.Discard).setText("Stop the run")
        box.setDefaultButton(Button.Cancel)
        if box.exec_() != Button.Discard:
            return False
        self.jobs.cancel()
        return True

    # -- open -------------------------------------------------------------------------------------
    def load_label_file(self, path: str | Path) -> bool:
        if not self.confirm_discard("opening another file"):
            return False
        study = self._guarded(loading.load_label_map, path)
        if study is None:
            return False
        self.set_study(study)
        return True

    def load_ct_file(self, ct_path: str | Path, labels_path: str | Path | None = None) -> bool:
        if not self.confirm_discard("opening another file"):
            return False
        study = self._guarded(loading.load_ct, ct_path, labels_path)
        if study is None:
            return False
        self.set_study(study)
        return True

    def ask_open_labels(self) -> None:
        if not self.confirm_discard("opening another file"):
            return
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open MAISI label map", "", loading.FILE_FILTER)
        if path:
            self._discard_checked(self.load_label_file, path)

    def ask_open_ct(self) -> None:
        if not self.confirm_discard("opening another file"):
            return
        ct, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open CT", "", loading.FILE_FILTER)
        if not ct:
            return
        labels, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open its label map (Cancel for none)", str(Path(ct).parent), loading.FILE_FILTER)
        self._discard_checked(self.load_ct_file, ct, labels or None)

    def ask_new_phantom(self) -> None:
        if not self.confirm_discard("starting from a template"):
            return
        dialog = PhantomDialog(self)
        if dialog.exec_() == QtWidgets.QDialog.Accepted:
            self._discard_checked(self.new_phantom, dialog.settings())

    def _discard_checked(self, action, *args) -> Any:
        """Run an action after the user already answered the unsaved-edits question."""
        asked, self.ask_before_discarding = self.ask_before_discarding, False
        try:
            return action(*args)
        finally:
            self.ask_before_discarding = asked

    # -- save -------------------------------------------------------------------------------------
    def save_labels(self) -> bool:
        """Save the label map where it came from (or was last saved); Save As when it has no file."""
        document = self.document
        if document is None:
            self.report_error("there is no label map to save", "open one or start from a template first")
            return False
        if document.save_path is None:
            return self.save_labels_as()
        return self.save_labels_to(document.save_path) is not None

    def save_labels_as(self) -> bool:
        document = self.document
        if document is None:
            self.report_error("there is no label map to save", "open one or start from a template first")
            return False
        start = document.save_path or Path.home() / f"{document.suggested_label_name()}.nii.gz"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save label map as", str(start),
                                                        "NIfTI (*.nii.gz *.nii)")
        return bool(path) and self.save_labels_to(path) is not None

    def save_labels_to(self, path: str | Path) -> Path | None:
        try:
            saved = self.document.save_labels(path)
        except OSError as exc:
            self.report_error(f"cannot write {path} ({exc.strerror or exc})", "choose a writable folder")
            return None
        self.statusBar().showMessage(f"Saved the label map to {saved}", 6000)
        self._sync_title()
        return saved

    # -- export -----------------------------------------------------------------------------------
    def export_targets(self, directory: str | Path) -> list[Path]:
        """The files an NIfTI export into `directory` writes, named after the document."""
        study, directory = self._study_to_export(), Path(directory)
        names = ([f"{study.name}_image.nii.gz"] if study.ct is not None else []) + [
            f"{study.name}_labels.nii.gz", f"{study.name}_provenance.json"]
        return [directory / name for name in names]

    def _study_to_export(self):
        if self.study is None:
            raise MaisiError("there is nothing to export", "open a label map, start from a template or generate first")
        return self.study

    def export_nifti(self, directory: str | Path, overwrite: bool = False) -> list[Path]:
        """Write the labels (and the CT when there is one) as NIfTI, with a provenance JSON beside them.

        Files already there are replaced only with `overwrite`; each file is written atomically.
        """
        study = self._study_to_export()
        targets = self.export_targets(directory)
        existing = [p for p in targets if p.exists()]
        if existing and not overwrite:
            raise MaisiError(f"{', '.join(p.name for p in existing)} already exist in {Path(directory)}",
                             "choose another folder, or confirm replacing them")
        Path(directory).mkdir(parents=True, exist_ok=True)
        paths = []
        if study.ct is not None:
            ct = study.ct
            integral = bool(np.array_equal(ct, np.round(ct))) and ct.min() >= -32768 and ct.max() <= 32767
            paths.append(write_volume(targets[0], ct, study.affine, description="CT from MAISI Desktop",
                                      dtype=np.int16 if integral else np.float32))
        paths.append(write_volume(targets[-2], study.labels, study.affine,
                                  description="MAISI labels from MAISI Desktop", dtype=np.uint8))
        write_text_atomic(targets[-1], json.dumps(self.provenance_record(paths), indent=2, default=str))
        paths.append(targets[-1])
        return paths

    def provenance_record(self, files: list[Path]) -> dict[str, Any]:
        """What the exported files are and where they came from (the run's provenance when there is one)."""
        study = self.study
        document = self.document
        return {
            "synthetic": study.ct is not None and bool(study.provenance),
            "note": "Made with MAISI Desktop. A generated CT is SYNTHETIC, not a patient image.",
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "name": study.name,
            "sources": dict(study.sources),
            "labels_edited_since_loading": bool(document is not None and document.undo_stack.can_undo()),
            "grid": {"shape": list(study.shape), "spacing_mm": list(study.spacing),
                     "affine": np.asarray(study.affine).round(6).tolist()},
            "files": {p.name: {"sha256": _sha256(p)} for p in files},
            "run": study.provenance or None,
        }

    def export_nifti_into(self, directory: str | Path) -> list[Path] | None:
        """Export with a question first when files of the same names are already there."""
        try:
            existing = [p for p in self.export_targets(directory) if p.exists()]
        except MaisiError as exc:
            self.report_error(exc.message, exc.hint)
            return None
        if existing:
            _box, answer = self._question(
                "overwriteDialog", f"{len(existing)} file(s) of this export already exist in {directory}.",
                "Replace them?\n" + "\n".join(p.name for p in existing), Button.Yes | Button.No, Button.No)
            if answer != Button.Yes:
                self.statusBar().showMessage("Export cancelled: nothing was replaced", 6000)
                return None
        return self._guarded(self.export_nifti, directory, True)

    def ask_export_nifti(self) -> None:
        if self.study is None:
            self.report_error("there is nothing to export", "open a label map, start from a template or generate first")
            return
        directory = QtWidgets.QFileDialog.getExistingDirectory(self, "Export NIfTI into folder")
        if directory:
            paths = self.export_nifti_into(directory)
            if paths:
                show_info(self, "Exported", "\n".join(str(p) for p in paths))

    def export_dicom(self, directory: str | Path) -> Any:
        """CT series + SEG through the engine's DICOM writer, when it is installed."""
        if self.study is None or self.study.ct is None:
            raise MaisiError("DICOM export needs a CT", "generate or open a CT first")
        try:
            from MAISIEngine.io.dicom import export_dicom
        except ImportError:
            raise MaisiError("DICOM export is not available in this installation",
                             "install the DICOM extra: pip install 'maisi-engine[dicom]'") from None
        return export_dicom(self.study.ct, self.study.labels, Path(directory), provenance=self.study.provenance,
                            affine=self.study.affine)

    def ask_export_dicom(self) -> None:
        try:
            import MAISIEngine.io.dicom  # noqa: F401
        except ImportError:
            self.report_error("DICOM export is not available in this installation",
                              "install the DICOM extra: pip install 'maisi-engine[dicom]'")
            return
        if self.study is None or self.study.ct is None:
            self.report_error("DICOM export needs a CT", "generate or open a CT first")
            return
        directory = QtWidgets.QFileDialog.getExistingDirectory(self, "Export DICOM into folder")
        if directory and self.export_dicom_into(directory) is not None:
            show_info(self, "Exported", f"DICOM CT + SEG written to {directory}")

    def export_dicom_into(self, directory: str | Path) -> Any:
        """DICOM export with a question first when the folder already holds files."""
        folder = Path(directory)
        if folder.is_dir() and any(folder.iterdir()):
            _box, answer = self._question("overwriteDialog", f"The folder {folder} is not empty.",
                                          "Write the DICOM series into it anyway? Files of the same names are replaced.",
                                          Button.Yes | Button.No, Button.No)
            if answer != Button.Yes:
                self.statusBar().showMessage("Export cancelled: nothing was written", 6000)
                return None
        return self._guarded(self.export_dicom, folder)

    def save_screenshot(self, path: str | Path) -> Path:
        """The whole window as PNG, read from the screen (VTK views included), written atomically."""
        self.draw_all()
        QtWidgets.QApplication.processEvents()
        screen = self.windowHandle().screen() if self.windowHandle() else QtWidgets.QApplication.primaryScreen()
        pixmap = screen.grabWindow(int(self.winId()))
        path = Path(path)
        with atomic_path(path) as tmp:
            if not pixmap.save(str(tmp), "PNG"):
                raise MaisiError(f"cannot write {path}", "choose a writable folder")
        return path

    def ask_screenshot(self) -> None:
        name = f"{self.study.name}.png" if self.study is not None else "maisi.png"
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save screenshot", name, "PNG (*.png)")
        if path:
            self._guarded(self.save_screenshot, path)

    # -- closing ----------------------------------------------------------------------------------
    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802
        """Quit (Ctrl+Q) and the window's close button both come here: ask before losing anything."""
        if not self.confirm_discard("quitting") or not self.confirm_stop_job("quitting"):
            event.ignore()
            return
        if self.jobs.is_running():
            self.jobs.cancel()
        for view in self.views.values():
            view.close_view()
        self.volume_view.close_view()
        super().closeEvent(event)
