"""The page shown before anything is open: what to do first, with a button for each way to start."""

from __future__ import annotations

from PyQt5 import QtCore, QtWidgets

CHOICES = (
    ("open_labels", "Open a label map...",
     "A MAISI segmentation (NIfTI or NRRD) to edit and generate a CT from."),
    ("new_template", "Start from a template...",
     "A procedural torso with organs (and tumors if you like) to draw on."),
    ("open_ct", "Open a CT to inpaint...",
     "A CT with its label map: paint a tumor, then Inpaint tumor."),
)


class StartScreen(QtWidgets.QWidget):
    chosen = QtCore.pyqtSignal(str)  # one of the CHOICES keys

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("startScreen")
        title = QtWidgets.QLabel("<h2>MAISI Desktop</h2>"
                                 "<p>Synthetic CT from a label map. Every image it makes is marked SYNTHETIC.</p>"
                                 "<p><b>Start here:</b></p>")
        title.setAlignment(QtCore.Qt.AlignCenter)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(title)
        self.buttons: dict[str, QtWidgets.QPushButton] = {}
        for key, text, help_text in CHOICES:
            button = QtWidgets.QPushButton(text)
            button.setObjectName(f"start_{key}")
            button.setMinimumWidth(260)
            button.clicked.connect(lambda _checked=False, k=key: self.chosen.emit(k))
            note = QtWidgets.QLabel(help_text)
            note.setAlignment(QtCore.Qt.AlignCenter)
            note.setStyleSheet("color: #666;")
            row = QtWidgets.QHBoxLayout()
            row.addStretch(1)
            row.addWidget(button)
            row.addStretch(1)
            layout.addLayout(row)
            layout.addWidget(note)
            self.buttons[key] = button
        hint = QtWidgets.QLabel("Then set the model and size on the right and press Generate. "
                                "Help > Keyboard shortcuts lists the keys.")
        hint.setAlignment(QtCore.Qt.AlignCenter)
        hint.setWordWrap(True)
        layout.addSpacing(12)
        layout.addWidget(hint)
        layout.addStretch(2)
