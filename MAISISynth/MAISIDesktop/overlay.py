"""Colours and grey levels of the slice views: label lookup table, window/level presets, VTK images.

Label colours come from `MAISIDesktop.colours` (Slicer's colours where they exist, distinct colours
elsewhere). Hidden labels get alpha 0 in the lookup table and each label may have its own opacity
there; the overall overlay opacity is applied by the image property, so toggling a label or moving a
slider never touches the label data.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonCore import vtkLookupTable
from vtkmodules.vtkCommonDataModel import vtkImageData

from MAISIEngine import labels as maisi_labels

from MAISIDesktop.colours import colour_of

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "CT abdomen": (350.0, 40.0),
    "CT bone": (1000.0, 400.0),
    "CT brain": (100.0, 50.0),
    "CT lung": (1400.0, -500.0),
    "CT air": (1000.0, -426.0),
    "Soft tissue": (400.0, 40.0),
}
"""Preset name -> (window width, level) in HU: the CT presets of 3D Slicer's Volumes module, and the
common soft-tissue window."""

DEFAULT_PRESET = "CT abdomen"
CUSTOM_PRESET = "Custom"
"""What the preset box shows once the window or level was typed or dragged."""
LABEL_TABLE_SIZE = 256


def grey_of(hu: float | np.ndarray, window: float, level: float) -> np.ndarray:
    """The 0-255 grey a CT value shows as under a window/level (VTK's linear ramp, clamped)."""
    low = level - window / 2.0
    value = (np.asarray(hu, dtype=np.float64) - low) / window * 255.0
    return np.clip(value, 0.0, 255.0)


def label_lookup_table(hidden: Iterable[int] = (), opacities: dict[int, float] | None = None) -> vtkLookupTable:
    """A 256-entry table, id -> label colour; background and hidden ids are transparent."""
    table = vtkLookupTable()
    table.SetNumberOfTableValues(LABEL_TABLE_SIZE)
    table.SetTableRange(0, LABEL_TABLE_SIZE - 1)
    update_lookup_table(table, hidden, opacities)
    return table


def update_lookup_table(table: vtkLookupTable, hidden: Iterable[int], opacities: dict[int, float] | None = None) -> None:
    """Colours and alphas of every id: 0 for background and hidden ids, else the label's own opacity."""
    hidden_ids = {int(v) for v in hidden}
    opacities = opacities or {}
    valid = maisi_labels.valid_ids()
    for label_id in range(LABEL_TABLE_SIZE):
        r, g, b = colour_of(label_id) if label_id in valid else (255, 255, 255)
        visible = label_id != 0 and label_id not in hidden_ids
        alpha = float(opacities.get(label_id, 1.0)) if visible else 0.0
        table.SetTableValue(label_id, r / 255.0, g / 255.0, b / 255.0, alpha)
    table.Modified()


def image_data_from_array(array: np.ndarray, spacing: Iterable[float]) -> vtkImageData:
    """Wrap a Fortran-ordered (i, j, k) array as vtkImageData sharing its memory.

    The display frame puts voxel (0, 0, 0) at the origin with the file's spacing; in-place edits of
    `array` show after `image.Modified()`.
    """
    if not array.flags.f_contiguous:
        raise ValueError("arrays shown by VTK must be Fortran-ordered")
    image = vtkImageData()
    image.SetDimensions(*array.shape)
    image.SetSpacing(*[float(s) for s in spacing])
    image.SetOrigin(0.0, 0.0, 0.0)
    flat = array.reshape(-1, order="F")
    scalars = numpy_support.numpy_to_vtk(flat, deep=False)
    scalars.SetName("values")
    image.GetPointData().SetScalars(scalars)
    image._numpy_owner = array  # keep the numpy buffer alive as long as VTK uses it
    return image
