"""The report window: one tab per report (a batch's own, 2.5D FID, VAE reconstruction, quality check), each
a few summary lines and its figures as tables. It shows what `MAISISynthLib.evaluation_report` read from
JSON; it never computes a figure itself (so the app needs no torch to show one).
"""

from __future__ import annotations

import re

from PyQt5 import QtCore, QtWidgets

from MAISISynthLib.evaluation_report import ReportTable, ReportView

FIGURE = re.compile(r"^[-+]?[0-9.]")
"""Cells that hold figures (beyond the first column) are right-aligned, like the engine's printed tables."""


def table_widget(table: ReportTable, kind: str) -> QtWidgets.QTableWidget:
    widget = QtWidgets.QTableWidget(len(table.rows), len(table.headers))
    widget.setObjectName(f"reportTable_{kind}_{table.key}")
    widget.setHorizontalHeaderLabels(table.headers)
    widget.verticalHeader().hide()
    widget.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
    widget.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
    for row, cells in enumerate(table.rows):
        for column, text in enumerate(cells):
            item = QtWidgets.QTableWidgetItem(text)
            if column > 0 and FIGURE.match(text):
                item.setTextAlignment(int(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter))
            widget.setItem(row, column, item)
    widget.resizeColumnsToContents()
    widget.horizontalHeader().setStretchLastSection(True)
    return widget


def report_page(view: ReportView) -> QtWidgets.QWidget:
    page = QtWidgets.QWidget()
    page.setObjectName(f"reportPage_{view.kind}")
    layout = QtWidgets.QVBoxLayout(page)
    summary = QtWidgets.QLabel("\n".join(view.summary))
    summary.setObjectName(f"reportSummary_{view.kind}")
    summary.setWordWrap(True)
    summary.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
    layout.addWidget(summary)
    for table in view.tables:
        layout.addWidget(QtWidgets.QLabel(f"<b>{table.title}</b>"))
        layout.addWidget(table_widget(table, view.kind), max(1, len(table.rows)))
    source = QtWidgets.QLabel(view.path)
    source.setObjectName(f"reportSource_{view.kind}")
    source.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
    layout.addWidget(source)
    return page


class ReportDialog(QtWidgets.QDialog):
    """Non-modal: the views stay usable while a report is open beside them."""

    def __init__(self, views: list[ReportView], title: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("reportDialog")
        self.setWindowTitle(title)
        self.views = views
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setObjectName("reportTabs")
        for view in views:
            self.tabs.addTab(report_page(view), view.title)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(buttons)
        self.resize(780, 640)

    def table(self, kind: str, key: str) -> QtWidgets.QTableWidget:
        """The table widget showing `key` of the report of `kind` (for tests and scripting)."""
        found = self.findChild(QtWidgets.QTableWidget, f"reportTable_{kind}_{key}")
        if found is None:
            raise KeyError(f"no {key} table of a {kind} report in this dialog")
        return found

    def cells(self, kind: str, key: str) -> list[list[str]]:
        widget = self.table(kind, key)
        return [[widget.item(r, c).text() for c in range(widget.columnCount())] for r in range(widget.rowCount())]
