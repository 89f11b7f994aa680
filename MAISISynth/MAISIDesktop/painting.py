"""Label-map editing without Qt: brush and eraser dabs, strokes, tumor placement, undo/redo.

Every edit is recorded as the flat voxel indices it touched with their old and new values, so undo
and redo restore exactly those voxels, whatever happened elsewhere in between.

Beside the labels a document keeps a "beneath" array: for each voxel, the label that painting
covered there. The eraser puts that label back (erasing a liver tumor gives the liver again), so
erasing never punches background holes inside the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from MAISIEngine import labels as maisi_labels

BRUSH_SHAPES = ("sphere", "disk")
"""A sphere paints in 3D; a disk paints only in the slice being viewed."""


@dataclass
class Edit:
    """Voxels changed by one user action (a stroke, a tumor placement)."""

    flat_indices: np.ndarray
    old_values: np.ndarray
    new_values: np.ndarray
    description: str = ""
    old_beneath: np.ndarray | None = None
    new_beneath: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.flat_indices.size)

    def voxel_indices(self, shape: Sequence[int]) -> np.ndarray:
        """(N, 3) voxel indices (i, j, k) of the changed voxels."""
        return np.stack(np.unravel_index(self.flat_indices, tuple(shape), order="F"), axis=1)


def initial_beneath(labels: np.ndarray) -> np.ndarray:
    """What erasing an unpainted voxel leaves: body tissue under an organ, background under the body."""
    beneath = np.zeros(labels.shape, dtype=np.uint8, order="F")
    beneath[(labels != 0) & (labels != maisi_labels.BODY)] = maisi_labels.BODY
    return beneath


def layer_below(values: np.ndarray) -> np.ndarray:
    """The label under a restored one when nothing more is known: body under an organ, else background."""
    return np.where((values != 0) & (values != maisi_labels.BODY), maisi_labels.BODY, 0).astype(np.uint8)


def _flat_view(labels: np.ndarray) -> np.ndarray:
    """A 1D view of the label array in VTK (Fortran) order; edits through it change the array itself."""
    if not labels.flags.f_contiguous:
        raise ValueError("label arrays are kept Fortran-ordered so VTK can share their memory")
    return labels.reshape(-1, order="F")


def brush_footprint(
    shape: Sequence[int],
    center: Sequence[float],
    radius_mm: float,
    spacing: Sequence[float],
    brush_shape: str = "sphere",
    slice_axis: int = 2,
) -> np.ndarray:
    """Flat (Fortran-order) indices of the voxels whose centres lie within the brush.

    The brush is round in millimetres, so on anisotropic grids it spans fewer voxels along coarse axes.
    A disk is one voxel thick along `slice_axis`.
    """
    if brush_shape not in BRUSH_SHAPES:
        raise ValueError(f"brush shape must be one of {BRUSH_SHAPES}")
    center = np.asarray(center, dtype=np.float64)
    spacing = np.asarray(spacing, dtype=np.float64)
    reach = np.floor(radius_mm / spacing).astype(int)
    if brush_shape == "disk":
        reach[slice_axis] = 0
    axes = []
    for axis in range(3):
        c = int(round(center[axis]))
        lo, hi = max(0, c - reach[axis]), min(int(shape[axis]) - 1, c + reach[axis])
        if lo > hi:
            return np.empty(0, dtype=np.int64)
        axes.append(np.arange(lo, hi + 1))
    gi, gj, gk = np.meshgrid(*axes, indexing="ij")
    offsets = [(g - round(center[a])) * spacing[a] for a, g in enumerate((gi, gj, gk))]
    inside = offsets[0] ** 2 + offsets[1] ** 2 + offsets[2] ** 2 <= radius_mm**2 + 1e-9
    return np.ravel_multi_index((gi[inside], gj[inside], gk[inside]), tuple(int(s) for s in shape), order="F")


def allowed_voxels(
    values: np.ndarray, label: int, *, erase: bool, only_over: Iterable[int] | None, keep_tumor_in_host: bool
) -> np.ndarray:
    """Which of the candidate voxels (given their current values) a dab may change."""
    allowed = values != (0 if erase else label)
    if only_over is not None:
        allowed &= np.isin(values, np.fromiter(only_over, dtype=np.int64))
    if not erase and keep_tumor_in_host and label in maisi_labels.TUMOR_HOSTS:
        hosts = np.fromiter(maisi_labels.TUMOR_HOSTS[label] | {label}, dtype=np.int64)
        allowed &= np.isin(values, hosts)
    return allowed


class Stroke:
    """One press-drag-release of the brush or eraser: many dabs, one undo step."""

    def __init__(
        self,
        labels: np.ndarray,
        spacing: Sequence[float],
        label: int,
        radius_mm: float,
        *,
        erase: bool = False,
        brush_shape: str = "sphere",
        slice_axis: int = 2,
        only_over: Iterable[int] | None = None,
        keep_tumor_in_host: bool = True,
        beneath: np.ndarray | None = None,
    ) -> None:
        self.labels = labels
        self.flat = _flat_view(labels)
        self.beneath = None if beneath is None else _flat_view(beneath)
        self.spacing = tuple(float(s) for s in spacing)
        self.label = int(label)
        self.radius_mm = float(radius_mm)
        self.erase = erase
        self.brush_shape = brush_shape
        self.slice_axis = slice_axis
        self.only_over = None if only_over is None else frozenset(int(v) for v in only_over)
        self.keep_tumor_in_host = keep_tumor_in_host
        self._indices: list[np.ndarray] = []
        self._old: list[np.ndarray] = []
        self._old_beneath: list[np.ndarray] = []
        self._last_center: np.ndarray | None = None

    def dab(self, center: Sequence[float]) -> int:
        """Paint at a voxel position; returns how many voxels changed."""
        candidates = brush_footprint(
            self.labels.shape, center, self.radius_mm, self.spacing, self.brush_shape, self.slice_axis
        )
        values = self.flat[candidates]
        keep = allowed_voxels(
            values, self.label, erase=self.erase, only_over=self.only_over, keep_tumor_in_host=self.keep_tumor_in_host
        )
        if self.erase and self._indices:  # each voxel is erased once per stroke: one layer, not all
            keep &= ~np.isin(candidates, np.concatenate(self._indices))
        changed = candidates[keep]
        if changed.size:
            old = values[keep].copy()
            self._indices.append(changed)
            self._old.append(old)
            if self.beneath is None:
                self.flat[changed] = 0 if self.erase else self.label
            else:
                under = self.beneath[changed].copy()
                self._old_beneath.append(under)
                if self.erase:  # the covered label comes back, and the layer under it becomes the next
                    self.flat[changed] = under
                    self.beneath[changed] = layer_below(under)
                else:
                    self.flat[changed] = self.label
                    self.beneath[changed] = old
        self._last_center = np.asarray(center, dtype=np.float64)
        return int(changed.size)

    def drag_to(self, center: Sequence[float]) -> int:
        """Paint along the line from the previous dab, so fast mouse moves leave no gaps."""
        target = np.asarray(center, dtype=np.float64)
        if self._last_center is None:
            return self.dab(target)
        distance_mm = float(np.linalg.norm((target - self._last_center) * np.asarray(self.spacing)))
        step_mm = max(self.radius_mm / 2.0, min(self.spacing) / 2.0)
        count = max(1, int(np.ceil(distance_mm / step_mm)))
        start = self._last_center
        return sum(self.dab(start + (target - start) * (n / count)) for n in range(1, count + 1))

    def finish(self) -> Edit | None:
        """The stroke as one edit (first old value of each voxel), or None if nothing changed."""
        if not self._indices:
            return None
        indices = np.concatenate(self._indices)
        old = np.concatenate(self._old)
        unique, first = np.unique(indices, return_index=True)
        new = self.flat[unique].copy()
        verb = "Erase" if self.erase else f"Paint {maisi_labels.name_of(self.label)}"
        edit = Edit(unique, old[first], new, f"{verb} ({unique.size} voxels)")
        if self.beneath is not None:
            edit.old_beneath = np.concatenate(self._old_beneath)[first]
            edit.new_beneath = self.beneath[unique].copy()
        return edit


def place_tumor(
    labels: np.ndarray,
    affine: np.ndarray,
    center: Sequence[float],
    diameter_mm: float,
    tumor_label: int,
    seed: int = 0,
    beneath: np.ndarray | None = None,
) -> Edit:
    """Put a tumor of the engine's shape (lobulated, clipped to its host organ) at a voxel position.

    The click must land inside the host organ (`MAISIEngine.labels.TUMOR_HOSTS`); the engine says
    which organ that is when it does not, and the window shows that in a dialog.
    """
    from MAISIEngine.masktools.tumors import tumor_from_point

    voxel = tuple(int(round(c)) for c in center)
    mask = tumor_from_point(labels, affine, voxel, float(diameter_mm), int(tumor_label), seed, point_space="voxel")
    flat = _flat_view(labels)
    changed = np.flatnonzero(mask.reshape(-1, order="F"))
    old = flat[changed].copy()
    flat[changed] = int(tumor_label)
    new = np.full(changed.shape, int(tumor_label), dtype=labels.dtype)
    edit = Edit(changed, old, new, f"Place {maisi_labels.name_of(int(tumor_label))} ({changed.size} voxels)")
    if beneath is not None:
        under = _flat_view(beneath)
        edit.old_beneath = under[changed].copy()
        under[changed] = old
        edit.new_beneath = old.copy()
    return edit


@dataclass
class UndoStack:
    """Linear undo/redo of edits on one label array; a new edit drops the redo branch."""

    limit: int = 50
    _done: list[Edit] = field(default_factory=list)
    _undone: list[Edit] = field(default_factory=list)

    def push(self, edit: Edit | None) -> None:
        if edit is None or edit.size == 0:
            return
        self._done.append(edit)
        del self._done[: max(0, len(self._done) - self.limit)]
        self._undone.clear()

    def can_undo(self) -> bool:
        return bool(self._done)

    def can_redo(self) -> bool:
        return bool(self._undone)

    def top(self) -> Edit | None:
        """The last edit applied (None at the bottom of the history): marks a saved state."""
        return self._done[-1] if self._done else None

    def undo(self, labels: np.ndarray, beneath: np.ndarray | None = None) -> Edit | None:
        if not self._done:
            return None
        edit = self._done.pop()
        _flat_view(labels)[edit.flat_indices] = edit.old_values
        if beneath is not None and edit.old_beneath is not None:
            _flat_view(beneath)[edit.flat_indices] = edit.old_beneath
        self._undone.append(edit)
        return edit

    def redo(self, labels: np.ndarray, beneath: np.ndarray | None = None) -> Edit | None:
        if not self._undone:
            return None
        edit = self._undone.pop()
        _flat_view(labels)[edit.flat_indices] = edit.new_values
        if beneath is not None and edit.new_beneath is not None:
            _flat_view(beneath)[edit.flat_indices] = edit.new_beneath
        self._done.append(edit)
        return edit

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()
