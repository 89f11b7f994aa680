"""Follow one worker job from the Qt event loop: a timer polls it, signals report what happened.

The worker is a separate process (`MAISISynthLib.jobs`); polling is non-blocking, so the window stays
responsive however long sampling takes, and a crash of the worker is an error event, not a crash of
the app.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PyQt5 import QtCore, QtWidgets

from MAISISynthLib.jobs import JobRunner, RunningJob, describe_progress

POLL_INTERVAL_MS = 50


class JobController(QtCore.QObject):
    progressed = QtCore.pyqtSignal(float, str)  # fraction 0..1, "Sampling: step 3 of 20, ETA 4 s"
    logged = QtCore.pyqtSignal(str)
    succeeded = QtCore.pyqtSignal(object)  # the result event
    failed = QtCore.pyqtSignal(object)  # the error event (message, hint, maybe crashed/stderr_tail)
    cancelled = QtCore.pyqtSignal()
    finished = QtCore.pyqtSignal()

    def __init__(self, runner: JobRunner | None = None, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner or JobRunner()
        self.job: RunningJob | None = None
        self.run_dir: Path | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.poll)

    def is_running(self) -> bool:
        return self.job is not None and self.job.returncode is None

    def start(self, job: dict[str, Any], run_dir: Path) -> RunningJob:
        """Start the worker on `job`; `run_dir` holds its job file and inputs (removed on Cancel)."""
        if self.is_running():
            raise RuntimeError("a job is already running")
        self.run_dir = Path(run_dir)
        self.job = self.runner.start(job, self.run_dir)
        self.progressed.emit(0.0, "Starting the worker")
        self._timer.start()
        return self.job

    def poll(self) -> None:
        job = self.job
        if job is None:
            self._timer.stop()
            return
        for event in job.poll():
            kind = event.get("event")
            if kind == "progress":
                self.progressed.emit(job.progress_fraction, describe_progress(event))
            elif kind == "log" and event.get("message"):
                self.logged.emit(str(event["message"]))
        if job.returncode is None:
            return
        self._timer.stop()
        if job.cancelled:
            self.cancelled.emit()
        elif job.returncode == 0 and job.result is not None:
            self.progressed.emit(1.0, describe_progress(job.result))
            self.succeeded.emit(job.result)
        else:
            self.failed.emit(job.error or {"message": f"the job stopped with exit code {job.returncode}", "hint": ""})
        self.finished.emit()

    def cancel(self) -> None:
        """Stop the worker and remove everything the run wrote (job file, inputs, partial outputs)."""
        job = self.job
        if job is None or job.returncode is not None:
            return
        QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.WaitCursor)
        try:
            job.cancel()
        finally:
            QtWidgets.QApplication.restoreOverrideCursor()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.poll()
