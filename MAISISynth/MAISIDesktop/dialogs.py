"""Dialogs: errors (message + hint, never a traceback) and the phantom template settings.

Error boxes are window-modal but opened without a nested event loop (`open`, not `exec_`), so a
running generation keeps reporting progress while one is on screen.
"""

from __future__ import annotations

from dataclasses import dataclass

from PyQt5 import QtCore, QtWidgets

from MAISIEngine import labels as maisi_labels
from MAISISynthLib.params import TEMPLATE_REGIONS


def show_error(
    parent: QtWidgets.QWidget | None, message: str, hint: str = "", details: str = "", title: str = "MAISI"
) -> QtWidgets.QMessageBox:
    """Show what went wrong and how to fix it; `details` (e.g. a worker's last output) is folded away."""
    box = QtWidgets.QMessageBox(parent)
    box.setObjectName("errorDialog")
    box.setIcon(QtWidgets.QMessageBox.Warning)
    box.setWindowTitle(title)
    text = message[:1].upper() + message[1:]
    box.setText(text if text.endswith(".") else text + ".")
    if hint:
        box.setInformativeText(hint[:1].upper() + hint[1:])
    if details:
        box.setDetailedText(details)
    box.setStandardButtons(QtWidgets.QMessageBox.Ok)
    box.setAttribute(QtCore.Qt.WA_DeleteOnClose)
    box.setWindowModality(QtCore.Qt.WindowModal)
    box.open()
    return box


def show_info(parent: QtWidgets.QWidget | None, title: str, text: str) -> QtWidgets.QMessageBox:
    box = QtWidgets.QMessageBox(parent)
    box.setObjectName("infoDialog")
    box.setIcon(QtWidgets.QMessageBox.Information)
    box.setWindowTitle(title)
    box.setText(text)
    box.setAttribute(QtCore.Qt.WA_DeleteOnClose)
    box.open()
    return box


@dataclass
class PhantomSettings:
    size: tuple[int, int, int] = (128, 128, 128)
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    region: str = "chest-abdomen"
    seed: int = 0
    tumors: tuple[str, ...] = ()


class PhantomDialog(QtWidgets.QDialog):
    """Settings of a procedural torso phantom (the engine's demo anatomy) to start drawing from."""

    def __init__(self, parent: QtWidgets.QWidget | None = None, settings: PhantomSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New from phantom template")
        settings = settings or PhantomSettings()
        self.size_boxes = [QtWidgets.QSpinBox() for _ in range(3)]
        self.spacing_boxes = [QtWidgets.QDoubleSpinBox() for _ in range(3)]
        size_row, spacing_row = QtWidgets.QHBoxLayout(), QtWidgets.QHBoxLayout()
        for box, value in zip(self.size_boxes, settings.size):
            box.setRange(16, 1024)
            box.setSingleStep(16)
            box.setValue(int(value))
            size_row.addWidget(box)
        for box, value in zip(self.spacing_boxes, settings.spacing):
            box.setRange(0.25, 20.0)
            box.setSingleStep(0.25)
            box.setDecimals(2)
            box.setSuffix(" mm")
            box.setValue(float(value))
            spacing_row.addWidget(box)
        self.region = QtWidgets.QComboBox()
        self.region.addItems(TEMPLATE_REGIONS)
        self.region.setCurrentText(settings.region)
        self.seed = QtWidgets.QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(int(settings.seed))
        self.tumor_boxes: dict[str, QtWidgets.QCheckBox] = {}
        tumor_row = QtWidgets.QHBoxLayout()
        for name, label_id in maisi_labels.TUMOR_TYPES.items():
            box = QtWidgets.QCheckBox(name)
            box.setToolTip(maisi_labels.name_of(label_id))
            box.setChecked(name in settings.tumors)
            self.tumor_boxes[name] = box
            tumor_row.addWidget(box)
        form = QtWidgets.QFormLayout()
        form.addRow("Size (voxels)", size_row)
        form.addRow("Spacing", spacing_row)
        form.addRow("Body region", self.region)
        form.addRow("Seed", self.seed)
        form.addRow("Tumors", tumor_row)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Ok | QtWidgets.QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def settings(self) -> PhantomSettings:
        return PhantomSettings(
            size=tuple(b.value() for b in self.size_boxes),  # type: ignore[arg-type]
            spacing=tuple(b.value() for b in self.spacing_boxes),  # type: ignore[arg-type]
            region=self.region.currentText(),
            seed=self.seed.value(),
            tumors=tuple(name for name, box in self.tumor_boxes.items() if box.isChecked()),
        )
