"""Generation and inpainting settings, weights status, and the progress bar, stage and Cancel widgets
(which the main window shows in its status area, always on screen).

The checks come from `MAISISynthLib.params` (the engine's own size rules and training ranges), so a
template size the model cannot take is flagged beside the spin boxes, and a label map's grid it cannot
take is announced with the grid the engine will fit it to, as in the Slicer module. With "Generated
label map" as the source, the `GeneratedMapBox` (anatomy-size sliders) draws the label map first, on the
grid set here; Generate then makes the CT from that map, painted or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PyQt5 import QtCore, QtWidgets

from MAISIEngine import labels as maisi_labels
from MAISIEngine.errors import MaisiError
from MAISIEngine.presets import Preset, load_preset
from MAISISynthLib import mask_request, params
from MAISISynthLib.execution import DEFAULT_SERVER_URL, LOCAL, MODE_LABELS, SERVER, ExecutionSettings

from MAISIDesktop.mask_box import GeneratedMapBox
from MAISIDesktop.seed_row import seed_row

SOURCE_LABELS = "Current label map"
SOURCE_TEMPLATE = "Phantom template"
SOURCE_GENERATED = "Generated label map"
OTHER_MODEL = "Model folder..."


def weights_summary(model: str) -> tuple[bool, bool, str]:
    """(ready, downloadable, text) for a model name or directory."""
    from MAISIEngine.weights import weights_status

    try:
        preset = load_preset(model)
        states = weights_status(preset)
    except MaisiError as exc:
        return False, False, exc.one_line()
    missing = [role for role, state in states.items() if not state.present]
    if not missing:
        verified = all(state.verified for state in states.values())
        where = {"official": "cache", "package": "installed", "directory": "model folder"}.get(preset.weights_source, "")
        return True, False, f"Weights ready ({where}{', verified' if verified else ''})"
    downloadable = preset.weights_source == "official"
    return False, downloadable, "Weights missing: " + ", ".join(missing) + (" (download them)" if downloadable else "")


class GeneratePanel(QtWidgets.QWidget):
    generateClicked = QtCore.pyqtSignal()
    inpaintClicked = QtCore.pyqtSignal()
    cancelClicked = QtCore.pyqtSignal()
    downloadClicked = QtCore.pyqtSignal()
    testConnectionClicked = QtCore.pyqtSignal()
    executionChanged = QtCore.pyqtSignal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._mask_grid: tuple[tuple[int, int, int], tuple[float, float, float]] | None = None
        self._running = False

        self.model_combo = QtWidgets.QComboBox()
        self.model_combo.setObjectName("modelCombo")
        self.model_combo.addItems(params.MODEL_CHOICES)
        self.model_combo.addItem(OTHER_MODEL)
        self.model_combo.activated.connect(self._model_activated)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._model_changed())
        self.weights_label = QtWidgets.QLabel()
        self.weights_label.setObjectName("weightsStatus")
        self.weights_label.setWordWrap(True)
        self.download_button = QtWidgets.QPushButton("Download weights")
        self.download_button.clicked.connect(self.downloadClicked.emit)

        self.run_on_combo = QtWidgets.QComboBox()
        self.run_on_combo.setObjectName("runOnCombo")
        for mode, label in MODE_LABELS.items():
            self.run_on_combo.addItem(label, mode)
        self.run_on_combo.setToolTip("Generate and inpaint here, or on a GPU machine running `maisi serve`")
        self.server_url = QtWidgets.QLineEdit(DEFAULT_SERVER_URL)
        self.server_url.setObjectName("serverUrl")
        self.server_url.setPlaceholderText(DEFAULT_SERVER_URL)
        self.token_file = QtWidgets.QLineEdit()
        self.token_file.setObjectName("tokenFile")
        self.token_file.setPlaceholderText("file holding the server's access token")
        self.token_file.setToolTip("The token is read from this file when a job starts; it is never shown or saved")
        self.token_browse = QtWidgets.QToolButton()
        self.token_browse.setText("Browse...")
        self.token_browse.clicked.connect(self._choose_token_file)
        token_row = QtWidgets.QHBoxLayout()
        token_row.addWidget(self.token_file, 1)
        token_row.addWidget(self.token_browse)
        self.test_connection_button = QtWidgets.QPushButton("Test connection")
        self.test_connection_button.setObjectName("testConnectionButton")
        self.test_connection_button.clicked.connect(self.testConnectionClicked.emit)
        self.connection_label = QtWidgets.QLabel()
        self.connection_label.setObjectName("connectionStatus")
        self.connection_label.setWordWrap(True)
        self.run_on_combo.currentIndexChanged.connect(lambda _i: self._execution_edited())
        self.server_url.editingFinished.connect(self._execution_edited)
        self.token_file.editingFinished.connect(self._execution_edited)

        self.source_combo = QtWidgets.QComboBox()
        self.source_combo.setObjectName("sourceCombo")
        self.source_combo.addItems([SOURCE_LABELS, SOURCE_TEMPLATE, SOURCE_GENERATED])
        self.mask_box = GeneratedMapBox()
        self.template_region = QtWidgets.QComboBox()
        self.template_region.addItems(params.TEMPLATE_REGIONS)
        self.use_mask_grid = QtWidgets.QCheckBox("Use the label map's grid")
        self.use_mask_grid.setChecked(True)
        self.size_boxes = [QtWidgets.QSpinBox() for _ in range(3)]
        self.spacing_boxes = [QtWidgets.QDoubleSpinBox() for _ in range(3)]
        size_row, spacing_row = QtWidgets.QHBoxLayout(), QtWidgets.QHBoxLayout()
        for box in self.size_boxes:
            box.setRange(16, 1024)
            box.setSingleStep(16)
            box.setValue(128)
            box.valueChanged.connect(lambda _v: self._check())
            size_row.addWidget(box)
        for box in self.spacing_boxes:
            box.setRange(0.25, 20.0)
            box.setDecimals(2)
            box.setSingleStep(0.25)
            box.setValue(3.0)
            box.valueChanged.connect(lambda _v: self._check())
            spacing_row.addWidget(box)
        self.fov_label = QtWidgets.QLabel()
        self.fov_label.setObjectName("fieldOfView")
        self.check_label = QtWidgets.QLabel()
        self.check_label.setObjectName("settingsCheck")
        self.check_label.setWordWrap(True)
        self.region_combo = QtWidgets.QComboBox()
        self.region_combo.addItems(params.REGION_CHOICES)
        self.seed = QtWidgets.QSpinBox()
        self.seed.setObjectName("seed")
        seed_box = seed_row(self.seed)
        self.steps = QtWidgets.QSpinBox()
        self.steps.setObjectName("steps")
        self.steps.setRange(0, 1000)
        self.steps.setSpecialValueText("model default")
        self.device_combo = QtWidgets.QComboBox()
        self.device_combo.addItems(params.DEVICE_CHOICES)
        self.modality_combo = QtWidgets.QComboBox()  # models with a modality class (rflow-ct); "" = model default
        self.modality_combo.setObjectName("modality")
        self.modality_combo.addItem("model default (ct)", "")
        for name in params.MODALITY_CHOICES:
            self.modality_combo.addItem(name, name)
        self.tumor_type = QtWidgets.QComboBox()
        for name, label_id in maisi_labels.TUMOR_TYPES.items():
            self.tumor_type.addItem(f"{name} ({maisi_labels.name_of(label_id)})", name)
        self.margin = QtWidgets.QDoubleSpinBox()
        self.margin.setRange(0.0, 50.0)
        self.margin.setValue(10.0)
        self.margin.setSuffix(" mm")

        self.generate_button = QtWidgets.QPushButton("Generate")
        self.generate_button.setObjectName("generateButton")
        self.inpaint_button = QtWidgets.QPushButton("Inpaint tumor")
        self.inpaint_button.setObjectName("inpaintButton")
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setEnabled(False)
        self.generate_button.clicked.connect(self.generateClicked.emit)
        self.inpaint_button.clicked.connect(self.inpaintClicked.emit)
        self.cancel_button.clicked.connect(self.cancelClicked.emit)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setObjectName("progressBar")
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.stage_label = QtWidgets.QLabel("Idle")
        self.stage_label.setObjectName("stageLabel")
        self.stage_label.setWordWrap(True)

        model_box = QtWidgets.QGroupBox("Model")
        model_form = QtWidgets.QFormLayout(model_box)
        model_form.addRow("Model", self.model_combo)
        model_form.addRow(self.weights_label)
        model_form.addRow(self.download_button)
        compute_box = QtWidgets.QGroupBox("Compute")
        compute_form = QtWidgets.QFormLayout(compute_box)
        compute_form.addRow("Run on", self.run_on_combo)
        compute_form.addRow("Server URL", self.server_url)
        compute_form.addRow("Token file", token_row)
        compute_form.addRow(self.test_connection_button)
        compute_form.addRow(self.connection_label)
        grid_box = QtWidgets.QGroupBox("Generate")
        grid_form = QtWidgets.QFormLayout(grid_box)
        grid_form.addRow("Labels from", self.source_combo)
        grid_form.addRow("Template region", self.template_region)
        grid_form.addRow(self.use_mask_grid)
        grid_form.addRow("Size (voxels)", size_row)
        grid_form.addRow("Spacing (mm)", spacing_row)
        grid_form.addRow(self.fov_label)
        grid_form.addRow(self.check_label)
        grid_form.addRow("Body region", self.region_combo)
        grid_form.addRow("Seed", seed_box)
        grid_form.addRow("Steps", self.steps)
        grid_form.addRow("Device", self.device_combo)
        grid_form.addRow("Modality", self.modality_combo)
        inpaint_box = QtWidgets.QGroupBox("Inpaint (CT + painted tumor)")
        inpaint_form = QtWidgets.QFormLayout(inpaint_box)
        inpaint_form.addRow("Tumor type", self.tumor_type)
        inpaint_form.addRow("Margin", self.margin)
        self.run_buttons = QtWidgets.QWidget()  # placed by the window under the scrolled settings
        self.run_buttons.setObjectName("runButtons")
        buttons = QtWidgets.QHBoxLayout(self.run_buttons)
        buttons.setContentsMargins(0, 4, 0, 0)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.inpaint_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(compute_box)
        layout.addWidget(model_box)
        layout.addWidget(grid_box)
        layout.addWidget(self.mask_box)
        layout.addWidget(inpaint_box)
        layout.addStretch(1)
        # progress, stage_label and cancel_button are shown by the window's always-visible status area
        for form in (model_form, compute_form, grid_form, inpaint_form):
            form.setRowWrapPolicy(QtWidgets.QFormLayout.WrapLongRows)

        self.source_combo.currentTextChanged.connect(lambda _t: (self._sync_enabled(), self._check()))
        self.use_mask_grid.toggled.connect(lambda _b: (self._sync_enabled(), self._check()))
        self._model_changed()
        self._sync_enabled()

    # -- model ------------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        data = self.model_combo.currentData()
        return str(data) if data else self.model_combo.currentText()

    def set_model(self, model: str | Path) -> None:
        """Choose a shipped model by name or a model directory by path."""
        text = str(model)
        index = self.model_combo.findText(text)
        if index < 0 or text == OTHER_MODEL:
            index = self.model_combo.findData(text)
        if index < 0:
            index = self.model_combo.count() - 1
            self.model_combo.insertItem(index, Path(text).name, text)
        self.model_combo.setCurrentIndex(index)

    def _model_activated(self, index: int) -> None:
        if self.model_combo.itemText(index) != OTHER_MODEL:
            return
        if self.on_server:  # the folder is on the server's disk, which this computer cannot browse
            folder, accepted = QtWidgets.QInputDialog.getText(self, "Model folder", "Model folder on the server:")
            folder = folder.strip() if accepted else ""
        else:
            folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Model folder (holding preset.json)")
        if folder:
            self.set_model(folder)
        else:
            self.model_combo.setCurrentIndex(0)

    def _model_changed(self) -> None:
        if self.model_combo.currentText() == OTHER_MODEL:
            return
        self.refresh_weights_status()
        try:
            preset = load_preset(self.model)
        except MaisiError:
            return
        if not self.use_mask_grid.isChecked() or self._mask_grid is None:
            for box, value in zip(self.size_boxes, preset.default_size):
                box.setValue(int(value))
            for box, value in zip(self.spacing_boxes, preset.default_spacing):
                box.setValue(float(value))
        for box in self.size_boxes:
            box.setSingleStep(preset.size_divisor)
        self._check()

    def refresh_weights_status(self) -> bool:
        if self.on_server:
            ready, downloadable, text = True, False, "Weights: on the server (checked when a job starts)"
        else:
            ready, downloadable, text = weights_summary(self.model)
        self.weights_ready = ready
        self.weights_label.setText(text)
        self.weights_label.setStyleSheet("" if ready else "color: #c0392b;")
        self.download_button.setVisible(downloadable)
        self._sync_enabled()
        return ready

    # -- grid -------------------------------------------------------------------------------------
    def set_mask_grid(self, shape: tuple[int, int, int] | None, spacing: tuple[float, float, float] | None) -> None:
        """The grid of the label map in the views (shown when 'use the label map's grid' is ticked)."""
        self._mask_grid = None if shape is None or spacing is None else (tuple(shape), tuple(spacing))  # type: ignore[assignment]
        if self._mask_grid is not None and self.use_mask_grid.isChecked():
            for box, value in zip(self.size_boxes, self._mask_grid[0]):
                box.setValue(int(value))
            for box, value in zip(self.spacing_boxes, self._mask_grid[1]):
                box.setValue(round(float(value), 2))
        self._sync_enabled()
        self._check()

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(b.value() for b in self.size_boxes)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(b.value() for b in self.spacing_boxes)  # type: ignore[return-value]

    @property
    def from_template(self) -> bool:
        return self.source_combo.currentText() == SOURCE_TEMPLATE

    def uses_mask_grid(self) -> bool:
        return self.source_combo.currentText() == SOURCE_LABELS and self.use_mask_grid.isChecked()

    def _check(self) -> None:
        self.fov_label.setText(params.field_of_view_text(self.size, self.spacing))
        self.mask_box.set_grid(self.size, self.spacing)
        try:
            preset = load_preset(self.model)
        except MaisiError as exc:
            if self.on_server:  # a model folder may exist only on the server, which checks it
                self.settings_ok = True
                self.check_label.setText("The server checks this model when the job starts.")
                self.check_label.setStyleSheet("color: #b9770e;")
                self._sync_enabled()
                return
            self.check_label.setText(exc.one_line())
            self.check_label.setStyleSheet("color: #c0392b;")
            return
        check = self.settings_check(preset)
        self.settings_ok = check.ok
        self.check_label.setText(check.text())
        self.check_label.setStyleSheet("color: #c0392b;" if check.errors else "color: #b9770e;" if check.warnings else "")
        self._sync_enabled()

    def settings_check(self, preset: Preset) -> params.SettingsCheck:
        """The engine's checks of the grid to generate; a label map's grid the model does not take is fitted
        (by the engine from the exact grid when 'use the label map's grid' is ticked), a template's refused."""
        labels = not self.from_template
        if self.uses_mask_grid() and self._mask_grid is not None:
            return params.check_size_and_spacing(preset, *self._mask_grid, label_map=True)
        return params.check_size_and_spacing(preset, self.size, self.spacing, label_map=labels)

    def _sync_enabled(self) -> None:
        template = self.source_combo.currentText() == SOURCE_TEMPLATE
        self.template_region.setEnabled(template and not self._running)
        self.use_mask_grid.setEnabled(self.source_combo.currentText() == SOURCE_LABELS and not self._running)
        self.mask_box.setVisible(self.source_combo.currentText() == SOURCE_GENERATED)
        self.mask_box.set_running(self._running)
        manual = not self.uses_mask_grid()
        for box in (*self.size_boxes, *self.spacing_boxes):
            box.setEnabled(manual and not self._running)
        ready = getattr(self, "weights_ready", False) and getattr(self, "settings_ok", True)
        self.generate_button.setEnabled(ready and not self._running)
        self.inpaint_button.setEnabled(ready and not self._running)
        self.download_button.setEnabled(not self._running)
        self.cancel_button.setEnabled(self._running)
        server = self.on_server
        for widget in (self.server_url, self.token_file, self.token_browse, self.test_connection_button):
            widget.setEnabled(server and not self._running)
        self.run_on_combo.setEnabled(not self._running)

    # -- where jobs run ---------------------------------------------------------------------------
    @property
    def on_server(self) -> bool:
        return self.run_on_combo.currentData() == SERVER

    def execution_settings(self) -> ExecutionSettings:
        """What the Compute box says: this computer, or a server's URL and token file (not the token)."""
        return ExecutionSettings.from_values(str(self.run_on_combo.currentData() or LOCAL), self.server_url.text(),
                                             self.token_file.text())

    def set_execution_settings(self, settings: ExecutionSettings) -> None:
        blockers = [QtCore.QSignalBlocker(w) for w in (self.run_on_combo, self.server_url, self.token_file)]
        self.run_on_combo.setCurrentIndex(max(0, self.run_on_combo.findData(settings.mode)))
        self.server_url.setText(settings.url)
        self.token_file.setText(settings.token_file)
        del blockers
        self._execution_edited()

    def set_connection_status(self, text: str, ok: bool) -> None:
        self.connection_label.setText(text)
        self.connection_label.setStyleSheet("color: #1e8449;" if ok else "color: #c0392b;")

    def _choose_token_file(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "File holding the server's access token",
                                                        self.token_file.text())
        if path:
            self.token_file.setText(path)
            self._execution_edited()

    def _execution_edited(self) -> None:
        self.connection_label.clear()
        self.refresh_weights_status()
        self._check()
        self.executionChanged.emit()

    # -- jobs -------------------------------------------------------------------------------------
    def generate_job(self, output_dir: Path, mask: Path | None) -> dict[str, Any]:
        """The worker job for the current settings; `mask` is the label map written for it."""
        template = self.source_combo.currentText() == SOURCE_TEMPLATE
        grid_from_mask = self.uses_mask_grid()
        size, spacing = self.size, self.spacing
        if not template and not grid_from_mask:  # a chosen grid the model does not take: the fitted one announced
            try:
                size, spacing = self.settings_check(load_preset(self.model)).fitted_grid or (size, spacing)
            except MaisiError:
                pass  # a model folder only the server has: it checks the grid
        return params.generate_job(
            self.model, output_dir,
            mask=None if template else mask,
            template_region=self.template_region.currentText() if template else None,
            size=None if grid_from_mask else size,
            spacing=None if grid_from_mask else spacing,
            region=self.region_combo.currentText(),
            seed=self.seed.value(),
            steps=self.steps.value() or None,
            device=self.device_combo.currentText(),
            modality=self.modality_combo.currentData() or None,
        )

    def mask_job(self, output_dir: Path) -> dict[str, Any]:
        """The worker's generate-mask job: the sliders' anatomy sizes, a map on the grid set above."""
        return mask_request.generate_mask_job(
            output_dir, self.mask_box.request(), model=self.mask_box.model_argument(), size=self.size,
            spacing=self.spacing, region=self.region_combo.currentText(), seed=self.mask_box.seed.value(),
            device=self.device_combo.currentText())

    def inpaint_job(self, output_dir: Path, image: Path, labels: Path, tumor: Path) -> dict[str, Any]:
        return params.inpaint_job(
            self.model, output_dir, image=image, labels=labels, tumor=tumor,
            tumor_type=str(self.tumor_type.currentData()), seed=self.seed.value(),
            steps=self.steps.value() or None, device=self.device_combo.currentText(),
            margin_mm=self.margin.value(), modality=self.modality_combo.currentData() or None,
        )

    @property
    def tumor_label(self) -> int:
        return maisi_labels.TUMOR_TYPES[str(self.tumor_type.currentData())]

    def set_running(self, running: bool) -> None:
        self._running = running
        if running:
            self.progress.setValue(0)
        self._sync_enabled()

    def set_progress(self, fraction: float, text: str) -> None:
        self.progress.setValue(int(round(max(0.0, min(1.0, fraction)) * 100)))
        self.stage_label.setText(text)
