"""Reports in the main window: File > Open evaluation report / Open batch folder, their History entries,
and the report window a double-click on one shows again.

A mixin of `MainWindow` (it uses `self.history`, `self.runs_dir` and `self.report_error`). Opening a
report never touches the document in the views, so nothing unsaved is at stake.
"""

from __future__ import annotations

from pathlib import Path

from PyQt5 import QtWidgets

from MAISIEngine.errors import MaisiError
from MAISISynthLib.evaluation_report import ReportView, read_batch_folder, read_report

from MAISIDesktop.history import HistoryEntry, remember_opened_report, report_entry
from MAISIDesktop.report_dialog import ReportDialog

REPORT_FILTER = "Evaluation reports (*.json);;All files (*)"


class ReportActionsMixin:
    report_dialog: ReportDialog | None = None

    def ask_open_report(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open evaluation report", "", REPORT_FILTER)
        if path:
            self.open_report(path)

    def ask_open_batch(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open batch folder (maisi batch output)")
        if folder:
            self.open_batch_folder(folder)

    def open_report(self, path: str | Path) -> ReportDialog | None:
        """Show a `maisi evaluate ... --json` file (or a batch's report.json) and list it in the History."""
        try:
            view = read_report(path)
        except MaisiError as exc:
            self.report_error(exc.message, exc.hint)
            return None
        kind = "batch" if view.kind == "batch" else "evaluation"
        where = Path(path).resolve().parent if kind == "batch" else Path(path)
        self._remember_report(report_entry(kind, where, view.kind, view.headline))
        return self.show_reports([view], f"{view.title} report: {Path(path).name}")

    def open_batch_folder(self, folder: str | Path) -> ReportDialog | None:
        """Show a `maisi batch` folder's own report and every evaluation report it holds, one tab each."""
        try:
            views = read_batch_folder(folder)
        except MaisiError as exc:
            self.report_error(exc.message, exc.hint)
            return None
        headline = "; ".join(v.headline for v in views)
        self._remember_report(report_entry("batch", folder, ",".join(v.kind for v in views), headline))
        return self.show_reports(views, f"Batch {Path(folder).resolve().name}")

    def open_report_entry(self, entry: HistoryEntry) -> ReportDialog | None:
        """A History entry of a report: read again from disk (it may have been rewritten since)."""
        path = entry.report_path
        if entry.kind == "batch":
            return self.open_batch_folder(path) if Path(path).is_dir() else self.open_report(path)
        return self.open_report(path)

    def show_reports(self, views: list[ReportView], title: str) -> ReportDialog:
        if self.report_dialog is not None:
            self.report_dialog.close()
        dialog = ReportDialog(views, title, self)
        dialog.show()
        self.report_dialog = dialog
        self.statusBar().showMessage(f"{title}: " + "; ".join(v.headline for v in views if v.headline), 8000)
        return dialog

    def _remember_report(self, entry: HistoryEntry) -> None:
        if not self.history.select_report(entry.report_path):
            self.history.add_entry(entry)
        try:
            remember_opened_report(self.runs_dir, entry)
        except OSError:
            pass  # the report is shown; only its place in the next session's History is lost
