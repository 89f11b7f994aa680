"""The VTK render widget used by every view, with mouse events in VTK display coordinates.

Slice views handle the mouse themselves (scroll, pick, paint) rather than through a VTK interactor
style, so each gesture has exactly one meaning. `capture` reads the rendered pixels back through
`vtkWindowToImageFilter` (a `QWidget.grab` of a VTK widget returns stale or empty pixels).
"""

from __future__ import annotations

import numpy as np
import vtkmodules.vtkInteractionStyle  # noqa: F401  (registers the interactor styles)
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (text rendering)
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (the OpenGL render window)
from PyQt5 import QtCore
from vtkmodules.qt.QVTKRenderWindowInteractor import QVTKRenderWindowInteractor
from vtkmodules.util import numpy_support
from vtkmodules.vtkRenderingCore import vtkRenderer, vtkWindowToImageFilter


class VtkCanvas(QVTKRenderWindowInteractor):
    """A render window widget that can forward its mouse events as Qt signals.

    With `handle_mouse=True` the VTK interactor never sees mouse or key events; the signals carry
    (x, y) in VTK display pixels (origin bottom-left), the Qt button and the keyboard modifiers.
    """

    pressed = QtCore.pyqtSignal(int, int, int, int)
    moved = QtCore.pyqtSignal(int, int, int, int)
    released = QtCore.pyqtSignal(int, int, int, int)
    wheeled = QtCore.pyqtSignal(int, int)
    keyed = QtCore.pyqtSignal(int, int)
    left = QtCore.pyqtSignal()

    def __init__(self, parent=None, handle_mouse: bool = False) -> None:
        super().__init__(parent)
        self.handle_mouse = handle_mouse
        self.renderer = vtkRenderer()
        self.GetRenderWindow().AddRenderer(self.renderer)
        self.setMouseTracking(True)
        self.setMinimumSize(160, 160)

    def _display_xy(self, event) -> tuple[int, int]:
        ratio = self.devicePixelRatioF()
        pos = event.pos()
        return int(round(pos.x() * ratio)), int(round((self.height() - pos.y() - 1) * ratio))

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt override)
        if not self.handle_mouse:
            return super().mousePressEvent(event)
        x, y = self._display_xy(event)
        self.pressed.emit(x, y, int(event.button()), int(event.modifiers()))

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if not self.handle_mouse:
            return super().mouseMoveEvent(event)
        x, y = self._display_xy(event)
        self.moved.emit(x, y, int(event.buttons()), int(event.modifiers()))

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if not self.handle_mouse:
            return super().mouseReleaseEvent(event)
        x, y = self._display_xy(event)
        self.released.emit(x, y, int(event.button()), int(event.modifiers()))

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        if not self.handle_mouse:
            return super().mouseDoubleClickEvent(event)

    def wheelEvent(self, event) -> None:  # noqa: N802
        if not self.handle_mouse:
            return super().wheelEvent(event)
        delta = event.angleDelta().y()
        steps = int(delta / 120) or (1 if delta > 0 else -1 if delta < 0 else 0)
        if steps:
            self.wheeled.emit(steps, int(event.modifiers()))

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if not self.handle_mouse:
            return super().keyPressEvent(event)
        self.keyed.emit(int(event.key()), int(event.modifiers()))

    def keyReleaseEvent(self, event) -> None:  # noqa: N802
        if not self.handle_mouse:
            return super().keyReleaseEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        if self.handle_mouse:
            self.left.emit()
        return super().leaveEvent(event)

    def draw(self) -> None:
        """Draw now (only when visible: an unmapped X window cannot be drawn into)."""
        if self.isVisible():
            self.GetRenderWindow().Render()

    def capture(self) -> np.ndarray:
        """The rendered pixels as an (H, W, 3) uint8 array, row 0 at the top."""
        window = self.GetRenderWindow()
        window.Render()
        grabber = vtkWindowToImageFilter()
        grabber.SetInput(window)
        grabber.SetInputBufferTypeToRGB()
        grabber.ReadFrontBufferOff()
        grabber.ShouldRerenderOff()
        grabber.Update()
        image = grabber.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
        return np.ascontiguousarray(pixels[::-1, :, :3])
