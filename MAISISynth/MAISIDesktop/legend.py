"""The label legend: MAISI name, colour and voxel count of each label present, with a visibility box.

Unticking a label hides it in the slice overlays and the 3D view; double-clicking one makes it the
brush label.
"""

from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets

from MAISIEngine import labels as maisi_labels

ID_ROLE = QtCore.Qt.UserRole + 1


def colour_icon(label_id: int, size: int = 14) -> QtGui.QIcon:
    pixmap = QtGui.QPixmap(size, size)
    pixmap.fill(QtGui.QColor(*maisi_labels.color_of(label_id)))
    return QtGui.QIcon(pixmap)


class LegendPanel(QtWidgets.QWidget):
    hiddenChanged = QtCore.pyqtSignal(object)  # frozenset of hidden ids
    labelChosen = QtCore.pyqtSignal(int)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setObjectName("labelLegend")
        self.tree.setHeaderLabels(["Label", "Id", "Voxels"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setSortingEnabled(False)
        self.tree.header().setSectionResizeMode(0, QtWidgets.QHeaderView.Stretch)
        self.tree.header().setStretchLastSection(False)
        self.tree.itemChanged.connect(self._item_changed)
        self.tree.itemDoubleClicked.connect(lambda item, _col: self.labelChosen.emit(int(item.data(0, ID_ROLE))))
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
        layout.addLayout(buttons)
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
        self.tree.resizeColumnToContents(1)
        self.tree.resizeColumnToContents(2)
        self.tree.blockSignals(False)

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
