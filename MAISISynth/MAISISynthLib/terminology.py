"""Register the MAISI terminology (Resources/maisi.term.json) with Slicer's terminology logic.

Registered once at application start (`startupCompleted()`), the segment editor's terminology picker
offers the MAISI labels with their standard codes and colours, and the terminology entries the module
writes on segments (`mrml.describe_segment`) resolve to a loaded context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import vtk

TERMINOLOGY_FILE = Path(__file__).resolve().parents[1] / "Resources" / "maisi.term.json"


def loaded_terminology_names(logic: Any) -> list[str]:
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    return [names.GetValue(i) for i in range(names.GetNumberOfValues())]


def register_terminology(logic: Any, path: str | Path = TERMINOLOGY_FILE) -> str:
    """Load the MAISI terminology context into `logic` (once); returns its context name.

    Raises RuntimeError when the file is missing or Slicer cannot read it, so the caller can log it.
    """
    path = Path(path)
    if not path.is_file():
        raise RuntimeError(f"the MAISI terminology file {path} is missing")
    name = logic.LoadTerminologyFromFile(str(path))
    if not name:
        raise RuntimeError(f"Slicer could not read the MAISI terminology file {path}")
    return str(name)
