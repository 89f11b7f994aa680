"""Menus, actions and their shortcuts, the view toolbar (window/level, overlay) and the Help menu.

Every shortcut is declared once here, and the Help > Keyboard shortcuts table is built from the same
list, so the table cannot drift from what the keys do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PyQt5 import QtCore, QtGui, QtWidgets

from MAISIDesktop.overlay import CUSTOM_PRESET, DEFAULT_PRESET, WINDOW_PRESETS
from MAISIDesktop.pacs_dialog import open_pacs_dialog

if TYPE_CHECKING:
    from MAISIDesktop.main_window import MainWindow

GUIDE_FILE = Path(__file__).resolve().parents[2] / "docs" / "desktop.md"
"""The user guide: docs/desktop.md of the MAISISynth sources (present in a source checkout)."""


def guide_url() -> QtCore.QUrl | None:
    return QtCore.QUrl.fromLocalFile(str(GUIDE_FILE)) if GUIDE_FILE.is_file() else None


def guide_text() -> str:
    url = guide_url()
    if url is None:
        return "The user guide is docs/desktop.md in the MAISISynth sources."
    return f'The user guide: <a href="{url.toString()}">{GUIDE_FILE}</a>'


def open_guide(win: QtWidgets.QMainWindow) -> None:
    url = guide_url()
    if url is None or not QtGui.QDesktopServices.openUrl(url):
        QtWidgets.QMessageBox.information(win, "User guide", guide_text())

VIEW_SHORTCUTS = (
    ("Mouse wheel, Up / Down", "Next / previous slice (every view follows)"),
    ("Page Up / Page Down", "Ten slices on"),
    ("Left / Right", "Move the cursor one voxel to that side of the screen"),
    ("Left click (Navigate) or Shift+click", "Move the linked cursor there"),
    ("Ctrl + left drag", "Window (left-right) and level (up-down)"),
    ("Right drag / Ctrl + wheel", "Zoom"),
    ("Middle drag", "Pan"),
    ("R in a view", "Reset that view's zoom"),
)
"""Mouse and key gestures of the slice views (they are not menu actions)."""


def add_action(window: QtWidgets.QMainWindow, menu: QtWidgets.QMenu, text: str, slot: Callable[[], object],
               shortcut=None, name: str = "") -> QtWidgets.QAction:
    action = menu.addAction(text)
    action.triggered.connect(lambda _checked=False: slot())
    if shortcut is not None:
        action.setShortcut(QtGui.QKeySequence(shortcut))
        action.setShortcutContext(QtCore.Qt.ApplicationShortcut)
    if name:
        action.setObjectName(name)
    return action


def build_menus(win: "MainWindow") -> None:
    """File, Edit, View and Help menus; the actions that need a study are kept in `win.study_actions`."""
    bar = win.menuBar()
    file_menu = bar.addMenu("&File")
    win.file_menu = file_menu
    add_action(win, file_menu, "&Open label map...", win.ask_open_labels, QtGui.QKeySequence.Open, "openLabels")
    add_action(win, file_menu, "Open &CT (+ labels)...", win.ask_open_ct, "Ctrl+Shift+O", "openCt")
    add_action(win, file_menu, "&New from phantom template...", win.ask_new_phantom, "Ctrl+N", "newTemplate")
    file_menu.addSeparator()
    add_action(win, file_menu, "Open evaluation &report...", win.ask_open_report, name="openReport")
    add_action(win, file_menu, "Open &batch folder...", win.ask_open_batch, name="openBatch")
    file_menu.addSeparator()
    win.save_action = add_action(win, file_menu, "&Save label map", win.save_labels, QtGui.QKeySequence.Save,
                                 "saveLabels")
    win.save_as_action = add_action(win, file_menu, "Save label map &as...", win.save_labels_as, "Ctrl+Shift+S",
                                    "saveLabelsAs")
    file_menu.addSeparator()
    win.export_nifti_action = add_action(win, file_menu, "&Export NIfTI (image + labels + provenance)...",
                                         win.ask_export_nifti, "Ctrl+E", "exportNifti")
    win.dicom_action = add_action(win, file_menu, "Export &DICOM (CT + SEG)...", win.ask_export_dicom,
                                  name="exportDicom")
    win.pacs_action = add_action(win, file_menu, "Send to &PACS (CT + SEG)...", lambda: open_pacs_dialog(win),
                                 name="sendToPacs")
    win.screenshot_action = add_action(win, file_menu, "Save &screenshot...", win.ask_screenshot, name="screenshot")
    win.export_separator = file_menu.addSeparator()
    # Ctrl+Q by name: the platform's standard Quit sequence is empty on some (Windows, some X11 themes).
    add_action(win, file_menu, "&Quit", win.close, "Ctrl+Q", "quit")

    edit_menu = bar.addMenu("&Edit")
    win.undo_action = add_action(win, edit_menu, "&Undo", win.undo, QtGui.QKeySequence.Undo, "undo")
    win.redo_action = add_action(win, edit_menu, "&Redo", win.redo, QtGui.QKeySequence.Redo, "redo")
    edit_menu.addSeparator()
    for tool, key in (("navigate", "N"), ("brush", "B"), ("eraser", "E"), ("tumor", "T")):
        action = add_action(win, edit_menu, f"Tool: {tool}", lambda t=tool: win.paint_panel.set_tool(t), key)
        action.setShortcutContext(QtCore.Qt.WindowShortcut)

    view_menu = bar.addMenu("&View")
    add_action(win, view_menu, "&Reset views", win.reset_views, "Ctrl+0", "resetViews")
    win.crosshair_action = view_menu.addAction("Show &crosshair")
    win.crosshair_action.setCheckable(True)
    win.crosshair_action.setChecked(True)
    win.crosshair_action.toggled.connect(win.set_crosshair_visible)
    win.before_after_action = view_menu.addAction("Show CT &before inpainting")
    win.before_after_action.setObjectName("beforeAfter")
    win.before_after_action.setCheckable(True)
    win.before_after_action.setShortcut(QtGui.QKeySequence("Ctrl+B"))
    win.before_after_action.toggled.connect(win.show_before)

    help_menu = bar.addMenu("&Help")
    add_action(win, help_menu, "&Keyboard shortcuts", win.show_shortcuts, QtGui.QKeySequence.HelpContents,
               "shortcuts")
    add_action(win, help_menu, "User &guide", lambda: open_guide(win), name="guide")
    add_action(win, help_menu, "&About MAISI Desktop", win.show_about, name="about")
    win.study_actions = [win.save_action, win.save_as_action, win.export_nifti_action, win.dicom_action,
                         win.pacs_action, win.screenshot_action]


def shortcut_rows(win: QtWidgets.QMainWindow) -> list[tuple[str, str]]:
    """(keys, what they do) for every menu action with a shortcut, then the view gestures."""
    rows = []
    for menu_action in win.menuBar().actions():
        menu = menu_action.menu()
        for action in menu.actions() if menu else ():
            keys = action.shortcut().toString(QtGui.QKeySequence.NativeText)
            if keys:
                rows.append((keys, action.text().replace("&", "").rstrip(".")))
    return rows + list(VIEW_SHORTCUTS)


def shortcuts_dialog(win: QtWidgets.QMainWindow) -> QtWidgets.QDialog:
    dialog = QtWidgets.QDialog(win)
    dialog.setObjectName("shortcutsDialog")
    dialog.setWindowTitle("Keyboard shortcuts")
    rows = shortcut_rows(win)
    table = QtWidgets.QTableWidget(len(rows), 2)
    table.setObjectName("shortcutsTable")
    table.setHorizontalHeaderLabels(["Keys", "Does"])
    table.verticalHeader().hide()
    table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
    for row, (keys, text) in enumerate(rows):
        table.setItem(row, 0, QtWidgets.QTableWidgetItem(keys))
        table.setItem(row, 1, QtWidgets.QTableWidgetItem(text))
    table.resizeColumnsToContents()
    table.horizontalHeader().setStretchLastSection(True)
    guide = QtWidgets.QLabel(guide_text())
    guide.setOpenExternalLinks(True)
    buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Close)
    buttons.rejected.connect(dialog.reject)
    layout = QtWidgets.QVBoxLayout(dialog)
    layout.addWidget(table)
    layout.addWidget(guide)
    layout.addWidget(buttons)
    dialog.resize(560, 520)
    return dialog


def build_view_toolbar(win: "MainWindow") -> None:
    """Window/level preset and typed values, overall overlay opacity, crosshair and reset."""
    bar = win.addToolBar("View")
    bar.setObjectName("viewToolbar")
    bar.addWidget(QtWidgets.QLabel(" Window/level "))
    win.preset_combo = QtWidgets.QComboBox()
    win.preset_combo.setObjectName("windowPreset")
    win.preset_combo.addItems([*WINDOW_PRESETS, CUSTOM_PRESET])
    win.preset_combo.setCurrentText(DEFAULT_PRESET)
    win.preset_combo.setToolTip("CT presets as in 3D Slicer; Ctrl + left drag in a view adjusts them")
    win.preset_combo.activated[str].connect(win.set_window_preset)
    bar.addWidget(win.preset_combo)
    win.window_box = QtWidgets.QDoubleSpinBox()
    win.window_box.setObjectName("windowWidth")
    win.level_box = QtWidgets.QDoubleSpinBox()
    win.level_box.setObjectName("windowLevel")
    for box, prefix, low in ((win.window_box, "W ", 1.0), (win.level_box, "L ", -2000.0)):
        box.setRange(low, 8000.0)
        box.setDecimals(0)
        box.setPrefix(prefix)
        box.setKeyboardTracking(False)
        box.setFixedWidth(90)
        box.valueChanged.connect(lambda _v: win.set_window_level(win.window_box.value(), win.level_box.value()))
        bar.addWidget(box)
    bar.addWidget(QtWidgets.QLabel("  Overlay "))
    win.opacity_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
    win.opacity_slider.setObjectName("overlayOpacity")
    win.opacity_slider.setRange(0, 100)
    win.opacity_slider.setValue(50)
    win.opacity_slider.setFixedWidth(120)
    win.opacity_slider.valueChanged.connect(lambda v: win.set_overlay_opacity(v / 100.0))
    bar.addWidget(win.opacity_slider)
    win.crosshair_box = QtWidgets.QCheckBox("Crosshair")
    win.crosshair_box.setChecked(True)
    win.crosshair_box.toggled.connect(win.set_crosshair_visible)
    bar.addWidget(win.crosshair_box)
    reset = QtWidgets.QPushButton("Reset views")
    reset.clicked.connect(win.reset_views)
    bar.addWidget(reset)
    win.before_after_button = QtWidgets.QToolButton()
    win.before_after_button.setText("Before / after")
    win.before_after_button.setObjectName("beforeAfterButton")
    win.before_after_button.setCheckable(True)
    win.before_after_button.setToolTip("Show the CT as it was before inpainting (Ctrl+B)")
    win.before_after_button.setEnabled(False)
    win.before_after_button.toggled.connect(win.show_before)
    bar.addWidget(win.before_after_button)
