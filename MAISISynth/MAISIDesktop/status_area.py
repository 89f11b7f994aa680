"""The job status strip at the bottom of the window: progress, stage with ETA, elapsed time, Cancel.

It sits in the status bar as a permanent widget, so it stays on screen whatever the window size and
whichever panel is scrolled or hidden (a progress bar inside a scrolled panel ends up below the fold).
"""

from __future__ import annotations

import time

from PyQt5 import QtCore, QtWidgets


class JobStatusArea(QtWidgets.QWidget):
    """Shows the running job; the widgets are the generate panel's, moved here so both stay in step."""

    def __init__(self, progress: QtWidgets.QProgressBar, stage: QtWidgets.QLabel, cancel: QtWidgets.QPushButton,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("jobStatusArea")
        self.progress, self.stage, self.cancel = progress, stage, cancel
        self.elapsed = QtWidgets.QLabel("")
        self.elapsed.setObjectName("elapsedLabel")
        progress.setFixedWidth(180)
        progress.setTextVisible(True)
        stage.setWordWrap(False)
        stage.setMinimumWidth(220)
        stage.setMaximumWidth(420)
        stage.setSizePolicy(QtWidgets.QSizePolicy.Preferred, QtWidgets.QSizePolicy.Preferred)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.setSpacing(6)
        layout.addWidget(stage)
        layout.addWidget(progress)
        layout.addWidget(self.elapsed)
        layout.addWidget(cancel)
        self._started: float | None = None
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._tick)

    def set_running(self, running: bool) -> None:
        self._started = time.monotonic() if running else None
        (self._timer.start if running else self._timer.stop)()
        self._tick()

    def _tick(self) -> None:
        if self._started is None:
            self.elapsed.setText("")
            return
        seconds = int(time.monotonic() - self._started)
        self.elapsed.setText(f"{seconds // 60}:{seconds % 60:02d}")
