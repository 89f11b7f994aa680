"""The label legend: MAISI name, colour and voxel count of each label present, with a visibility box.

Unticking a label hides it in the slice overlays and the 3D view; double-clicking one makes it the
brush label; the slider under the list sets the opacity of the selected label alone.
"""

from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets

from MAISIEngine import labels as maisi_labels

from MAISIDesktop.colours import colour_of

ID_ROLE = QtCore.Qt.UserRole + 1


def colour_icon(label_id: int, size: int = 14) -> QtGui.QIcon:
    pixmap = QtGui.QPixmap(size, size)
    pixmap.fill(QtGui.QColor(*colour_of(label_id)))
    return QtGui.QIcon(pixmap)


class LegendPanel(QtWidgets.QWidget):
    hiddenChanged = QtCore.pyqtSignal(object)  # frozenset of hidden ids
    labelChosen = QtCore.pyqtSignal(int)
    opacityChanged = QtCore.pyqtSignal(int, float)  # label id, 0..1

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setObjectName("labelLegend")
        self.tree.setHeaderLabels(["Label", "Id", "Voxels", "Opacity"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setSortingEnabled(False)
        self.tree.header().setSectionResizeMode(0, QtWidgets.QHeaderView.Stretch)
        self.tree.header().setStretchLastSection(False)
        self.tree.itemChanged.connect(self._item_changed)
        self.tree.itemDoubleClicked.connect(lambda item, _col: self.labelChosen.emit(int(item.data(0, ID_ROLE))))
        self.tree.currentItemChanged.connect(lambda _item, _previous: self._show_selected_opacity())
        self.opacity_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.opacity_slider.setObjectName("labelOpacity")
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(100)
        self.opacity_slider.setEnabled(False)
        self.opacity_slider.setToolTip("Opacity of the selected label (the toolbar's Overlay slider scales all labels)")
        self.opacity_slider.valueChanged.connect(self._opacity_moved)
        opacity_row = QtWidgets.QHBoxLayout()
        opacity_row.addWidget(QtWidgets.QLabel("Selected label opacity"))
        opacity_row.addWidget(self.opacity_slider, 1)
        show_all = QtWidgets.QPushButton("Show all")
        hide_all = QtWidgets.QPushButton("Hide all")
        show_all.clicked.connect(lambda: self.set_all_visible(True))
        hide_all.clicked.connect(lambda: self.set_all_visible(False))
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(show_all)
        buttons.addWidget(hide_all)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree, 1)
        layout.addLayout(opacity_row)
        layout.addLayout(buttons)
        self.opacities: dict[int, float] = {}
        self._hidden: set[int] = set()
        self._items: dict[int, QtWidgets.QTreeWidgetItem] = {}

    @property
    def hidden(self) -> frozenset[int]:
        return frozenset(self._hidden)

    def set_counts(self, counts: dict[int, int]) -> None:
        """Show the labels present (background left out) with their voxel counts, keeping visibility."""
        self.tree.blockSignals(True)
        present = sorted(i for i, n in counts.items() if i != 0 and n > 0)
        for label_id in list(self._items):
            if label_id not in present:
                self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(self._items.pop(label_id)))
        for position, label_id in enumerate(present):
            item = self._items.get(label_id)
            if item is None:
                item = QtWidgets.QTreeWidgetItem()
                item.setData(0, ID_ROLE, label_id)
                item.setText(0, maisi_labels.name_of(label_id))
                item.setIcon(0, colour_icon(label_id))
                item.setText(1, str(label_id))
                item.setFlags(item.flags() | QtCore.Qt.ItemIsUserCheckable)
                item.setCheckState(0, QtCore.Qt.Unchecked if label_id in self._hidden else QtCore.Qt.Checked)
                self.tree.insertTopLevelItem(position, item)
                self._items[label_id] = item
            item.setText(2, f"{counts[label_id]:,}")
            item.setText(3, f"{round(self.opacities.get(label_id, 1.0) * 100)} %")
        for column in (1, 2, 3):
            self.tree.resizeColumnToContents(column)
        self.tree.blockSignals(False)

    def selected_label(self) -> int | None:
        item = self.tree.currentItem()
        return None if item is None else int(item.data(0, ID_ROLE))

    def select(self, label_id: int) -> None:
        item = self._items.get(int(label_id))
        if item is not None:
            self.tree.setCurrentItem(item)

    def set_opacity(self, label_id: int, opacity: float) -> None:
        """One label's opacity (0..1) in the overlays, on top of the overall overlay opacity."""
        label_id, opacity = int(label_id), float(min(1.0, max(0.0, opacity)))
        if opacity >= 1.0:
            self.opacities.pop(label_id, None)
        else:
            self.opacities[label_id] = opacity
        item = self._items.get(label_id)
        if item is not None:
            item.setText(3, f"{round(opacity * 100)} %")
        if self.selected_label() == label_id:
            self._show_selected_opacity()
        self.opacityChanged.emit(label_id, opacity)

    def _show_selected_opacity(self) -> None:
        label_id = self.selected_label()
        self.opacity_slider.blockSignals(True)
        self.opacity_slider.setEnabled(label_id is not None)
        self.opacity_slider.setValue(round(self.opacities.get(label_id, 1.0) * 100) if label_id is not None else 100)
        self.opacity_slider.blockSignals(False)

    def _opacity_moved(self, value: int) -> None:
        label_id = self.selected_label()
        if label_id is not None:
            self.set_opacity(label_id, value / 100.0)

    def item_of(self, label_id: int) -> QtWidgets.QTreeWidgetItem | None:
        return self._items.get(int(label_id))

    def set_visible(self, label_id: int, visible: bool) -> None:
        item = self._items.get(int(label_id))
        if item is not None:
            item.setCheckState(0, QtCore.Qt.Checked if visible else QtCore.Qt.Unchecked)
        else:
            (self._hidden.discard if visible else self._hidden.add)(int(label_id))
            self.hiddenChanged.emit(self.hidden)

    def set_all_visible(self, visible: bool) -> None:
        self.tree.blockSignals(True)
        for label_id, item in self._items.items():
            item.setCheckState(0, QtCore.Qt.Checked if visible else QtCore.Qt.Unchecked)
        self.tree.blockSignals(False)
        self._hidden = set() if visible else set(self._items)
        self.hiddenChanged.emit(self.hidden)

    def _item_changed(self, item: QtWidgets.QTreeWidgetItem, column: int) -> None:
        if column != 0:
            return
        label_id = int(item.data(0, ID_ROLE))
        if item.checkState(0) == QtCore.Qt.Checked:
            self._hidden.discard(label_id)
        else:
            self._hidden.add(label_id)
        self.hiddenChanged.emit(self.hidden)
