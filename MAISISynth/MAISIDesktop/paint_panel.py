"""Brush, eraser and tumor tools: which label, how big, and in what shape."""

from __future__ import annotations

from PyQt5 import QtCore, QtWidgets

from MAISIEngine import labels as maisi_labels
from MAISIDesktop.legend import colour_icon

TOOL_TITLES = {"navigate": "Navigate", "brush": "Brush", "eraser": "Eraser", "tumor": "Place tumor"}


class PaintPanel(QtWidgets.QWidget):
    toolChanged = QtCore.pyqtSignal(str)
    radiusChanged = QtCore.pyqtSignal(float)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.tool_buttons: dict[str, QtWidgets.QToolButton] = {}
        group = QtWidgets.QButtonGroup(self)
        group.setExclusive(True)
        tools = QtWidgets.QHBoxLayout()
        for tool, title in TOOL_TITLES.items():
            button = QtWidgets.QToolButton()
            button.setText(title)
            button.setCheckable(True)
            button.setObjectName(f"tool_{tool}")
            button.clicked.connect(lambda _checked, t=tool: self.set_tool(t))
            group.addButton(button)
            tools.addWidget(button)
            self.tool_buttons[tool] = button
        self.tool_buttons["navigate"].setChecked(True)
        self.tool = "navigate"

        self.label_combo = QtWidgets.QComboBox()
        self.label_combo.setObjectName("paintLabel")
        self.label_combo.setMaxVisibleItems(25)
        for name, label_id in maisi_labels.TUMOR_TYPES.items():
            self.label_combo.addItem(colour_icon(label_id), f"{maisi_labels.name_of(label_id)} ({label_id})", label_id)
        self.label_combo.insertSeparator(self.label_combo.count())
        for label_id in sorted(maisi_labels.valid_ids()):
            if label_id == 0 or label_id in maisi_labels.TUMOR_TYPES.values():
                continue
            self.label_combo.addItem(colour_icon(label_id), f"{maisi_labels.name_of(label_id)} ({label_id})", label_id)

        self.radius = QtWidgets.QDoubleSpinBox()
        self.radius.setObjectName("brushRadius")
        self.radius.setRange(0.5, 100.0)
        self.radius.setSingleStep(0.5)
        self.radius.setValue(5.0)
        self.radius.setSuffix(" mm")
        self.radius.valueChanged.connect(self.radiusChanged.emit)
        self.shape_combo = QtWidgets.QComboBox()
        self.shape_combo.addItem("3D sphere", "sphere")
        self.shape_combo.addItem("2D disk", "disk")
        self.keep_in_host = QtWidgets.QCheckBox("Keep tumors inside their host organ")
        self.keep_in_host.setChecked(True)
        self.erase_selected_only = QtWidgets.QCheckBox("Eraser removes only the chosen label")
        self.tumor_diameter = QtWidgets.QDoubleSpinBox()
        self.tumor_diameter.setObjectName("tumorDiameter")
        self.tumor_diameter.setRange(2.0, 150.0)
        self.tumor_diameter.setValue(20.0)
        self.tumor_diameter.setSuffix(" mm")
        self.undo_button = QtWidgets.QPushButton("Undo")
        self.redo_button = QtWidgets.QPushButton("Redo")
        self.undo_button.setEnabled(False)
        self.redo_button.setEnabled(False)

        form = QtWidgets.QFormLayout()
        form.addRow("Label", self.label_combo)
        form.addRow("Brush radius", self.radius)
        form.addRow("Brush shape", self.shape_combo)
        form.addRow("Tumor diameter", self.tumor_diameter)
        undo_row = QtWidgets.QHBoxLayout()
        undo_row.addWidget(self.undo_button)
        undo_row.addWidget(self.redo_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(tools)
        layout.addLayout(form)
        layout.addWidget(self.keep_in_host)
        layout.addWidget(self.erase_selected_only)
        layout.addLayout(undo_row)

    def set_tool(self, tool: str) -> None:
        self.tool = tool
        self.tool_buttons[tool].setChecked(True)
        self.toolChanged.emit(tool)

    @property
    def label(self) -> int:
        return int(self.label_combo.currentData())

    def set_label(self, label_id: int) -> None:
        index = self.label_combo.findData(int(label_id))
        if index >= 0:
            self.label_combo.setCurrentIndex(index)

    @property
    def brush_shape(self) -> str:
        return str(self.shape_combo.currentData())
