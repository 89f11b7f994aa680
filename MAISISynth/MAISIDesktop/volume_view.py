"""The 3D view: label surfaces (VTK surface nets) and/or a volume rendering of the CT.

Surfaces are rebuilt from the shared label array, so after painting the 3D view is refreshed with a
short delay (the main window debounces it) rather than on every dab. Body (id 200) is left out of the
surfaces, since it would hide every organ inside it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PyQt5 import QtWidgets
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPiecewiseFunction
from vtkmodules.vtkFiltersCore import vtkSurfaceNets3D
from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkColorTransferFunction,
    vtkPolyDataMapper,
    vtkVolume,
    vtkVolumeProperty,
)
from vtkmodules.vtkRenderingVolumeOpenGL2 import vtkSmartVolumeMapper

from MAISIEngine import labels as maisi_labels
from MAISIDesktop.overlay import image_data_from_array, label_lookup_table
from MAISIDesktop.vtk_canvas import VtkCanvas

MODES = ("Labels + CT", "Labels", "CT")
MAX_3D_VOXELS = 8_000_000
"""Above this many voxels the 3D view works on every second voxel, to stay interactive."""


def ct_colours() -> vtkColorTransferFunction:
    colors = vtkColorTransferFunction()
    colors.AddRGBPoint(-1000, 0.0, 0.0, 0.0)
    colors.AddRGBPoint(-100, 0.55, 0.35, 0.25)
    colors.AddRGBPoint(80, 0.85, 0.55, 0.45)
    colors.AddRGBPoint(300, 0.95, 0.9, 0.8)
    colors.AddRGBPoint(1500, 1.0, 1.0, 1.0)
    return colors


def ct_opacity(with_soft_tissue: bool) -> vtkPiecewiseFunction:
    """Opacity over HU: bone opaque; soft tissue faint only when the CT is shown alone.

    Beside label surfaces only bone is drawn, otherwise the soft tissue haze would hide the organs.
    """
    opacity = vtkPiecewiseFunction()
    opacity.AddPoint(-1000, 0.0)
    if with_soft_tissue:
        opacity.AddPoint(-200, 0.0)
        opacity.AddPoint(0, 0.015)
        opacity.AddPoint(150, 0.03)
    else:
        opacity.AddPoint(150, 0.0)
    opacity.AddPoint(300, 0.35)
    opacity.AddPoint(1500, 0.8)
    return opacity


def surface_label_ids(present: Iterable[int], hidden: Iterable[int]) -> list[int]:
    """The ids drawn as surfaces: present, visible, not background or body."""
    hidden_ids = set(int(v) for v in hidden)
    return sorted(int(v) for v in present if v not in (0, maisi_labels.BODY) and v not in hidden_ids)


class VolumeView(QtWidgets.QWidget):
    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = VtkCanvas(self)
        self.renderer = self.canvas.renderer
        self.renderer.SetBackground(0.08, 0.09, 0.12)
        self.canvas.SetInteractorStyle(vtkInteractorStyleTrackballCamera())
        self.mode_combo = QtWidgets.QComboBox()
        self.mode_combo.addItems(MODES)
        self.mode_combo.setObjectName("threeDMode")
        self.mode_combo.currentTextChanged.connect(self._apply_mode)
        header = QtWidgets.QHBoxLayout()
        header.setContentsMargins(2, 0, 2, 0)
        header.addWidget(QtWidgets.QLabel("3D"))
        header.addStretch(1)
        header.addWidget(self.mode_combo)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(1)
        layout.addLayout(header)
        layout.addWidget(self.canvas, 1)

        self._surface_lut = label_lookup_table()
        self._surface_lut.SetNumberOfTableValues(256)
        self._nets = vtkSurfaceNets3D()
        self._nets.SetOutputMeshTypeToTriangles()
        self._nets.SetNumberOfIterations(20)
        self._surface_mapper = vtkPolyDataMapper()
        self._surface_mapper.SetLookupTable(self._surface_lut)
        self._surface_mapper.SetScalarModeToUseCellData()
        self._surface_mapper.SetColorModeToMapScalars()
        self._surface_mapper.UseLookupTableScalarRangeOn()
        self._surface_actor = vtkActor()
        self._surface_actor.SetMapper(self._surface_mapper)
        self._surface_actor.GetProperty().SetSpecular(0.2)
        self.renderer.AddActor(self._surface_actor)

        self._volume_mapper = vtkSmartVolumeMapper()
        self._volume = vtkVolume()
        self._volume.SetMapper(self._volume_mapper)
        volume_property = vtkVolumeProperty()
        volume_property.SetColor(ct_colours())
        volume_property.SetScalarOpacity(ct_opacity(with_soft_tissue=False))
        volume_property.SetInterpolationTypeToLinear()
        volume_property.ShadeOn()
        self._volume.SetProperty(volume_property)
        self._volume.VisibilityOff()
        self.renderer.AddVolume(self._volume)
        self._has_ct = False
        self._stride = 1
        self._spacing = (1.0, 1.0, 1.0)
        self.surface_cell_count = 0

    def set_study(self, labels: np.ndarray, ct: np.ndarray | None, spacing, hidden: Iterable[int]) -> None:
        """Show a new study and point the camera at it from the front (anterior), head up."""
        self._stride = 2 if labels.size > MAX_3D_VOXELS else 1
        self._spacing = tuple(float(s) * self._stride for s in spacing)
        self._has_ct = ct is not None
        if ct is not None:
            self._volume_mapper.SetInputData(self._image(ct))
        self.update_labels(labels, hidden)
        self._apply_mode(self.mode_combo.currentText(), draw=False)
        self.reset_camera()

    def _image(self, array: np.ndarray) -> vtkImageData:
        s = self._stride
        sampled = np.asfortranarray(array[::s, ::s, ::s]) if s > 1 else array
        return image_data_from_array(sampled, self._spacing)

    def update_labels(self, labels: np.ndarray, hidden: Iterable[int]) -> None:
        """Rebuild the surfaces of the visible labels from the current label array."""
        present = np.flatnonzero(np.bincount(labels.reshape(-1, order="F"), minlength=256))
        ids = surface_label_ids(present, hidden)
        self._nets.SetInputData(self._image(labels))
        self._nets.SetNumberOfLabels(len(ids))
        for n, label_id in enumerate(ids):
            self._nets.SetLabel(n, float(label_id))
        if not ids:
            self._surface_actor.VisibilityOff()
            self.surface_cell_count = 0
            return
        self._nets.Update()
        surface = self._nets.GetOutput()
        self.surface_cell_count = surface.GetNumberOfCells()
        boundary = surface.GetCellData().GetArray("BoundaryLabels")
        if boundary is not None and self.surface_cell_count:
            pairs = numpy_support.vtk_to_numpy(boundary).reshape(-1, 2).astype(np.int64)
            shown = np.isin(pairs[:, 0], ids)
            colour_ids = np.where(shown, pairs[:, 0], pairs[:, 1]).astype(np.uint8)
            scalars = numpy_support.numpy_to_vtk(colour_ids, deep=True)
            scalars.SetName("label")
            surface.GetCellData().SetScalars(scalars)
        self._surface_mapper.SetInputData(surface)
        self._surface_actor.SetVisibility(self.mode_combo.currentText() != "CT")

    def _apply_mode(self, mode: str, draw: bool = True) -> None:
        self._surface_actor.SetVisibility(mode != "CT" and self.surface_cell_count > 0)
        self._volume.SetVisibility(mode != "Labels" and self._has_ct)
        self._volume.GetProperty().SetScalarOpacity(ct_opacity(with_soft_tissue=mode == "CT"))
        if draw:
            self.canvas.draw()

    def reset_camera(self) -> None:
        camera = self.renderer.GetActiveCamera()
        camera.SetFocalPoint(0.0, 0.0, 0.0)
        camera.SetPosition(0.0, 1.0, 0.0)
        camera.SetViewUp(0.0, 0.0, 1.0)
        self.renderer.ResetCamera()
        camera.Zoom(1.3)
        self.renderer.ResetCameraClippingRange()

    def draw(self) -> None:
        self.canvas.draw()

    def capture(self) -> np.ndarray:
        return self.canvas.capture()

    def close_view(self) -> None:
        self.canvas.close()


