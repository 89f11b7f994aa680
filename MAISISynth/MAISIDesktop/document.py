"""The document the window edits: one study with its undo history, eraser layer and saved state.

A document knows whether it holds edits that are not saved (`modified`), where Save writes its label
map, and, after an inpainting run, the CT as it was before (for the before/after toggle). Keeping
these together means that a run's result on the same grid can take the history over, so undo still
works after Generate or Inpaint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from MAISIEngine import labels as maisi_labels
from MAISIEngine.io.nifti import write_volume

from MAISIDesktop import painting
from MAISIDesktop.study import Study

LABEL_SUFFIXES = (".nii.gz", ".nii")


@dataclass(eq=False)
class Document:
    study: Study
    undo_stack: painting.UndoStack = field(default_factory=painting.UndoStack)
    beneath: np.ndarray | None = None
    save_path: Path | None = None
    before_ct: np.ndarray | None = None
    _saved_top: painting.Edit | None = None
    _unsaved_without_history: bool = False

    def __post_init__(self) -> None:
        if self.beneath is None:
            self.beneath = painting.initial_beneath(self.study.labels)
        self._saved_top = self.undo_stack.top()
        if self.save_path is None:
            source = self.study.sources.get("labels")
            if source and source.lower().endswith(LABEL_SUFFIXES) and "ct" not in self.study.sources:
                self.save_path = Path(source)

    @property
    def modified(self) -> bool:
        """True when the labels differ from what was opened or last saved."""
        return self._unsaved_without_history or self.undo_stack.top() is not self._saved_top

    def mark_modified(self) -> None:
        """A change that is not in the undo history (e.g. labels taken over from another document)."""
        self._unsaved_without_history = True

    def mark_saved(self, path: Path) -> None:
        self.save_path = Path(path)
        self._saved_top = self.undo_stack.top()
        self._unsaved_without_history = False

    def save_labels(self, path: str | Path) -> Path:
        """Write the label map (MAISI ids, uint8) as NIfTI, atomically, and remember the place."""
        path = Path(path)
        if not path.name.lower().endswith(LABEL_SUFFIXES):
            path = path.with_name(path.name + ".nii.gz")
        write_volume(path, self.study.labels, self.study.affine,
                     description="MAISI labels from MAISI Desktop", dtype=np.uint8)
        self.mark_saved(path)
        return path

    def suggested_label_name(self) -> str:
        name = self.study.name
        return name if name.endswith("labels") else f"{name}_labels"

    def take_over(self, previous: "Document") -> None:
        """Continue `previous`'s history in this document (a run's result on the same grid)."""
        self.undo_stack = previous.undo_stack
        self._saved_top = previous._saved_top
        self._unsaved_without_history = previous._unsaved_without_history
        self.save_path = previous.save_path
        if previous.beneath is not None and previous.beneath.shape == self.study.shape:
            self.beneath = previous.beneath

    def tumor_labels_present(self) -> list[int]:
        """Tumor label ids in the map, the largest first."""
        counts = self.study.label_counts()
        tumors = [i for i in maisi_labels.TUMOR_HOSTS if counts.get(i)]
        return sorted(tumors, key=lambda i: -counts[i])
