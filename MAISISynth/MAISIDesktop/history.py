"""The list of runs of this app, each with its provenance, reloadable with a double-click.

A finished run keeps its folder (job, inputs, outputs) and a `result.json` with the worker's result
event; the list is rebuilt from those folders when the app starts, so past runs stay at hand.
Batch folders and evaluation reports the user opened (File menu) are listed too: they are remembered
in `opened_reports.json` of the runs folder, and a double-click shows the report again.
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
OPENED_REPORTS_FILE = "opened_reports.json"
REPORT_KINDS = ("batch", "evaluation")
"""History kinds that show a report (not a volume): a `maisi batch` folder, a `maisi evaluate` JSON."""


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
    def is_report(self) -> bool:
        return self.kind in REPORT_KINDS

    @property
    def report_path(self) -> str:
        """The batch folder or report file of a report entry."""
        return str(self.result.get("output_dir") or self.result.get("report") or "")

    @property
    def title(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.finished_at))
        if self.is_report:
            what = "batch" if self.kind == "batch" else f"{self.result.get('report_kind', '')} report".strip()
            return "  ".join(p for p in (stamp, what, Path(self.report_path).name, self.result.get("headline", "")) if p)
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


def report_entry(kind: str, path: str | Path, report_kind: str, headline: str,
                 finished_at: float | None = None) -> HistoryEntry:
    """The history entry of an opened batch folder (`kind` "batch") or report file ("evaluation")."""
    key = "output_dir" if kind == "batch" else "report"
    return HistoryEntry(kind=kind, result={key: str(Path(path).resolve()), "report_kind": report_kind,
                                           "headline": headline},
                        finished_at=time.time() if finished_at is None else finished_at)


def read_opened_reports(runs_dir: Path) -> list[HistoryEntry]:
    """Opened batch folders and reports that are still on disk (an unreadable list is treated as empty)."""
    try:
        records = json.loads((Path(runs_dir) / OPENED_REPORTS_FILE).read_text())
        entries = [report_entry(str(r["kind"]), str(r["path"]), str(r.get("report_kind", "")),
                                str(r.get("headline", "")), float(r["opened_at"])) for r in records]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [e for e in entries if e.kind in REPORT_KINDS and Path(e.report_path).exists()]


def remember_opened_report(runs_dir: Path, entry: HistoryEntry) -> None:
    """Add (or move to now) an opened report in the runs folder's list, for the next start of the app."""
    kept = [e for e in read_opened_reports(runs_dir) if e.report_path != entry.report_path] + [entry]
    records = [{"kind": e.kind, "path": e.report_path, "report_kind": e.result.get("report_kind", ""),
                "headline": e.result.get("headline", ""), "opened_at": e.finished_at} for e in kept]
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(runs_dir) / OPENED_REPORTS_FILE, json.dumps(records, indent=2))


def read_history(runs_dir: Path) -> list[HistoryEntry]:
    """Entries of past runs whose outputs are still on disk, and opened reports, oldest first."""
    entries = read_opened_reports(runs_dir)
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
        open_button.setObjectName("historyOpen")
        open_button.clicked.connect(self._open_current)
        self.open_button = open_button
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list, 2)
        layout.addWidget(open_button)
        layout.addWidget(self.provenance, 3)
        self.entries: list[HistoryEntry] = []

    def add_entry(self, entry: HistoryEntry) -> None:
        self.entries.append(entry)
        item = QtWidgets.QListWidgetItem(entry.title)
        item.setToolTip(entry.result.get("output_dir") or entry.result.get("report") or entry.result.get("image") or "")
        self.list.addItem(item)
        self.list.setCurrentRow(self.list.count() - 1)

    def select_report(self, path: str) -> bool:
        """Select the entry of an already listed batch folder or report; False when there is none."""
        for row, entry in enumerate(self.entries):
            if entry.is_report and entry.report_path == path:
                self.list.setCurrentRow(row)
                return True
        return False

    def _show_provenance(self, row: int) -> None:
        if 0 <= row < len(self.entries):
            entry = self.entries[row]
            self.provenance.setPlainText(json.dumps(entry.provenance or entry.result, indent=2, default=str))
            self.open_button.setText("Show report" if entry.is_report else "Open in views")
        else:
            self.provenance.clear()

    def _open_current(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.entries):
            self.openRequested.emit(self.entries[row])
