"""A seed box with a Random button beside it (the CT's seed and the generated map's seed)."""

from __future__ import annotations

from PyQt5 import QtWidgets

from MAISISynthLib import params


def seed_row(seed: QtWidgets.QSpinBox) -> QtWidgets.QHBoxLayout:
    """Give `seed` the seed range and a Random button; returns the row holding both."""
    seed.setRange(0, params.MAX_SEED)
    dice = QtWidgets.QToolButton()
    dice.setText("Random")
    dice.clicked.connect(lambda: seed.setValue(params.random_seed()))
    row = QtWidgets.QHBoxLayout()
    row.addWidget(seed, 1)
    row.addWidget(dice)
    return row
