"""Follow one worker job from the Qt event loop: a timer polls it, signals report what happened.

The worker is a separate process (`MAISISynthLib.jobs`) or a job on a MAISI server
(`MAISISynthLib.remote`); both have the same API and polling either never blocks, so the window stays
responsive however long sampling takes, and a crash of the worker is an error event, not a crash of
the app.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PyQt5 import QtCore, QtWidgets

from MAISISynthLib.jobs import JobRunner, RunningJob, describe_progress

if TYPE_CHECKING:  # the server client (and requests) loads only when Server mode is used
    from MAISISynthLib.remote import RemoteJob, RemoteJobRunner

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
        self.job: RunningJob | RemoteJob | None = None
        self.run_dir: Path | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.poll)

    def is_running(self) -> bool:
        return self.job is not None and self.job.returncode is None

    def start(self, job: dict[str, Any], run_dir: Path,
              runner: JobRunner | RemoteJobRunner | None = None) -> RunningJob | RemoteJob:
        """Start `job` with `runner` (default: this computer's); `run_dir` holds its job file, inputs and
        (for a server job) the downloaded results, and is removed on Cancel."""
        if self.is_running():
            raise RuntimeError("a job is already running")
        runner = runner or self.runner
        self.run_dir = Path(run_dir)
        self.job = runner.start(job, self.run_dir)
        server = getattr(runner, "url", None)
        self.progressed.emit(0.0, f"Sent to the server {server}" if server else "Starting the worker")
        self._timer.start()
        return self.job

    def poll(self) -> None:
        job = self.job
        if job is None:
            self._timer.stop()
            return
        # Asked before collecting: a job seen finished here has all its events (and result) in this poll.
        ended = not job.is_running()
        for event in job.poll():
            kind = event.get("event")
            if kind == "progress":
                self.progressed.emit(job.progress_fraction, describe_progress(event))
            elif kind == "log" and event.get("message"):
                self.logged.emit(str(event["message"]))
        if not ended or job.returncode is None:
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
        problem = ""
        try:
            job.cancel()
        except OSError as exc:  # a server that cannot be reached any more (requests' errors are OSErrors)
            problem = f"the server could not be told to stop the job ({exc.__class__.__name__})"
        finally:
            QtWidgets.QApplication.restoreOverrideCursor()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if not problem and not job.is_running():
            self.poll()
            return
        # A server that did not confirm the stop (gone, restarted): stop following the job here.
        self._timer.stop()
        self.job = None
        problem = problem or "the server did not confirm that the job stopped"
        self.logged.emit(problem[:1].upper() + problem[1:] + ".")
        self.cancelled.emit()
        self.finished.emit()
