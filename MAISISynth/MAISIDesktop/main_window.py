"""The main window: three slice views and a 3D view around one study, with the tool panels.

The window owns the study (CT + labels), keeps the views in step (crosshair, slices, colours) and
turns user actions into engine calls: files are read by `loading`, edits go through `painting`,
generation and inpainting run in a worker process, or on a MAISI server when the Compute box says so,
through `JobController`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import atomic_path
from MAISIEngine.io.nifti import write_volume
from MAISISynthLib import params
from MAISISynthLib.execution import ExecutionSettings, check_connection, runner_for
from MAISISynthLib.jobs import JobRunner

from MAISIDesktop import loading, painting
from MAISIDesktop.dialogs import PhantomDialog, PhantomSettings, show_error, show_info
from MAISIDesktop.generate_panel import GeneratePanel
from MAISIDesktop.history import HistoryEntry, HistoryPanel, read_history
from MAISIDesktop.job_controller import JobController
from MAISIDesktop.legend import LegendPanel
from MAISIDesktop.overlay import (
    DEFAULT_PRESET,
    WINDOW_PRESETS,
    image_data_from_array,
    label_lookup_table,
    update_lookup_table,
)
from MAISIDesktop.pacs_dialog import open_pacs_dialog
from MAISIDesktop.paint_panel import PaintPanel
from MAISIDesktop.slice_view import ORIENTATION_AXIS, SliceView
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


class MainWindow(QtWidgets.QMainWindow):
    studyLoaded = QtCore.pyqtSignal()
    jobFinished = QtCore.pyqtSignal(str)  # "succeeded", "failed" or "cancelled"

    def __init__(self, runs_dir: Path | None = None, runner: JobRunner | None = None,
                 settings: QtCore.QSettings | None = None) -> None:
        """`runner` runs jobs on this computer; `settings` keeps the Compute choice between sessions."""
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self.settings = settings if settings is not None else default_settings()
        self.study: Study | None = None
        self.undo_stack = painting.UndoStack()
        self.stroke: painting.Stroke | None = None
        self.crosshair = np.zeros(3)
        self.lookup_table = label_lookup_table()
        self.window_level = WINDOW_PRESETS[DEFAULT_PRESET]
        self.last_error: tuple[str, str] | None = None
        self.error_dialog: QtWidgets.QMessageBox | None = None
        self._label_image = None
        self._ct_image = None
        self._job_kind = ""
        self._job_started = 0.0
        self._job_spec: dict[str, Any] = {}
        self._phantom_request: tuple[PhantomSettings, bool] = (PhantomSettings(), True)

        self.views = {name: SliceView(name) for name in ORIENTATION_AXIS}
        self.volume_view = VolumeView()
        central = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(central)
        grid.setContentsMargins(2, 2, 2, 2)
        grid.setSpacing(3)
        grid.addWidget(self.views["axial"], 0, 0)
        grid.addWidget(self.volume_view, 0, 1)
        grid.addWidget(self.views["coronal"], 1, 0)
        grid.addWidget(self.views["sagittal"], 1, 1)
        self.setCentralWidget(central)

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
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.generate_panel)
        tabs.addTab(scroll, "Generate")
        tabs.addTab(self.history, "History")
        self.side_tabs = tabs
        self._add_dock("Generation", tabs, QtCore.Qt.RightDockWidgetArea)

        self.jobs = JobController(runner, self)
        self._refresh_timer = QtCore.QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_DELAY_MS)
        self._refresh_timer.timeout.connect(self.refresh_derived)
        self.hover_label = QtWidgets.QLabel("")
        self.statusBar().addPermanentWidget(self.hover_label)

        self._build_toolbar()
        self._build_menus()
        self._connect()
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

    def _build_toolbar(self) -> None:
        bar = self.addToolBar("View")
        bar.setObjectName("viewToolbar")
        bar.addWidget(QtWidgets.QLabel(" Window "))
        self.preset_combo = QtWidgets.QComboBox()
        self.preset_combo.setObjectName("windowPreset")
        self.preset_combo.addItems(WINDOW_PRESETS)
        self.preset_combo.setCurrentText(DEFAULT_PRESET)
        self.preset_combo.currentTextChanged.connect(self.set_window_preset)
        bar.addWidget(self.preset_combo)
        bar.addWidget(QtWidgets.QLabel("  Overlay "))
        self.opacity_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.opacity_slider.setObjectName("overlayOpacity")
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setFixedWidth(140)
        self.opacity_slider.valueChanged.connect(lambda v: self.set_overlay_opacity(v / 100.0))
        bar.addWidget(self.opacity_slider)
        self.crosshair_box = QtWidgets.QCheckBox("Crosshair")
        self.crosshair_box.setChecked(True)
        self.crosshair_box.toggled.connect(self.set_crosshair_visible)
        bar.addWidget(self.crosshair_box)
        reset = QtWidgets.QPushButton("Reset views")
        reset.clicked.connect(self.reset_views)
        bar.addWidget(reset)
        for view in self.views.values():
            view.set_overlay_opacity(0.5)
            view.set_window_level(*self.window_level)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self._action(file_menu, "&Open label map...", self._ask_open_labels, QtGui.QKeySequence.Open)
        self._action(file_menu, "Open &CT (+ labels)...", self._ask_open_ct)
        self._action(file_menu, "&New from phantom template...", self._ask_new_phantom, "Ctrl+N")
        file_menu.addSeparator()
        self._action(file_menu, "&Export NIfTI (image + labels)...", self._ask_export_nifti, "Ctrl+E")
        self.dicom_action = self._action(file_menu, "Export &DICOM (CT + SEG)...", self._ask_export_dicom)
        self.pacs_action = self._action(file_menu, "Send to &PACS (CT + SEG)...", lambda: open_pacs_dialog(self))
        self._action(file_menu, "Save &screenshot...", self._ask_screenshot)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QtGui.QKeySequence.Quit)
        edit_menu = self.menuBar().addMenu("&Edit")
        self.undo_action = self._action(edit_menu, "&Undo", self.undo, QtGui.QKeySequence.Undo)
        self.redo_action = self._action(edit_menu, "&Redo", self.redo, QtGui.QKeySequence.Redo)
        edit_menu.addSeparator()
        for tool, key in (("navigate", "N"), ("brush", "B"), ("eraser", "E"), ("tumor", "T")):
            self._action(edit_menu, f"Tool: {tool}", lambda t=tool: self.paint_panel.set_tool(t), key)
        self._sync_undo()

    def _action(self, menu: QtWidgets.QMenu, text: str, slot, shortcut=None) -> QtWidgets.QAction:
        action = menu.addAction(text)
        action.triggered.connect(lambda _checked=False: slot())
        if shortcut is not None:
            action.setShortcut(QtGui.QKeySequence(shortcut))
        return action

    def _connect(self) -> None:
        for view in self.views.values():
            view.positionPicked.connect(self.set_crosshair)
            view.strokeStarted.connect(lambda ijk, v=view: self._stroke_start(v, ijk))
            view.strokeMoved.connect(self._stroke_move)
            view.strokeFinished.connect(self._stroke_finish)
            view.tumorClicked.connect(self.place_tumor)
            view.hovered.connect(self._show_hover)
        self.legend.hiddenChanged.connect(self._hidden_changed)
        self.legend.labelChosen.connect(self.paint_panel.set_label)
        self.paint_panel.toolChanged.connect(self._tool_changed)
        self.paint_panel.radiusChanged.connect(self._radius_changed)
        self.paint_panel.undo_button.clicked.connect(self.undo)
        self.paint_panel.redo_button.clicked.connect(self.redo)
        self.generate_panel.generateClicked.connect(self.start_generate)
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

    # -- study ------------------------------------------------------------------------------------
    def set_study(self, study: Study) -> None:
        """Show a study in every view; resets undo, keeps label visibility and the window preset."""
        self.study = study
        self.stroke = None  # a stroke in progress belonged to the previous label array
        self.undo_stack.clear()
        self._sync_undo()
        spacing = study.spacing
        self._label_image = image_data_from_array(study.labels, spacing)
        self._ct_image = image_data_from_array(study.ct, spacing) if study.ct is not None else None
        update_lookup_table(self.lookup_table, self.legend.hidden)
        for view in self.views.values():
            view.set_images(self._ct_image, self._label_image, self.lookup_table)
            view.set_window_level(*self.window_level)
        self.crosshair = (np.asarray(study.shape, dtype=float) - 1) // 2
        for view in self.views.values():
            view.set_slice(int(self.crosshair[view.axis]), notify=False)
            view.set_crosshair(self.crosshair)
        self.legend.set_counts(study.label_counts())
        self.volume_view.set_study(study.labels, study.ct, spacing, self.legend.hidden)
        self.generate_panel.set_mask_grid(study.shape, spacing)
        kind = "CT + labels" if study.ct is not None else "labels"
        self.setWindowTitle(f"{study.name} ({kind}) - {APP_NAME}")
        self.statusBar().showMessage(
            f"{study.name}: {' x '.join(map(str, study.shape))} voxels of "
            f"{' x '.join(f'{s:g}' for s in spacing)} mm", 8000)
        self.draw_all()
        self.studyLoaded.emit()

    def load_label_file(self, path: str | Path) -> bool:
        study = self._guarded(loading.load_label_map, path)
        if study is None:
            return False
        self.set_study(study)
        return True

    def load_ct_file(self, ct_path: str | Path, labels_path: str | Path | None = None) -> bool:
        study = self._guarded(loading.load_ct, ct_path, labels_path)
        if study is None:
            return False
        self.set_study(study)
        return True

    def new_phantom(self, settings: PhantomSettings, with_ct: bool = True) -> bool:
        """Start a procedural torso from the engine (label map, and its CT when `with_ct`).

        The phantom is drawn by the worker process (a large one takes seconds); the study opens when
        it is done, like a generation result.
        """
        self._phantom_request = (settings, with_ct)

        def build(run_dir: Path) -> dict[str, Any]:
            job = params.phantom_job(settings.region, tuple(settings.size), tuple(settings.spacing), settings.seed,
                                     run_dir / "output")
            job["tumors"] = list(settings.tumors)
            return job

        return self._start_job("phantom", build)

    def _open_phantom(self, result: dict) -> None:
        settings, with_ct = self._phantom_request
        if with_ct and result.get("ct"):
            study = self._guarded(loading.load_ct, result["ct"], result["mask"])
        else:
            study = self._guarded(loading.load_label_map, result["mask"])
        if study is None:
            return
        study.name = f"phantom-{settings.region}-seed{settings.seed}"
        study.sources = {"template": f"phantom {settings.region} seed {settings.seed}"}
        self.set_study(study)

    # -- views ------------------------------------------------------------------------------------
    def draw_all(self) -> None:
        for view in self.views.values():
            view.draw()
        self.volume_view.draw()

    def draw_slices(self) -> None:
        for view in self.views.values():
            view.draw()

    def set_window_preset(self, name: str) -> None:
        self.window_level = WINDOW_PRESETS[name]
        if self.preset_combo.currentText() != name:
            self.preset_combo.setCurrentText(name)
        for view in self.views.values():
            view.set_window_level(*self.window_level)
        self.draw_slices()

    def set_overlay_opacity(self, opacity: float) -> None:
        value = int(round(opacity * 100))
        if self.opacity_slider.value() != value:
            self.opacity_slider.setValue(value)
            return
        for view in self.views.values():
            view.set_overlay_opacity(opacity)
        self.draw_slices()

    def set_crosshair_visible(self, visible: bool) -> None:
        for view in self.views.values():
            view.show_crosshair = visible
            view.set_crosshair(self.crosshair)
        self.draw_slices()

    def set_crosshair(self, ijk) -> None:
        """Move the linked crosshair: every view shows the slice through this voxel."""
        if self.study is None:
            return
        self.crosshair = np.clip(np.round(np.asarray(ijk, dtype=float)), 0, np.asarray(self.study.shape) - 1)
        for view in self.views.values():
            view.set_slice(int(self.crosshair[view.axis]), notify=False)
            view.set_crosshair(self.crosshair)
        self._show_hover(self.crosshair)
        self.draw_slices()

    def reset_views(self) -> None:
        for view in self.views.values():
            view.fit()
        self.volume_view.reset_camera()
        self.draw_all()

    def _show_hover(self, ijk) -> None:
        if self.study is None:
            return
        i, j, k = (int(round(v)) for v in ijk)
        if not all(0 <= v < s for v, s in zip((i, j, k), self.study.shape)):
            return
        label_id = int(self.study.labels[i, j, k])
        text = f"voxel ({i}, {j}, {k})   {maisi_labels.name_of(label_id)} ({label_id})"
        if self.study.ct is not None:
            text += f"   {self.study.ct[i, j, k]:.0f} HU"
        self.hover_label.setText(text)

    def _hidden_changed(self, hidden) -> None:
        update_lookup_table(self.lookup_table, hidden)
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

    def _stroke_start(self, view: SliceView, ijk) -> None:
        if self.study is None:
            return
        panel = self.paint_panel
        erase = panel.tool == "eraser"
        self.stroke = painting.Stroke(
            self.study.labels, self.study.spacing, panel.label, panel.radius.value(),
            erase=erase, brush_shape=panel.brush_shape, slice_axis=view.axis,
            only_over={panel.label} if erase and panel.erase_selected_only.isChecked() else None,
            keep_tumor_in_host=panel.keep_in_host.isChecked(),
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
        self.stroke = None
        if edit is not None:
            self.undo_stack.push(edit)
            self.statusBar().showMessage(edit.description, 4000)
        self._labels_edited()

    def place_tumor(self, ijk) -> bool:
        """The tumor tool: the engine's tumor shape of the chosen type and diameter at a clicked voxel."""
        if self.study is None:
            return False
        label = self.paint_panel.label
        if label not in maisi_labels.TUMOR_HOSTS:
            self.report_error(f"{maisi_labels.name_of(label)} is not a tumor type",
                              "choose one of the five tumor labels at the top of the label list")
            return False
        edit = self._guarded(painting.place_tumor, self.study.labels, self.study.affine, ijk,
                             self.paint_panel.tumor_diameter.value(), label, int(time.time()) % 100000)
        if edit is None:
            return False
        self.undo_stack.push(edit)
        self.statusBar().showMessage(edit.description, 4000)
        self._labels_edited()
        return True

    def undo(self) -> None:
        if self.study is not None and self.undo_stack.undo(self.study.labels) is not None:
            self._labels_edited()

    def redo(self) -> None:
        if self.study is not None and self.undo_stack.redo(self.study.labels) is not None:
            self._labels_edited()

    def _sync_undo(self) -> None:
        for widget in (self.undo_action, self.paint_panel.undo_button):
            widget.setEnabled(self.undo_stack.can_undo())
        for widget in (self.redo_action, self.paint_panel.redo_button):
            widget.setEnabled(self.undo_stack.can_redo())

    # -- jobs -------------------------------------------------------------------------------------
    def _new_run_dir(self, kind: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            path = self.runs_dir / f"{stamp}-{kind}-{n}"
            if not path.exists():
                path.mkdir(parents=True)
                return path
        raise MaisiError(f"cannot create a run folder in {self.runs_dir}", "free up or choose another runs folder")

    def _start_job(self, kind: str, build) -> bool:
        if self.jobs.is_running():
            self.report_error("a job is already running", "wait for it or press Cancel")
            return False
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            run_dir = self._new_run_dir(kind)
        except OSError as exc:
            self.report_error(f"cannot write to the runs folder {self.runs_dir} ({exc.strerror})",
                              "set MAISI_DESKTOP_RUNS to a writable folder")
            return False
        try:
            job = build(run_dir)
            runner = runner_for(job, self.generate_panel.execution_settings(), self.jobs.runner)
            self.jobs.start(job, run_dir, runner)
        except MaisiError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            self.report_error(exc.message, exc.hint)
            return False
        self._job_kind, self._job_spec, self._job_started = kind, job, time.monotonic()
        self.generate_panel.set_running(True)
        return True

    def start_generate(self) -> bool:
        """Generate a CT for the current label map (or a phantom template) in a worker process."""
        panel = self.generate_panel
        from_template = panel.source_combo.currentText() != "Current label map"
        if not from_template and self.study is None:
            self.report_error("there is no label map to generate from",
                              "open a label map, start from a phantom template, or choose 'Phantom template'")
            return False

        def build(run_dir: Path) -> dict[str, Any]:
            mask = None
            if not from_template:
                assert self.study is not None
                mask = write_volume(run_dir / "input_labels.nii.gz", self.study.labels, self.study.affine,
                                    description="label map from MAISI Desktop", dtype=np.uint8)
            return panel.generate_job(run_dir / "output", mask)

        return self._start_job("generate", build)

    def start_inpaint(self) -> bool:
        """Inpaint the painted tumor of the chosen type into the current CT."""
        study = self.study
        if study is None or study.ct is None:
            self.report_error("inpainting needs a CT with its label map",
                              "open a CT with labels (or a generated result) first")
            return False
        tumor_label = self.generate_panel.tumor_label
        tumor = study.labels == tumor_label
        if not tumor.any():
            self.report_error(f"there is no {maisi_labels.name_of(tumor_label)} in the label map",
                              "paint one with the brush or place one with the tumor tool first")
            return False

        def build(run_dir: Path) -> dict[str, Any]:
            image = write_volume(run_dir / "input_image.nii.gz", study.ct, study.affine, dtype=np.float32)
            labels = write_volume(run_dir / "input_labels.nii.gz", study.labels, study.affine, dtype=np.uint8)
            tumor_path = write_volume(run_dir / "input_tumor.nii.gz", tumor.astype(np.uint8), study.affine,
                                      dtype=np.uint8)
            return self.generate_panel.inpaint_job(run_dir / "output", image, labels, tumor_path)

        return self._start_job("inpaint", build)

    def start_download(self) -> bool:
        return self._start_job("download", lambda _run_dir: params.download_job(self.generate_panel.model))

    def cancel_job(self) -> None:
        self.jobs.cancel()

    def test_connection(self) -> bool:
        """Reach the chosen server and check the token; the answer goes beside the button."""
        panel = self.generate_panel
        QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.WaitCursor)
        try:
            answer = check_connection(panel.execution_settings())
        except MaisiError as exc:
            panel.set_connection_status(f"Not connected: {exc.message}", ok=False)
            self.report_error(exc.message, exc.hint)
            return False
        finally:
            QtWidgets.QApplication.restoreOverrideCursor()
        panel.set_connection_status(answer, ok=True)
        self.statusBar().showMessage(answer, 8000)
        return True

    def _job_succeeded(self, result: dict) -> None:
        kind, run_dir = self._job_kind, self.jobs.run_dir
        self.generate_panel.set_running(False)
        if kind in ("download", "phantom"):
            if kind == "phantom":
                self._open_phantom(result)  # loads into memory; the run's files are not kept
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)
            self.generate_panel.refresh_weights_status()
            self.jobFinished.emit("succeeded")
            return
        entry = HistoryEntry(kind=kind, result=dict(result), job=self._job_spec,
                             duration_s=time.monotonic() - self._job_started,
                             run_dir=str(run_dir) if run_dir else None)
        try:
            entry.save()
        except OSError:
            pass
        self.history.add_entry(entry)
        study = self._guarded(loading.load_result, result)
        if study is not None:
            self.set_study(study)
        self.jobFinished.emit("succeeded")

    def _job_failed(self, error: dict) -> None:
        self.generate_panel.set_running(False)
        run_dir = self.jobs.run_dir
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        message = str(error.get("message") or "the job failed")
        hint = str(error.get("hint") or "")
        details = str(error.get("stderr_tail") or "")
        self.generate_panel.stage_label.setText(f"Failed: {message}")
        self.report_error(message, hint, details)
        self.jobFinished.emit("failed")

    def _job_cancelled(self) -> None:
        self.generate_panel.set_running(False)
        self.generate_panel.set_progress(0.0, "Cancelled")
        self.jobFinished.emit("cancelled")

    def open_history_entry(self, entry: HistoryEntry) -> bool:
        study = self._guarded(loading.load_result, entry.result)
        if study is None:
            return False
        self.set_study(study)
        return True

    # -- export -----------------------------------------------------------------------------------
    def export_nifti(self, directory: str | Path) -> list[Path]:
        """Write the labels (and the CT when there is one) as NIfTI, each file atomically."""
        if self.study is None:
            raise MaisiError("there is nothing to export", "open or generate a volume first")
        study, directory = self.study, Path(directory)
        paths = []
        if study.ct is not None:
            ct = study.ct
            integral = bool(np.array_equal(ct, np.round(ct))) and ct.min() >= -32768 and ct.max() <= 32767
            paths.append(write_volume(directory / f"{study.name}_image.nii.gz", ct, study.affine,
                                      description="CT from MAISI Desktop",
                                      dtype=np.int16 if integral else np.float32))
        paths.append(write_volume(directory / f"{study.name}_labels.nii.gz", study.labels, study.affine,
                                  description="MAISI labels from MAISI Desktop", dtype=np.uint8))
        return paths

    def export_dicom(self, directory: str | Path) -> Any:
        """CT series + SEG through the engine's DICOM writer, when it is installed."""
        if self.study is None or self.study.ct is None:
            raise MaisiError("DICOM export needs a CT", "generate or open a CT first")
        try:
            from MAISIEngine.io.dicom import export_dicom
        except ImportError:
            raise MaisiError("DICOM export is not available in this installation",
                             "install the DICOM extra: pip install 'maisi-engine[dicom]'") from None
        return export_dicom(self.study.ct, self.study.labels, Path(directory), provenance=self.study.provenance,
                            affine=self.study.affine)

    def save_screenshot(self, path: str | Path) -> Path:
        """The whole window as PNG, read from the screen (VTK views included), written atomically."""
        self.draw_all()
        QtWidgets.QApplication.processEvents()
        screen = self.windowHandle().screen() if self.windowHandle() else QtWidgets.QApplication.primaryScreen()
        pixmap = screen.grabWindow(int(self.winId()))
        path = Path(path)
        with atomic_path(path) as tmp:
            if not pixmap.save(str(tmp), "PNG"):
                raise MaisiError(f"cannot write {path}", "choose a writable folder")
        return path

    # -- file dialogs -----------------------------------------------------------------------------
    def _ask_open_labels(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open MAISI label map", "", loading.FILE_FILTER)
        if path:
            self.load_label_file(path)

    def _ask_open_ct(self) -> None:
        ct, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open CT", "", loading.FILE_FILTER)
        if not ct:
            return
        labels, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open its label map (Cancel for none)", str(Path(ct).parent), loading.FILE_FILTER)
        self.load_ct_file(ct, labels or None)

    def _ask_new_phantom(self) -> None:
        dialog = PhantomDialog(self)
        if dialog.exec_() == QtWidgets.QDialog.Accepted:
            self.new_phantom(dialog.settings())

    def _ask_export_nifti(self) -> None:
        directory = QtWidgets.QFileDialog.getExistingDirectory(self, "Export NIfTI into folder")
        if directory:
            paths = self._guarded(self.export_nifti, directory)
            if paths:
                show_info(self, "Exported", "\n".join(str(p) for p in paths))

    def _ask_export_dicom(self) -> None:
        try:
            import MAISIEngine.io.dicom  # noqa: F401
        except ImportError:
            self.report_error("DICOM export is not available in this installation",
                              "install the DICOM extra: pip install 'maisi-engine[dicom]'")
            return
        directory = QtWidgets.QFileDialog.getExistingDirectory(self, "Export DICOM into folder")
        if directory:
            result = self._guarded(self.export_dicom, directory)
            if result is not None:
                show_info(self, "Exported", f"DICOM CT + SEG written to {directory}")

    def _ask_screenshot(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save screenshot", "maisi.png", "PNG (*.png)")
        if path:
            self._guarded(self.save_screenshot, path)

    # -- closing ----------------------------------------------------------------------------------
    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802
        if self.jobs.is_running():
            self.jobs.cancel()
        for view in self.views.values():
            view.close_view()
        self.volume_view.close_view()
        super().closeEvent(event)
