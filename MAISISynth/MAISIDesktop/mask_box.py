"""The "Generated label map" box of the generate panel: anatomy-size sliders, tumor, mask model, seed.

What the sliders mean and how they become a job is `MAISISynthLib.mask_request`, shared with the Slicer
module: a ticked organ is asked at its slider's percentile, an unticked one comes from the model's size
database; the tumor is none or one kind with its size. "Generate label map" asks the window to run the
worker's generate-mask job on the panel's grid; the map then opens as the editable label map.
"""

from __future__ import annotations

from pathlib import Path

from PyQt5 import QtCore, QtWidgets

from MAISIDesktop.seed_row import seed_row
from MAISISynthLib import mask_request

SLIDER_STEPS = 100
"""Slider positions per unit of size: 0.01 resolution, as the percentile is shown with two decimals."""
MODEL_FOLDER_TEXT = "Model folder..."


class SizeSlider(QtWidgets.QWidget):
    """A horizontal slider over [0, 1] with its value shown beside it."""

    def __init__(self, name: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.slider.setObjectName(f"sizeSlider:{name}")
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setSingleStep(int(mask_request.SLIDER_STEP * SLIDER_STEPS))
        self.slider.setPageStep(10)
        self.slider.setValue(int(round(mask_request.DEFAULT_SIZE * SLIDER_STEPS)))
        self.slider.setToolTip(f"Size of the {name} as a percentile of the training population: "
                               "0 smallest, 0.5 typical, 1 largest")
        self.value_label = QtWidgets.QLabel()
        self.value_label.setMinimumWidth(self.value_label.fontMetrics().horizontalAdvance("0.00") + 4)
        self.slider.valueChanged.connect(lambda _v: self.value_label.setText(f"{self.value():.2f}"))
        self.value_label.setText(f"{self.value():.2f}")
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.slider, 1)
        row.addWidget(self.value_label)

    def value(self) -> float:
        return self.slider.value() / SLIDER_STEPS

    def set_value(self, size: float) -> None:
        self.slider.setValue(int(round(float(size) * SLIDER_STEPS)))


class GeneratedMapBox(QtWidgets.QGroupBox):
    generateMapClicked = QtCore.pyqtSignal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Generated label map", parent)
        self.setObjectName("generatedMapBox")
        self._folder = ""
        self._running = False
        self._grid: tuple[tuple[int, int, int], tuple[float, float, float]] | None = None
        self.model_combo = QtWidgets.QComboBox()
        self.model_combo.setObjectName("maskModelCombo")
        self.model_combo.addItems(mask_request.MASK_MODELS)
        self.model_combo.addItem(MODEL_FOLDER_TEXT, mask_request.MODEL_FOLDER)
        self.model_combo.setToolTip("mask-demo: the project's small demo model (shipped); mask-ct: NVIDIA's mask "
                                    "generator (`maisi weights download mask-generation`); or a trained model's folder")
        self.model_combo.activated.connect(self._model_activated)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._sync_enabled())
        self.use_boxes: dict[str, QtWidgets.QCheckBox] = {}
        self.sliders: dict[str, SizeSlider] = {}
        form = QtWidgets.QFormLayout(self)
        form.setRowWrapPolicy(QtWidgets.QFormLayout.WrapLongRows)
        form.addRow("Mask model", self.model_combo)
        for organ in mask_request.ORGANS:
            use = QtWidgets.QCheckBox(mask_request.structure_label(organ))
            use.setObjectName(f"useSize:{organ}")
            use.setToolTip(f"Constrain the size of the {organ}; unticked, it comes from the model's size database")
            slider = SizeSlider(organ)
            use.toggled.connect(lambda _b: self._sync_enabled())
            self.use_boxes[organ], self.sliders[organ] = use, slider
            form.addRow(use, slider)
        self.tumor_combo = QtWidgets.QComboBox()
        self.tumor_combo.setObjectName("maskTumorCombo")
        for choice in mask_request.TUMOR_CHOICES:
            self.tumor_combo.addItem(mask_request.structure_label(choice), choice)
        self.tumor_combo.setToolTip("One tumor kind in the generated map, or none (then paint your own into it)")
        self.tumor_combo.currentIndexChanged.connect(lambda _i: self._sync_enabled())
        self.tumor_size = SizeSlider("tumor")
        form.addRow("Tumor", self.tumor_combo)
        form.addRow("Tumor size", self.tumor_size)
        self.seed = QtWidgets.QSpinBox()
        self.seed.setObjectName("maskSeed")
        self.seed.setToolTip("The same seed, model and sizes give the same map")
        form.addRow("Map seed", seed_row(self.seed))
        self.generate_map_button = QtWidgets.QPushButton("Generate label map")
        self.generate_map_button.setObjectName("generateMapButton")
        self.generate_map_button.clicked.connect(self.generateMapClicked.emit)
        form.addRow(self.generate_map_button)
        self._sync_enabled()

    # -- model ------------------------------------------------------------------------------------
    @property
    def model_choice(self) -> str:
        return str(self.model_combo.currentData() or self.model_combo.currentText())

    def set_model_folder(self, folder: str | Path) -> None:
        """Use a trained mask model's folder (holding mask_preset.json)."""
        self._folder = str(folder)
        index = self.model_combo.findData(mask_request.MODEL_FOLDER)
        self.model_combo.setItemText(index, f"Folder: {Path(self._folder).name}")
        self.model_combo.setItemData(index, self._folder, QtCore.Qt.ToolTipRole)
        self.model_combo.setCurrentIndex(index)
        self._sync_enabled()

    def _model_activated(self, index: int) -> None:
        if self.model_combo.itemData(index) != mask_request.MODEL_FOLDER:
            return
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Mask model folder (holding mask_preset.json)",
                                                            self._folder)
        if folder:
            self.set_model_folder(folder)
        elif not self._folder:
            self.model_combo.setCurrentIndex(0)

    def model_argument(self) -> str:
        """The job's model (MaisiError when a folder is chosen but unusable)."""
        return mask_request.model_argument(self.model_choice, self._folder)

    # -- sizes ------------------------------------------------------------------------------------
    def request(self) -> mask_request.MaskRequest:
        sizes = {organ: (self.sliders[organ].value() if self.use_boxes[organ].isChecked() else None)
                 for organ in mask_request.ORGANS}
        return mask_request.MaskRequest(sizes, str(self.tumor_combo.currentData()), self.tumor_size.value())

    def set_request(self, request: mask_request.MaskRequest) -> None:
        """Show a request (e.g. the sizes a generated map's provenance records)."""
        for organ in mask_request.ORGANS:
            chosen = request.organ_sizes.get(organ)
            self.use_boxes[organ].setChecked(chosen is not None)
            self.sliders[organ].set_value(mask_request.DEFAULT_SIZE if chosen is None else chosen)
        self.tumor_combo.setCurrentIndex(max(0, self.tumor_combo.findData(request.tumor)))
        self.tumor_size.set_value(request.tumor_size)

    # -- state ------------------------------------------------------------------------------------
    def set_grid(self, size: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        """The grid the map will be drawn on (the panel's size and spacing), checked by the model's rule."""
        self._grid = (tuple(size), tuple(spacing))  # type: ignore[assignment]
        self._sync_enabled()

    def set_running(self, running: bool) -> None:
        self._running = running
        self._sync_enabled()

    def _sync_enabled(self) -> None:
        for organ, use in self.use_boxes.items():
            self.sliders[organ].setEnabled(use.isChecked())
        self.tumor_size.setEnabled(self.tumor_combo.currentData() != mask_request.NO_TUMOR)
        if self._grid is None:
            problem = mask_request.model_problem(self.model_choice, self._folder)
        else:
            problem = mask_request.grid_problem(self.model_choice, self._folder, *self._grid)
        self.generate_map_button.setEnabled(problem is None and not self._running)
        self.generate_map_button.setToolTip(problem or "Draw a label map with the mask-generation model on the grid "
                                                       "above; it opens as the label map you paint into")
