"""Colours and grey levels of the slice views: label lookup table, window/level presets, VTK images.

Label colours come from `MAISIEngine.labels.color_of`, so a liver is the same colour here, in Slicer
and in a DICOM SEG. Hidden labels get alpha 0 in the lookup table; the overlay opacity is applied by
the image property, so toggling a label or moving the slider never touches the label data.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonCore import vtkLookupTable
from vtkmodules.vtkCommonDataModel import vtkImageData

from MAISIEngine import labels as maisi_labels

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "Soft tissue": (400.0, 40.0),
    "Lung": (1500.0, -600.0),
    "Bone": (1800.0, 400.0),
    "Brain": (80.0, 40.0),
}
"""Preset name -> (window width, level) in HU."""

DEFAULT_PRESET = "Soft tissue"
LABEL_TABLE_SIZE = 256


def grey_of(hu: float | np.ndarray, window: float, level: float) -> np.ndarray:
    """The 0-255 grey a CT value shows as under a window/level (VTK's linear ramp, clamped)."""
    low = level - window / 2.0
    value = (np.asarray(hu, dtype=np.float64) - low) / window * 255.0
    return np.clip(value, 0.0, 255.0)


def label_lookup_table(hidden: Iterable[int] = ()) -> vtkLookupTable:
    """A 256-entry table, id -> MAISI colour; background and hidden ids are transparent."""
    table = vtkLookupTable()
    table.SetNumberOfTableValues(LABEL_TABLE_SIZE)
    table.SetTableRange(0, LABEL_TABLE_SIZE - 1)
    update_lookup_table(table, hidden)
    return table


def update_lookup_table(table: vtkLookupTable, hidden: Iterable[int]) -> None:
    hidden_ids = {int(v) for v in hidden}
    valid = maisi_labels.valid_ids()
    for label_id in range(LABEL_TABLE_SIZE):
        r, g, b = maisi_labels.color_of(label_id) if label_id in valid else (255, 255, 255)
        visible = label_id != 0 and label_id not in hidden_ids
        table.SetTableValue(label_id, r / 255.0, g / 255.0, b / 255.0, 1.0 if visible else 0.0)
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
