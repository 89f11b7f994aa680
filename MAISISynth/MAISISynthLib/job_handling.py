"""The Slicer widget's job lifecycle: a job starts with its button turned into Cancel, the worker's
events become the progress bar, the status line and the log, and at its end the result (or the engine's
error) is handed to the widget and the job's folder is removed unless the user keeps job files.

A mixin of `MAISISynthWidget` (MAISISynth.py). It uses the widget's `ui`, `logic`, `_parameterNode`
and `_pollTimer`, and calls back `updateGui`, `_onJobResult` and `showEngineError`.
"""

from __future__ import annotations

import time
from pathlib import Path

import slicer

from MAISIEngine.errors import MaisiError

from .jobs import describe_progress
from .mask_request import MASK_JOB

try:
    from slicer.i18n import tr as _
except ImportError:  # slicer-core outside the application has no translations
    def _(text: str) -> str:
        return text


class JobHandlingMixin:
    """One job at a time: `_job` is the running job (a RunningJob or RemoteJob), or None."""

    def _startJob(self, kind: str, job: dict, workdir: Path, button, context: dict | None = None) -> None:
        self._job = self.logic.startJob(job, workdir, self._parameterNode.executionSettings)
        self._jobStarted = time.monotonic()
        self._jobKind, self._jobButton, self._jobContext = kind, button, dict(context or {})
        self._jobWorkdir = workdir
        self._jobButtonText = button.text
        self._jobButton.text = _("Cancel")
        self._jobButton.enabled = True
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Starting...")
        self.ui.logTextEdit.appendPlainText(f"--- {kind} started ({time.strftime('%H:%M:%S')}) in {workdir}")
        self._pollTimer.start()
        self.updateGui()

    def _cancelJob(self) -> None:
        if self._job is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not stop the job."), waitCursor=True):
            self._job.cancel()
        self.ui.statusLabel.text = _("Cancelled")
        self._finishJob()
        self._removeJobFiles()

    def onPollJob(self) -> None:
        job = self._job
        if job is None:
            self._pollTimer.stop()
            return
        ended = not job.is_running()  # asked first: a job seen finished has all its events in this poll
        for event in job.poll():
            kind = event.get("event")
            if kind == "progress":
                self.ui.statusLabel.text = describe_progress(event)
            elif kind == "log":
                self.ui.logTextEdit.appendPlainText(str(event.get("message", "")))
            elif kind in ("error", "cancelled"):
                self.ui.logTextEdit.appendPlainText(describe_progress(event))
        self.ui.progressBar.value = int(round(job.progress_fraction * 1000))
        if not ended or job.returncode is None:
            return
        kind, context = self._jobKind, self._jobContext
        self._finishJob()
        try:
            if job.result is not None and job.returncode == 0:
                self.ui.statusLabel.text = _("Done in {seconds:.0f} s").format(seconds=time.monotonic() - self._jobStarted)
                with slicer.util.tryWithErrorDisplay(_("Could not load the result."), waitCursor=True):
                    self._onJobResult(kind, job.result, context)
            elif job.error is not None:
                self.ui.statusLabel.text = describe_progress(job.error)
                self.showEngineError(job.error, offerDownload=kind != MASK_JOB)
        finally:
            self._removeJobFiles()

    def _finishJob(self) -> None:
        self._pollTimer.stop()
        if self._jobButton is not None:
            self._jobButton.text = self._jobButtonText
        self._job, self._jobButton, self._jobKind, self._jobContext = None, None, "", {}
        self.updateGui()

    def _removeJobFiles(self) -> None:
        """The job's folder goes once its results are in the scene, unless the user keeps job files."""
        workdir, self._jobWorkdir = self._jobWorkdir, None
        if workdir is None:
            return
        if self._parameterNode is not None and self._parameterNode.keepJobFiles:
            self.ui.logTextEdit.appendPlainText(_("Job files kept in {folder}").format(folder=workdir))
            return
        self.logic.removeWorkDirectory(workdir)

    def _startJobOrExplain(self, kind: str, job: dict, workdir: Path, button, extra: dict | None = None) -> None:
        """Start a job; a refusal (no interpreter, server unreachable) is shown in a dialog, its folder removed."""
        try:
            self._startJob(kind, job, workdir, button, extra)
        except MaisiError as exc:
            self.logic.removeWorkDirectory(workdir)
            self.showEngineError({"message": exc.message, "hint": exc.hint})

