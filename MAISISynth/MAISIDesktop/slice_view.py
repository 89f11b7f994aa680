"""One slice view (axial, sagittal or coronal): CT under the label overlay, crosshair, brush cursor.

The display frame is the voxel grid scaled by the spacing (voxel (0, 0, 0) at the origin); since the
study is held in closest-canonical RAS order, the cameras below give the radiological convention:
axial and coronal views show patient right on the screen's left, the sagittal view faces left.
Letters at the edges of each view (R/L/A/P/S/I) say which patient direction lies there, computed
from the camera, so they stay right if the cameras change.
"""

from __future__ import annotations

import numpy as np
from PyQt5 import QtCore, QtWidgets
from vtkmodules.vtkCommonCore import vtkLookupTable, vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkImageData, vtkPolyData
from vtkmodules.vtkFiltersSources import vtkRegularPolygonSource
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkTextActor,
    vtkImageProperty,
    vtkImageSlice,
    vtkImageSliceMapper,
    vtkPolyDataMapper,
)
from vtkmodules.vtkRenderingImage import vtkImageStack

from MAISIDesktop.vtk_canvas import VtkCanvas

ORIENTATION_AXIS = {"axial": 2, "sagittal": 0, "coronal": 1}
"""View name -> the voxel axis it slices across."""

CAMERA = {
    "axial": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "coronal": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "sagittal": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
}
"""View name -> (direction of projection, view up) in the display frame (RAS-aligned axes)."""

AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))
"""Display-frame axis -> (letter of its negative end, letter of its positive end) in RAS."""
EDGES = {"left": (0.012, 0.5), "right": (0.988, 0.5), "top": (0.5, 0.975), "bottom": (0.5, 0.025)}
"""Edge of the view -> where its orientation letter sits (normalised viewport coordinates)."""


def direction_letter(vector) -> str:
    """The patient direction (R/L/A/P/S/I) closest to a display-frame direction."""
    vector = np.asarray(vector, dtype=float)
    axis = int(np.argmax(np.abs(vector)))
    return AXIS_LETTERS[axis][1 if vector[axis] > 0 else 0]


def edge_letters(orientation: str) -> dict[str, str]:
    """Edge -> patient direction shown there, from the view's camera."""
    direction, up = (np.asarray(v, dtype=float) for v in CAMERA[orientation])
    right = np.cross(direction, up)
    return {"left": direction_letter(-right), "right": direction_letter(right),
            "top": direction_letter(up), "bottom": direction_letter(-up)}


TOOLS = ("navigate", "brush", "eraser", "tumor")
CROSSHAIR_COLOR = (1.0, 0.85, 0.1)
BRUSH_COLOR = (0.3, 1.0, 0.3)

_LEFT = int(QtCore.Qt.LeftButton)
_MIDDLE = int(QtCore.Qt.MiddleButton)
_RIGHT = int(QtCore.Qt.RightButton)
_SHIFT = int(QtCore.Qt.ShiftModifier)
_CTRL = int(QtCore.Qt.ControlModifier)


class SliceView(QtWidgets.QWidget):
    """A VTK slice view with a slider; emits voxel positions for picking and painting."""

    positionPicked = QtCore.pyqtSignal(object)  # (i, j, k) floats
    strokeStarted = QtCore.pyqtSignal(object)
    strokeMoved = QtCore.pyqtSignal(object)
    strokeFinished = QtCore.pyqtSignal()
    tumorClicked = QtCore.pyqtSignal(object)
    hovered = QtCore.pyqtSignal(object)
    sliceChanged = QtCore.pyqtSignal(str, int)
    windowLevelDragged = QtCore.pyqtSignal(float, float)  # change of window, change of level (HU)

    def __init__(self, orientation: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        if orientation not in ORIENTATION_AXIS:
            raise ValueError(f"orientation must be one of {tuple(ORIENTATION_AXIS)}")
        self.orientation = orientation
        self.axis = ORIENTATION_AXIS[orientation]
        self.tool = "navigate"
        self.brush_radius_mm = 5.0
        self.shape: tuple[int, int, int] | None = None
        self.spacing = (1.0, 1.0, 1.0)
        self.slice_index = 0
        self.crosshair = np.zeros(3)
        self.show_crosshair = True
        self._painting = False
        self._drag: tuple[int, int, int, float] | None = None  # button, x, y, start camera value
        self._level_drag: tuple[int, int] | None = None  # last (x, y) of a Ctrl+left drag
        self.affine = np.eye(4)

        self.canvas = VtkCanvas(self, handle_mouse=True)
        self.renderer = self.canvas.renderer
        self.renderer.SetBackground(0.0, 0.0, 0.0)
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.title = QtWidgets.QLabel(orientation.capitalize())
        self.title.setObjectName(f"{orientation}Title")
        self.position_label = QtWidgets.QLabel("")
        self.slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(self._slider_moved)

        header = QtWidgets.QHBoxLayout()
        header.setContentsMargins(2, 0, 2, 0)
        header.addWidget(self.title)
        header.addStretch(1)
        header.addWidget(self.position_label)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(1)
        layout.addLayout(header)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.slider)

        self._ct_mapper, self._ct_slice = self._make_layer(0)
        self._label_mapper, self._label_slice = self._make_layer(1)
        self._ct_slice.GetProperty().SetInterpolationTypeToLinear()
        self._label_slice.GetProperty().SetInterpolationTypeToNearest()
        self._label_slice.GetProperty().UseLookupTableScalarRangeOn()
        self._stack = vtkImageStack()
        self._crosshair_points = vtkPoints()
        self._crosshair_actor = self._make_crosshair()
        self._brush_source = vtkRegularPolygonSource()
        self._brush_actor = self._make_brush_cursor()
        self.letters = edge_letters(orientation)
        self.letter_actors = {edge: self._make_letter(edge, letter) for edge, letter in self.letters.items()}

        self.canvas.pressed.connect(self._on_press)
        self.canvas.moved.connect(self._on_move)
        self.canvas.released.connect(self._on_release)
        self.canvas.wheeled.connect(self._on_wheel)
        self.canvas.keyed.connect(self._on_key)
        self.canvas.left.connect(self._hide_brush)

    # -- construction ---------------------------------------------------------------------------
    def _make_layer(self, layer: int) -> tuple[vtkImageSliceMapper, vtkImageSlice]:
        mapper = vtkImageSliceMapper()
        mapper.SetOrientation(self.axis)
        mapper.SliceAtFocalPointOff()
        mapper.SliceFacesCameraOff()
        mapper.BorderOn()
        actor = vtkImageSlice()
        actor.SetMapper(mapper)
        prop = vtkImageProperty()
        prop.SetLayerNumber(layer)
        actor.SetProperty(prop)
        return mapper, actor

    def _make_crosshair(self) -> vtkActor:
        for _ in range(4):
            self._crosshair_points.InsertNextPoint(0.0, 0.0, 0.0)
        lines = vtkCellArray()
        lines.InsertNextCell(2, [0, 1])
        lines.InsertNextCell(2, [2, 3])
        poly = vtkPolyData()
        poly.SetPoints(self._crosshair_points)
        poly.SetLines(lines)
        mapper = vtkPolyDataMapper()
        mapper.SetInputData(poly)
        actor = vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*CROSSHAIR_COLOR)
        actor.GetProperty().SetOpacity(0.7)
        actor.PickableOff()
        actor.VisibilityOff()
        self.renderer.AddActor(actor)
        return actor

    def _make_letter(self, edge: str, letter: str) -> vtkTextActor:
        actor = vtkTextActor()
        actor.SetInput(letter)
        prop = actor.GetTextProperty()
        prop.SetFontSize(16)
        prop.BoldOn()
        prop.SetColor(0.95, 0.85, 0.35)
        prop.SetJustification({"left": 0, "right": 2}.get(edge, 1))
        prop.SetVerticalJustification({"top": 2, "bottom": 0}.get(edge, 1))
        coordinate = actor.GetPositionCoordinate()
        coordinate.SetCoordinateSystemToNormalizedViewport()
        coordinate.SetValue(*EDGES[edge])
        actor.PickableOff()
        self.renderer.AddViewProp(actor)
        return actor

    def _make_brush_cursor(self) -> vtkActor:
        self._brush_source.SetNumberOfSides(48)
        self._brush_source.GeneratePolygonOff()
        self._brush_source.SetNormal(*CAMERA[self.orientation][0])
        mapper = vtkPolyDataMapper()
        mapper.SetInputConnection(self._brush_source.GetOutputPort())
        actor = vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*BRUSH_COLOR)
        actor.PickableOff()
        actor.VisibilityOff()
        self.renderer.AddActor(actor)
        return actor

    # -- data -------------------------------------------------------------------------------------
    def set_images(self, ct: vtkImageData | None, labels: vtkImageData, lookup_table: vtkLookupTable) -> None:
        """Show a new study: `labels` (and `ct` when there is one) share the display frame."""
        self.renderer.RemoveViewProp(self._stack)
        self._stack = vtkImageStack()
        if ct is not None:
            self._ct_mapper.SetInputData(ct)
            self._stack.AddImage(self._ct_slice)
        self._label_mapper.SetInputData(labels)
        self._label_slice.GetProperty().SetLookupTable(lookup_table)
        self._stack.AddImage(self._label_slice)
        self._stack.SetActiveLayer(1)
        self.renderer.AddViewProp(self._stack)
        self.shape = tuple(int(v) for v in labels.GetDimensions())  # type: ignore[assignment]
        self.spacing = tuple(float(v) for v in labels.GetSpacing())  # type: ignore[assignment]
        count = self.shape[self.axis]
        self.slider.blockSignals(True)
        self.slider.setRange(0, count - 1)
        self.slider.setEnabled(True)
        self.slider.blockSignals(False)
        self.set_slice(count // 2, notify=False)
        self.fit()

    def set_ct_image(self, ct: vtkImageData) -> None:
        """Show another CT on the same grid (the before/after toggle) without moving the view."""
        self._ct_mapper.SetInputData(ct)

    def camera_state(self) -> tuple:
        camera = self.renderer.GetActiveCamera()
        return camera.GetFocalPoint(), camera.GetPosition(), camera.GetViewUp(), camera.GetParallelScale()

    def restore_camera(self, state: tuple) -> None:
        camera = self.renderer.GetActiveCamera()
        focal, position, up, scale = state
        camera.SetFocalPoint(*focal)
        camera.SetPosition(*position)
        camera.SetViewUp(*up)
        camera.SetParallelScale(scale)
        self.renderer.ResetCameraClippingRange()

    def set_affine(self, affine: np.ndarray) -> None:
        """Voxel -> RAS millimetres of the study, for the slice position in mm."""
        self.affine = np.asarray(affine, dtype=float)
        self._show_position()

    def slice_position_mm(self) -> float:
        """The world coordinate (RAS mm) of the slice along this view's axis."""
        ijk = np.zeros(3)
        ijk[self.axis] = self.slice_index
        return float((self.affine @ np.append(ijk, 1.0))[self.axis])

    def _show_position(self) -> None:
        if self.shape is None:
            self.position_label.setText("")
            return
        letter = "RAS"[self.axis]
        self.position_label.setText(f"{letter} {self.slice_position_mm():.1f} mm   "
                                    f"{'ijk'[self.axis]} {self.slice_index} / {self.shape[self.axis] - 1}")

    def set_window_level(self, window: float, level: float) -> None:
        prop = self._ct_slice.GetProperty()
        prop.SetColorWindow(window)
        prop.SetColorLevel(level)

    def set_overlay_opacity(self, opacity: float) -> None:
        self._label_slice.GetProperty().SetOpacity(float(opacity))

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}")
        self.tool = tool
        if tool not in ("brush", "eraser"):
            self._hide_brush()

    # -- geometry ---------------------------------------------------------------------------------
    def _extent_mm(self) -> np.ndarray:
        assert self.shape is not None
        return np.asarray(self.shape, dtype=float) * np.asarray(self.spacing)

    def fit(self) -> None:
        """Centre the slice and zoom so that the whole plane fits the view."""
        if self.shape is None:
            return
        direction, up = (np.asarray(v) for v in CAMERA[self.orientation])
        extent = self._extent_mm()
        center = (np.asarray(self.shape, dtype=float) - 1) / 2.0 * np.asarray(self.spacing)
        camera = self.renderer.GetActiveCamera()
        distance = float(extent.max()) * 2.0 + 100.0
        camera.SetFocalPoint(*center)
        camera.SetPosition(*(center - direction * distance))
        camera.SetViewUp(*up)
        in_plane = [a for a in range(3) if a != self.axis]
        vertical_axis = int(np.argmax(np.abs(up)))
        horizontal_axis = next(a for a in in_plane if a != vertical_axis)
        width, height = extent[horizontal_axis], extent[vertical_axis]
        size = self.canvas.GetRenderWindow().GetSize()
        aspect = (size[0] / size[1]) if size[1] > 0 else 1.0
        camera.SetParallelScale(max(height / 2.0, width / 2.0 / max(aspect, 1e-3)) * 1.02)
        self.renderer.ResetCameraClippingRange()

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        QtCore.QTimer.singleShot(0, self._refit_and_draw)

    def _refit_and_draw(self) -> None:
        self.fit()
        self.canvas.draw()

    def set_slice(self, index: int, notify: bool = True) -> None:
        if self.shape is None:
            return
        index = int(np.clip(index, 0, self.shape[self.axis] - 1))
        changed = index != self.slice_index
        self.slice_index = index
        self._ct_mapper.SetSliceNumber(index)
        self._label_mapper.SetSliceNumber(index)
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self._show_position()
        self._update_crosshair_actor()
        if notify and changed:
            self.sliceChanged.emit(self.orientation, index)

    def set_crosshair(self, ijk) -> None:
        self.crosshair = np.asarray(ijk, dtype=float)
        self._update_crosshair_actor()

    def _toward_camera(self) -> np.ndarray:
        """A small offset that puts lines drawn on the slice in front of it."""
        return -np.asarray(CAMERA[self.orientation][0]) * min(self.spacing) * 0.5

    def _update_crosshair_actor(self) -> None:
        if self.shape is None:
            return
        spacing = np.asarray(self.spacing)
        point = self.crosshair * spacing
        point[self.axis] = self.slice_index * spacing[self.axis]
        point = point + self._toward_camera()
        extent_lo = -0.5 * spacing
        extent_hi = (np.asarray(self.shape) - 0.5) * spacing
        in_plane = [a for a in range(3) if a != self.axis]
        for line, axis in enumerate(in_plane):
            start, end = point.copy(), point.copy()
            start[axis], end[axis] = extent_lo[axis], extent_hi[axis]
            self._crosshair_points.SetPoint(2 * line, *start)
            self._crosshair_points.SetPoint(2 * line + 1, *end)
        self._crosshair_points.Modified()
        self._crosshair_actor.SetVisibility(self.show_crosshair)

    def voxel_at(self, x: int, y: int) -> np.ndarray | None:
        """Continuous (i, j, k) under a display pixel, on the current slice; None outside the volume."""
        if self.shape is None:
            return None
        self.renderer.SetDisplayPoint(float(x), float(y), 0.0)
        self.renderer.DisplayToWorld()
        world = np.asarray(self.renderer.GetWorldPoint(), dtype=float)
        if world[3] == 0:
            return None
        ijk = world[:3] / world[3] / np.asarray(self.spacing)
        ijk[self.axis] = self.slice_index
        rounded = np.round(ijk)
        if np.any(rounded < 0) or np.any(rounded > np.asarray(self.shape) - 1):
            return None
        return ijk

    def display_of(self, ijk) -> tuple[int, int]:
        """(column, row) of a voxel's centre in `capture()` pixels (row 0 at the top)."""
        world = np.asarray(ijk, dtype=float) * np.asarray(self.spacing)
        self.renderer.SetWorldPoint(*world, 1.0)
        self.renderer.WorldToDisplay()
        x, y, _ = self.renderer.GetDisplayPoint()
        height = self.canvas.GetRenderWindow().GetSize()[1]
        return int(round(x)), int(round(height - 1 - y))

    def capture(self) -> np.ndarray:
        return self.canvas.capture()

    # -- mouse ------------------------------------------------------------------------------------
    def _on_press(self, x: int, y: int, button: int, modifiers: int) -> None:
        self.canvas.setFocus()
        if button == _LEFT and modifiers & _CTRL:
            self._level_drag = (x, y)
            return
        if button == _LEFT:
            ijk = self.voxel_at(x, y)
            if ijk is None:
                return
            if self.tool == "navigate" or modifiers & _SHIFT:
                self.positionPicked.emit(ijk)
            elif self.tool in ("brush", "eraser"):
                self._painting = True
                self.strokeStarted.emit(ijk)
            elif self.tool == "tumor":
                self.tumorClicked.emit(ijk)
        elif button in (_MIDDLE, _RIGHT):
            camera = self.renderer.GetActiveCamera()
            self._drag = (button, x, y, camera.GetParallelScale())

    def _on_move(self, x: int, y: int, buttons: int, modifiers: int) -> None:
        if self._drag is not None:
            self._drag_camera(x, y)
            return
        if self._level_drag is not None:
            x0, y0 = self._level_drag
            self._level_drag = (x, y)
            # As in Slicer: right widens the window, up raises the level (4 HU per pixel, 2 HU per pixel).
            self.windowLevelDragged.emit(4.0 * (x - x0), 2.0 * (y - y0))
            return
        ijk = self.voxel_at(x, y)
        if self._painting and ijk is not None:
            self.strokeMoved.emit(ijk)
        elif self.tool == "navigate" and buttons & _LEFT and ijk is not None:
            self.positionPicked.emit(ijk)
        if ijk is not None:
            self.hovered.emit(ijk)
        self._show_brush(ijk)

    def _on_release(self, x: int, y: int, button: int, modifiers: int) -> None:
        if button == _LEFT and self._level_drag is not None:
            self._level_drag = None
            return
        if button == _LEFT and self._painting:
            self._painting = False
            self.strokeFinished.emit()
        if self._drag is not None and button == self._drag[0]:
            self._drag = None

    def _drag_camera(self, x: int, y: int) -> None:
        """Middle button pans, right button zooms (drag up to zoom in)."""
        assert self._drag is not None
        button, x0, y0, start_scale = self._drag
        camera = self.renderer.GetActiveCamera()
        if button == _RIGHT:
            camera.SetParallelScale(max(1.0, start_scale * float(np.exp(-(y - y0) / 200.0))))
        else:
            height = max(1, self.canvas.GetRenderWindow().GetSize()[1])
            mm_per_pixel = 2.0 * camera.GetParallelScale() / height
            view_up = np.asarray(camera.GetViewUp())
            right = np.cross(np.asarray(camera.GetDirectionOfProjection()), view_up)
            shift = -(right * (x - x0) + view_up * (y - y0)) * mm_per_pixel
            camera.SetFocalPoint(*(np.asarray(camera.GetFocalPoint()) + shift))
            camera.SetPosition(*(np.asarray(camera.GetPosition()) + shift))
            self._drag = (button, x, y, start_scale)
        self.renderer.ResetCameraClippingRange()
        self.canvas.draw()

    def _on_wheel(self, steps: int, modifiers: int) -> None:
        if modifiers & _CTRL:
            camera = self.renderer.GetActiveCamera()
            camera.SetParallelScale(max(1.0, camera.GetParallelScale() * (0.9**steps)))
            self.canvas.draw()
            return
        self.set_slice(self.slice_index + steps)
        self.canvas.draw()

    def _on_key(self, key: int, modifiers: int) -> None:
        moves = {
            int(QtCore.Qt.Key_Up): 1, int(QtCore.Qt.Key_Down): -1,
            int(QtCore.Qt.Key_PageUp): 10, int(QtCore.Qt.Key_PageDown): -10,
        }
        sideways = {int(QtCore.Qt.Key_Left): -1, int(QtCore.Qt.Key_Right): 1}
        if key in moves:
            self._on_wheel(moves[key], 0)
        elif key in sideways and self.shape is not None:
            # Left/Right move the cursor one voxel towards that side of the screen, within the slice.
            direction, up = (np.asarray(v, dtype=float) for v in CAMERA[self.orientation])
            right = np.cross(direction, up)
            axis = int(np.argmax(np.abs(right)))
            target = np.asarray(self.crosshair, dtype=float).copy()
            target[self.axis] = self.slice_index
            target[axis] = np.clip(target[axis] + sideways[key] * np.sign(right[axis]), 0, self.shape[axis] - 1)
            self.positionPicked.emit(target)
        elif key == int(QtCore.Qt.Key_R):
            self.fit()
            self.canvas.draw()

    def _slider_moved(self, value: int) -> None:
        self.set_slice(value)
        self.canvas.draw()

    def _show_brush(self, ijk: np.ndarray | None) -> None:
        visible = ijk is not None and self.tool in ("brush", "eraser")
        if visible:
            center = np.asarray(ijk) * np.asarray(self.spacing) + self._toward_camera()
            self._brush_source.SetCenter(*center)
            self._brush_source.SetRadius(self.brush_radius_mm)
        if visible or self._brush_actor.GetVisibility():
            self._brush_actor.SetVisibility(visible)
            self.canvas.draw()

    def _hide_brush(self) -> None:
        if self._brush_actor.GetVisibility():
            self._brush_actor.VisibilityOff()
            self.canvas.draw()

    def draw(self) -> None:
        self.canvas.draw()

    def close_view(self) -> None:
        self.canvas.close()
