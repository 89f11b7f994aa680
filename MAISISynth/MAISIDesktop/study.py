"""What the window shows: a CT and/or a MAISI label map on one voxel grid, plus where they came from.

Arrays are held in closest-canonical RAS order (i -> right, j -> anterior, k -> superior), so the
slice views can place patient right, anterior and superior the same way for any input file, and in
Fortran order, so VTK displays them without a copy and brush edits show up at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Study:
    labels: np.ndarray
    affine: np.ndarray
    ct: np.ndarray | None = None
    name: str = "untitled"
    sources: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asfortranarray(self.labels, dtype=np.uint8)
        if self.ct is not None:
            self.ct = np.asfortranarray(self.ct, dtype=np.float32)
            if self.ct.shape != self.labels.shape:
                raise ValueError(f"CT {self.ct.shape} and labels {self.labels.shape} differ in shape")
        self.affine = np.asarray(self.affine, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.labels.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def field_of_view_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]

    def label_counts(self) -> dict[int, int]:
        """Voxel count of every label id present (background included)."""
        counts = np.bincount(self.labels.reshape(-1, order="F"), minlength=256)
        return {int(i): int(c) for i, c in enumerate(counts) if c}

    def world_of(self, ijk: tuple[float, float, float]) -> np.ndarray:
        """RAS millimetres of a voxel position."""
        return (self.affine @ np.append(np.asarray(ijk, dtype=np.float64), 1.0))[:3]
