"""The list of runs of this app, each with its provenance, reloadable with a double-click.

A finished run keeps its folder (job, inputs, outputs) and a `result.json` with the worker's result
event; the list is rebuilt from those folders when the app starts, so past runs stay at hand.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PyQt5 import QtCore, QtWidgets

from MAISIEngine.io.atomic import write_text_atomic

RESULT_FILE = "result.json"


@dataclass
class HistoryEntry:
    kind: str
    result: dict[str, Any]
    job: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    run_dir: str | None = None
    finished_at: float = field(default_factory=time.time)

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.result.get("provenance_data") or {})

    @property
    def title(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.finished_at))
        model = self.job.get("model", "")
        model = Path(model).name if "/" in str(model) else model
        seed = self.job.get("seed")
        shape = self.provenance.get("size") or self.provenance.get("output_size") or self.job.get("size")
        parts = [stamp, self.kind, str(model)]
        if shape:
            parts.append("x".join(str(v) for v in shape))
        if seed is not None:
            parts.append(f"seed {seed}")
        if self.duration_s is not None:
            parts.append(f"{self.duration_s:.0f} s")
        return "  ".join(parts)

    def save(self) -> None:
        """Keep the entry beside the run's outputs, for the next start of the app."""
        if self.run_dir:
            data = {"kind": self.kind, "result": self.result, "job": self.job,
                    "duration_s": self.duration_s, "finished_at": self.finished_at}
            write_text_atomic(Path(self.run_dir) / RESULT_FILE, json.dumps(data, indent=2, default=str))


def read_history(runs_dir: Path) -> list[HistoryEntry]:
    """Entries of past runs whose outputs are still on disk, oldest first."""
    entries = []
    for path in sorted(Path(runs_dir).glob(f"*/{RESULT_FILE}")):
        try:
            data = json.loads(path.read_text())
            entry = HistoryEntry(kind=str(data["kind"]), result=dict(data["result"]), job=dict(data.get("job") or {}),
                                 duration_s=data.get("duration_s"), run_dir=str(path.parent),
                                 finished_at=float(data.get("finished_at", path.stat().st_mtime)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if entry.result.get("image") and Path(entry.result["image"]).is_file():
            entries.append(entry)
    return sorted(entries, key=lambda e: e.finished_at)


class HistoryPanel(QtWidgets.QWidget):
    openRequested = QtCore.pyqtSignal(object)  # HistoryEntry

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QtWidgets.QListWidget()
        self.list.setObjectName("historyList")
        self.list.currentRowChanged.connect(self._show_provenance)
        self.list.itemDoubleClicked.connect(lambda _item: self._open_current())
        self.provenance = QtWidgets.QPlainTextEdit()
        self.provenance.setObjectName("provenanceText")
        self.provenance.setReadOnly(True)
        self.provenance.setMaximumBlockCount(2000)
        open_button = QtWidgets.QPushButton("Open in views")
        open_button.clicked.connect(self._open_current)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list, 2)
        layout.addWidget(open_button)
        layout.addWidget(self.provenance, 3)
        self.entries: list[HistoryEntry] = []

    def add_entry(self, entry: HistoryEntry) -> None:
        self.entries.append(entry)
        item = QtWidgets.QListWidgetItem(entry.title)
        item.setToolTip(entry.result.get("output_dir") or entry.result.get("image") or "")
        self.list.addItem(item)
        self.list.setCurrentRow(self.list.count() - 1)

    def _show_provenance(self, row: int) -> None:
        if 0 <= row < len(self.entries):
            entry = self.entries[row]
            self.provenance.setPlainText(json.dumps(entry.provenance or entry.result, indent=2, default=str))
        else:
            self.provenance.clear()

    def _open_current(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.entries):
            self.openRequested.emit(self.entries[row])
