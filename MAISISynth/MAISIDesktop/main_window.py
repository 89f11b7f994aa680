"""The main window: three slice views and a 3D view around one document, with the tool panels.

The window shows one `Document` (study, undo history, saved state), keeps the views on one linked
cursor (slices, crosshair, colours, window/level) and turns user actions into edits and runs. File
operations live in `file_actions`, runs and their results in `job_actions`, batch and evaluation
reports in `report_actions`, menus and the toolbar in `menus`; this module holds the layout, the views
and painting.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5 import QtCore, QtWidgets

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISISynthLib.execution import ExecutionSettings
from MAISISynthLib.jobs import JobRunner

from MAISIDesktop import painting
from MAISIDesktop.dialogs import PhantomSettings, show_error, show_info
from MAISIDesktop.document import Document
from MAISIDesktop.file_actions import FileActionsMixin
from MAISIDesktop.generate_panel import GeneratePanel
from MAISIDesktop.history import HistoryPanel, read_history
from MAISIDesktop.job_actions import JobActionsMixin
from MAISIDesktop.job_controller import JobController
from MAISIDesktop.legend import LegendPanel
from MAISIDesktop.menus import build_menus, build_view_toolbar, shortcuts_dialog
from MAISIDesktop.overlay import (
    CUSTOM_PRESET,
    DEFAULT_PRESET,
    WINDOW_PRESETS,
    image_data_from_array,
    label_lookup_table,
    update_lookup_table,
)
from MAISIDesktop.paint_panel import PaintPanel
from MAISIDesktop.report_actions import ReportActionsMixin
from MAISIDesktop.slice_view import ORIENTATION_AXIS, SliceView
from MAISIDesktop.start_screen import StartScreen
from MAISIDesktop.status_area import JobStatusArea
from MAISIDesktop.study import Study
from MAISIDesktop.volume_view import VolumeView

APP_NAME = "MAISI Desktop"
REFRESH_DELAY_MS = 300
"""Legend counts and 3D surfaces are rebuilt this long after the last edit."""


def default_runs_dir() -> Path:
    """Where runs (job, inputs, outputs) are kept: $MAISI_DESKTOP_RUNS, else the user's data folder."""
    configured = os.environ.get("MAISI_DESKTOP_RUNS")
    if configured:
        return Path(configured).expanduser()
    base = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.AppDataLocation)
    return Path(base or Path.home() / ".maisi-desktop") / "runs"


def default_settings() -> QtCore.QSettings:
    """The user's settings file: $MAISI_DESKTOP_SETTINGS (an .ini path), else the platform's usual place."""
    configured = os.environ.get("MAISI_DESKTOP_SETTINGS")
    if configured:
        return QtCore.QSettings(str(Path(configured).expanduser()), QtCore.QSettings.IniFormat)
    return QtCore.QSettings(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, "MAISISynth", "maisi-desktop")


EXECUTION_KEYS = ("mode", "url", "token_file")
"""What the Compute box keeps in the settings file under `compute/` (the token file's path, never the token)."""


def read_execution_settings(settings: QtCore.QSettings) -> ExecutionSettings:
    stored = {key: settings.value(f"compute/{key}") for key in EXECUTION_KEYS}
    return ExecutionSettings.from_dict({k: str(v) for k, v in stored.items() if v is not None})


def write_execution_settings(settings: QtCore.QSettings, execution: ExecutionSettings) -> None:
    for key, value in execution.to_dict().items():
        settings.setValue(f"compute/{key}", value)
    settings.sync()


class MainWindow(FileActionsMixin, JobActionsMixin, ReportActionsMixin, QtWidgets.QMainWindow):
    studyLoaded = QtCore.pyqtSignal()
    jobFinished = QtCore.pyqtSignal(str)  # "succeeded", "failed" or "cancelled"

    def __init__(self, runs_dir: Path | None = None, runner: JobRunner | None = None,
                 settings: QtCore.QSettings | None = None) -> None:
        """`runner` runs jobs on this computer; `settings` keeps the Compute choice between sessions."""
        super().__init__()
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self.settings = settings if settings is not None else default_settings()
        self.document: Document | None = None
        self.stroke: painting.Stroke | None = None
        self.crosshair = np.zeros(3)
        self.lookup_table = label_lookup_table()
        self.window_level = WINDOW_PRESETS[DEFAULT_PRESET]
        self.last_error: tuple[str, str] | None = None
        self.error_dialog: QtWidgets.QMessageBox | None = None
        self._label_image = None
        self._ct_image = None
        self._before_image = None
        self._readout_ijk: np.ndarray | None = None
        self._job_kind = ""
        self._job_started = 0.0
        self._job_spec: dict[str, Any] = {}
        self._job_document: Document | None = None
        self._phantom_request: tuple[PhantomSettings, bool] = (PhantomSettings(), True)

        self.views = {name: SliceView(name) for name in ORIENTATION_AXIS}
        self.volume_view = VolumeView()
        grid_page = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(grid_page)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(3)
        grid.addWidget(self.views["axial"], 0, 0)
        grid.addWidget(self.volume_view, 0, 1)
        grid.addWidget(self.views["coronal"], 1, 0)
        grid.addWidget(self.views["sagittal"], 1, 1)
        self.start_screen = StartScreen()
        self.central_pages = QtWidgets.QStackedWidget()
        self.central_pages.addWidget(self.start_screen)
        self.central_pages.addWidget(grid_page)
        self.setCentralWidget(self.central_pages)

        self.legend = LegendPanel()
        self.paint_panel = PaintPanel()
        left = QtWidgets.QWidget()
        left_layout = QtWidgets.QVBoxLayout(left)
        left_layout.setContentsMargins(4, 4, 4, 4)
        paint_box = QtWidgets.QGroupBox("Paint")
        QtWidgets.QVBoxLayout(paint_box).addWidget(self.paint_panel)
        legend_box = QtWidgets.QGroupBox("Labels")
        QtWidgets.QVBoxLayout(legend_box).addWidget(self.legend)
        left_layout.addWidget(paint_box)
        left_layout.addWidget(legend_box, 1)
        self._add_dock("Labels and paint", left, QtCore.Qt.LeftDockWidgetArea)

        self.generate_panel = GeneratePanel()
        self.generate_panel.set_execution_settings(read_execution_settings(self.settings))
        self.history = HistoryPanel()
        tabs = QtWidgets.QTabWidget()
        scroll = QtWidgets.QScrollArea()
        scroll.setObjectName("generateScroll")
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        scroll.setWidget(self.generate_panel)
        scroll.setMinimumWidth(self.generate_panel.minimumSizeHint().width()
                               + scroll.verticalScrollBar().sizeHint().width() + 4)
        self.generate_scroll = scroll
        generate_tab = QtWidgets.QWidget()
        generate_layout = QtWidgets.QVBoxLayout(generate_tab)
        generate_layout.setContentsMargins(0, 0, 0, 0)
        generate_layout.addWidget(scroll, 1)
        generate_layout.addWidget(self.generate_panel.run_buttons)  # Generate / Inpaint never scroll away
        tabs.addTab(generate_tab, "Generate")
        tabs.addTab(self.history, "History")
        self.side_tabs = tabs
        self._add_dock("Generation", tabs, QtCore.Qt.RightDockWidgetArea)

        self.jobs = JobController(runner, self)
        self._refresh_timer = QtCore.QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_DELAY_MS)
        self._refresh_timer.timeout.connect(self.refresh_derived)
        self.hover_label = QtWidgets.QLabel("")
        self.hover_label.setObjectName("cursorReadout")
        panel = self.generate_panel
        self.status_area = JobStatusArea(panel.progress, panel.stage_label, panel.cancel_button)
        self.statusBar().addPermanentWidget(self.hover_label)
        self.statusBar().addPermanentWidget(self.status_area)

        build_view_toolbar(self)
        build_menus(self)
        self._show_window_level()
        for view in self.views.values():
            view.set_overlay_opacity(0.5)
            view.set_window_level(*self.window_level)
        self._connect()
        self._sync_actions()
        self._sync_title()
        self.resize(1500, 950)
        for entry in read_history(self.runs_dir):
            self.history.add_entry(entry)

    # -- layout -----------------------------------------------------------------------------------
    def _add_dock(self, title: str, widget: QtWidgets.QWidget, area: QtCore.Qt.DockWidgetArea) -> None:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(title.replace(" ", "_"))
        dock.setWidget(widget)
        dock.setFeatures(QtWidgets.QDockWidget.DockWidgetMovable | QtWidgets.QDockWidget.DockWidgetFloatable)
        self.addDockWidget(area, dock)

    def _connect(self) -> None:
        for view in self.views.values():
            view.positionPicked.connect(self.set_crosshair)
            view.sliceChanged.connect(self._slice_scrolled)
            view.windowLevelDragged.connect(self._drag_window_level)
            view.strokeStarted.connect(lambda ijk, v=view: self._stroke_start(v, ijk))
            view.strokeMoved.connect(self._stroke_move)
            view.strokeFinished.connect(self._stroke_finish)
            view.tumorClicked.connect(self.place_tumor)
            view.hovered.connect(self._show_readout)
        self.start_screen.chosen.connect(self._start_screen_choice)
        self.legend.hiddenChanged.connect(self._hidden_changed)
        self.legend.opacityChanged.connect(lambda _label, _opacity: self._hidden_changed(self.legend.hidden))
        self.legend.labelChosen.connect(self.paint_panel.set_label)
        self.paint_panel.toolChanged.connect(self._tool_changed)
        self.paint_panel.radiusChanged.connect(self._radius_changed)
        self.paint_panel.undo_button.clicked.connect(self.undo)
        self.paint_panel.redo_button.clicked.connect(self.redo)
        self.generate_panel.generateClicked.connect(self.start_generate)
        self.generate_panel.mask_box.generateMapClicked.connect(self.start_generate_map)
        self.generate_panel.inpaintClicked.connect(self.start_inpaint)
        self.generate_panel.cancelClicked.connect(self.cancel_job)
        self.generate_panel.downloadClicked.connect(self.start_download)
        self.generate_panel.testConnectionClicked.connect(self.test_connection)
        self.generate_panel.executionChanged.connect(
            lambda: write_execution_settings(self.settings, self.generate_panel.execution_settings()))
        self.jobs.progressed.connect(self.generate_panel.set_progress)
        self.jobs.logged.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.jobs.succeeded.connect(self._job_succeeded)
        self.jobs.failed.connect(self._job_failed)
        self.jobs.cancelled.connect(self._job_cancelled)
        self.history.openRequested.connect(self.open_history_entry)

    def _start_screen_choice(self, key: str) -> None:
        {"open_labels": self.ask_open_labels, "new_template": self.ask_new_phantom,
         "open_ct": self.ask_open_ct}[key]()

    def _sync_actions(self) -> None:
        """File actions that need a study are enabled only when one is open (DICOM also needs a CT)."""
        loaded = self.study is not None
        for action in self.study_actions:
            action.setEnabled(loaded)
        self.dicom_action.setEnabled(loaded and self.study.ct is not None)
        self.pacs_action.setEnabled(loaded and self.study.ct is not None)
        has_before = self.document is not None and self.document.before_ct is not None
        self.before_after_action.setEnabled(has_before)
        self.before_after_button.setEnabled(has_before)

    def _sync_title(self) -> None:
        document = self.document
        if document is None:
            self.setWindowTitle(APP_NAME)
            self.setWindowModified(False)
            return
        kind = "CT + labels" if document.study.ct is not None else "labels"
        self.setWindowTitle(f"{document.study.name}[*] ({kind}) - {APP_NAME}")
        self.setWindowModified(document.modified)

    # -- errors -----------------------------------------------------------------------------------
    def report_error(self, message: str, hint: str = "", details: str = "") -> None:
        """Show a user-facing problem in a dialog and remember it (the app stays usable)."""
        self.last_error = (message, hint)
        self.statusBar().showMessage(f"Error: {message}", 10000)
        self.error_dialog = show_error(self, message, hint, details)

    def _guarded(self, action, *args) -> Any:
        """Run a user action; a MaisiError becomes a dialog instead of an exception."""
        try:
            return action(*args)
        except MaisiError as exc:
            self.report_error(exc.message, exc.hint)
            return None

    # -- document ---------------------------------------------------------------------------------
    @property
    def study(self) -> Study | None:
        return self.document.study if self.document is not None else None

    @property
    def undo_stack(self) -> painting.UndoStack | None:
        return self.document.undo_stack if self.document is not None else None

    def set_study(self, study: Study) -> None:
        """Show a study as a new document (fresh undo history), keeping label visibility and window."""
        self.set_document(Document(study))

    def set_document(self, document: Document, keep_view: bool = False) -> None:
        """Show a document in every view; with `keep_view` (same grid) slices and zoom stay put."""
        cameras = {name: view.camera_state() for name, view in self.views.items()} if keep_view else {}
        crosshair = self.crosshair.copy()
        self.document = document
        study = document.study
        self.stroke = None  # a stroke in progress belonged to the previous label array
        self.before_after_action.setChecked(False)
        self._sync_undo()
        spacing = study.spacing
        self._label_image = image_data_from_array(study.labels, spacing)
        self._ct_image = image_data_from_array(study.ct, spacing) if study.ct is not None else None
        self._before_image = (image_data_from_array(np.asfortranarray(document.before_ct, dtype=np.float32), spacing)
                              if document.before_ct is not None else None)
        update_lookup_table(self.lookup_table, self.legend.hidden, self.legend.opacities)
        self.central_pages.setCurrentIndex(1)
        for view in self.views.values():
            view.set_images(self._ct_image, self._label_image, self.lookup_table)
            view.set_affine(study.affine)
            view.set_window_level(*self.window_level)
            if view.orientation in cameras:
                view.restore_camera(cameras[view.orientation])
        self.crosshair = crosshair if keep_view else (np.asarray(study.shape, dtype=float) - 1) // 2
        for view in self.views.values():
            view.set_slice(int(self.crosshair[view.axis]), notify=False)
            view.set_crosshair(self.crosshair)
        self.legend.set_counts(study.label_counts())
        self.volume_view.set_study(study.labels, study.ct, spacing, self.legend.hidden)
        self.generate_panel.set_mask_grid(study.shape, spacing)
        self.follow_painted_tumor()
        self._sync_actions()
        self._sync_title()
        self._show_readout(self.crosshair)
        self.statusBar().showMessage(
            f"{study.name}: {' x '.join(map(str, study.shape))} voxels of "
            f"{' x '.join(f'{s:g}' for s in spacing)} mm", 8000)
        self.draw_all()
        self.studyLoaded.emit()

    # -- views ------------------------------------------------------------------------------------
    def draw_all(self) -> None:
        for view in self.views.values():
            view.draw()
        self.volume_view.draw()

    def draw_slices(self) -> None:
        for view in self.views.values():
            view.draw()

    def set_window_preset(self, name: str) -> None:
        if name == CUSTOM_PRESET:
            return
        self.set_window_level(*WINDOW_PRESETS[name])

    def set_window_level(self, window: float, level: float) -> None:
        """Grey levels of the CT in every view (width and centre in HU), shown in the toolbar."""
        self.window_level = (max(1.0, float(window)), float(level))
        for view in self.views.values():
            view.set_window_level(*self.window_level)
        self._show_window_level()
        self.draw_slices()

    def _show_window_level(self) -> None:
        window, level = self.window_level
        preset = next((name for name, value in WINDOW_PRESETS.items() if value == (window, level)), CUSTOM_PRESET)
        for widget, value in ((self.window_box, window), (self.level_box, level), (self.preset_combo, preset)):
            widget.blockSignals(True)
            if isinstance(widget, QtWidgets.QComboBox):
                widget.setCurrentText(value)
            else:
                widget.setValue(value)
            widget.blockSignals(False)

    def _drag_window_level(self, window_change: float, level_change: float) -> None:
        window, level = self.window_level
        self.set_window_level(window + window_change, level + level_change)

    def set_overlay_opacity(self, opacity: float) -> None:
        value = int(round(opacity * 100))
        if self.opacity_slider.value() != value:
            self.opacity_slider.setValue(value)
            return
        for view in self.views.values():
            view.set_overlay_opacity(opacity)
        self.draw_slices()

    def set_label_opacity(self, label_id: int, opacity: float) -> None:
        """One label's own opacity (0..1), on top of the overall overlay opacity."""
        self.legend.set_opacity(label_id, opacity)

    def set_crosshair_visible(self, visible: bool) -> None:
        for widget in (self.crosshair_box, self.crosshair_action):
            if widget.isChecked() != visible:
                widget.setChecked(visible)
        for view in self.views.values():
            view.show_crosshair = visible
            view.set_crosshair(self.crosshair)
        self.draw_slices()

    def set_crosshair(self, ijk) -> None:
        """Move the linked cursor: every view shows the slice through this voxel."""
        if self.study is None:
            return
        self.crosshair = np.clip(np.round(np.asarray(ijk, dtype=float)), 0, np.asarray(self.study.shape) - 1)
        for view in self.views.values():
            view.set_slice(int(self.crosshair[view.axis]), notify=False)
            view.set_crosshair(self.crosshair)
        self._show_readout(self.crosshair)
        self.draw_slices()

    def _slice_scrolled(self, orientation: str, index: int) -> None:
        """Wheel, keys or slider in one view move the linked cursor along its axis: the others follow."""
        if self.study is None:
            return
        crosshair = self.crosshair.copy()
        crosshair[self.views[orientation].axis] = index
        self.set_crosshair(crosshair)

    def reset_views(self) -> None:
        for view in self.views.values():
            view.fit()
        self.volume_view.reset_camera()
        self.draw_all()

    def cursor_text(self, ijk) -> str:
        """Position (RAS mm and voxel), label and HU at a voxel: the status bar's readout."""
        study = self.study
        i, j, k = (int(round(v)) for v in ijk)
        world = study.world_of((i, j, k))
        label_id = int(study.labels[i, j, k])
        text = (f"R {world[0]:.1f}  A {world[1]:.1f}  S {world[2]:.1f} mm   voxel ({i}, {j}, {k})   "
                f"{maisi_labels.name_of(label_id)} ({label_id})")
        if study.ct is not None:
            text += f"   {study.ct[i, j, k]:.0f} HU"
        return text

    def _show_readout(self, ijk) -> None:
        if self.study is None:
            self.hover_label.setText("")
            return
        position = np.round(np.asarray(ijk, dtype=float))
        if not all(0 <= v < s for v, s in zip(position, self.study.shape)):
            return
        self._readout_ijk = position
        self.hover_label.setText(self.cursor_text(position))

    def _hidden_changed(self, hidden) -> None:
        update_lookup_table(self.lookup_table, hidden, self.legend.opacities)
        self.draw_slices()
        self._refresh_timer.start()

    def refresh_derived(self) -> None:
        """Legend counts and 3D surfaces after edits (debounced, they scan the whole volume)."""
        self._refresh_timer.stop()
        if self.study is None:
            return
        self.legend.set_counts(self.study.label_counts())
        self.volume_view.update_labels(self.study.labels, self.legend.hidden)
        self.volume_view.draw()

    def show_before(self, before: bool) -> None:
        """The before/after toggle of an inpainting result: the CT before, or the inpainted one."""
        for widget in (self.before_after_action, self.before_after_button):
            if widget.isChecked() != before:
                widget.blockSignals(True)
                widget.setChecked(before)
                widget.blockSignals(False)
        image = self._before_image if before and self._before_image is not None else self._ct_image
        if image is None:
            return
        for view in self.views.values():
            view.set_ct_image(image)
        self.statusBar().showMessage("Showing the CT before inpainting" if before else "Showing the inpainted CT", 4000)
        self.draw_slices()

    def showing_before(self) -> bool:
        return self.before_after_action.isChecked() and self._before_image is not None

    # -- painting ---------------------------------------------------------------------------------
    def _tool_changed(self, tool: str) -> None:
        for view in self.views.values():
            view.set_tool(tool)
        self.statusBar().showMessage(f"Tool: {tool}", 3000)

    def _radius_changed(self, radius: float) -> None:
        for view in self.views.values():
            view.brush_radius_mm = radius

    def _labels_edited(self) -> None:
        if self._label_image is not None:
            self._label_image.Modified()
        self.draw_slices()
        self._refresh_timer.start()
        self._sync_undo()
        self._sync_title()
        if self._readout_ijk is not None:
            self._show_readout(self._readout_ijk)

    def _stroke_start(self, view: SliceView, ijk) -> None:
        if self.document is None:
            return
        panel = self.paint_panel
        erase = panel.tool == "eraser"
        self.stroke = painting.Stroke(
            self.study.labels, self.study.spacing, panel.label, panel.radius.value(),
            erase=erase, brush_shape=panel.brush_shape, slice_axis=view.axis,
            only_over={panel.label} if erase and panel.erase_selected_only.isChecked() else None,
            keep_tumor_in_host=panel.keep_in_host.isChecked(), beneath=self.document.beneath,
        )
        if self.stroke.dab(ijk):
            self._label_image.Modified()
            self.draw_slices()

    def _stroke_move(self, ijk) -> None:
        if self.stroke is not None and self.stroke.drag_to(ijk):
            self._label_image.Modified()
            self.draw_slices()

    def _stroke_finish(self) -> None:
        if self.stroke is None:
            return
        edit = self.stroke.finish()
        erased = self.stroke.erase
        self.stroke = None
        if edit is not None:
            self.document.undo_stack.push(edit)
            self.statusBar().showMessage(edit.description, 4000)
            if not erased and self.paint_panel.label in maisi_labels.TUMOR_HOSTS:
                self._tumor_painted(self.paint_panel.label)
        self._labels_edited()

    def _tumor_painted(self, label: int) -> None:
        """The inpainting tumor type follows the tumor label the user paints."""
        names = {value: name for name, value in maisi_labels.TUMOR_TYPES.items()}
        index = self.generate_panel.tumor_type.findData(names[label])
        if index >= 0:
            self.generate_panel.tumor_type.setCurrentIndex(index)

    def place_tumor(self, ijk) -> bool:
        """The tumor tool: the engine's tumor shape of the chosen type and diameter at a clicked voxel."""
        if self.document is None:
            return False
        label = self.paint_panel.label
        if label not in maisi_labels.TUMOR_HOSTS:
            self.report_error(f"{maisi_labels.name_of(label)} is not a tumor type",
                              "choose one of the five tumor labels at the top of the label list")
            return False
        edit = self._guarded(painting.place_tumor, self.study.labels, self.study.affine, ijk,
                             self.paint_panel.tumor_diameter.value(), label, int(time.time()) % 100000,
                             self.document.beneath)
        if edit is None:
            return False
        self.document.undo_stack.push(edit)
        self.statusBar().showMessage(edit.description, 4000)
        self._tumor_painted(label)
        self._labels_edited()
        return True

    def undo(self) -> None:
        document = self.document
        if document is not None and document.undo_stack.undo(document.study.labels, document.beneath) is not None:
            self._labels_edited()

    def redo(self) -> None:
        document = self.document
        if document is not None and document.undo_stack.redo(document.study.labels, document.beneath) is not None:
            self._labels_edited()

    def _sync_undo(self) -> None:
        stack = self.undo_stack
        for widget in (self.undo_action, self.paint_panel.undo_button):
            widget.setEnabled(stack is not None and stack.can_undo())
        for widget in (self.redo_action, self.paint_panel.redo_button):
            widget.setEnabled(stack is not None and stack.can_redo())

    # -- help -------------------------------------------------------------------------------------
    def show_shortcuts(self) -> QtWidgets.QDialog:
        dialog = shortcuts_dialog(self)
        dialog.setAttribute(QtCore.Qt.WA_DeleteOnClose)
        dialog.open()
        self.shortcuts_window = dialog
        return dialog

    def show_about(self) -> None:
        show_info(self, "About MAISI Desktop",
                  "MAISI Desktop draws and edits MAISI label maps and generates synthetic CT from them with "
                  "NVIDIA's MAISI networks. Every CT it makes is SYNTHETIC, not a patient image.\n\n"
                  "Help > User guide opens docs/desktop.md; Help > Keyboard shortcuts lists the keys.")
