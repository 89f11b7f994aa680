"""Which images a set holds: a folder of NIfTI files, a `maisi batch` output folder, or a MONAI datalist.

A datalist (JSON with "training" / "validation" / "testing" lists of {"image", "label"} entries, paths
relative to the file) is read the way MONAI's `load_decathlon_datalist` reads it. A batch folder is
recognised by its `datalist.json`; only its own samples count, not the real cases the datalist mixes in.
A plain folder gives every .nii / .nii.gz below it that is not a label map (a name holding "label", "mask"
or "seg"); the label of `case.nii.gz` is a label-named file in the same folder with the same stem
(`case_label.nii.gz`, `case_seg.nii.gz`), or the folder's only label file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from MAISIEngine.errors import MaisiError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
LABEL_WORDS = ("label", "mask", "seg")
DATALIST_SECTIONS = ("training", "validation", "testing")
CT_AIR_PERCENTILE_HU = -500.0
"""A CT has air well below -500 HU in its lowest percentile; MR and other modalities are non-negative."""


@dataclass(frozen=True)
class Case:
    """One image of a set, its label map when known, and its modality when declared."""

    image: Path
    label: Path | None = None
    modality: str | None = None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_label_name(path: Path) -> bool:
    return any(word in _stem(path).lower() for word in LABEL_WORDS)


def _from_datalist(path: Path, generated_only: bool = False) -> list[Case]:
    """`generated_only`: skip entries marked "synthetic": false (the real cases a batch's datalist mixes in)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MaisiError(f"cannot read datalist {path} ({exc.__class__.__name__})", "give a MONAI datalist JSON") from None
    entries = data if isinstance(data, list) else [e for s in DATALIST_SECTIONS for e in (data.get(s) or [])]
    default_modality = data.get("modality") if isinstance(data, dict) else None
    if isinstance(default_modality, dict):  # Decathlon style {"0": "CT"}
        default_modality = next(iter(default_modality.values()), None)
    base = path.parent
    cases = []
    for entry in entries:
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            continue
        if generated_only and entry.get("synthetic") is False:
            continue
        image = Path(entry["image"]).expanduser()
        label = Path(entry["label"]).expanduser() if isinstance(entry.get("label"), str) else None
        image = image if image.is_absolute() else base / image
        label = label if label is None or label.is_absolute() else base / label
        cases.append(Case(image, label, entry.get("modality") or default_modality))
    return cases


def _from_folder(folder: Path) -> list[Case]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
    labels = [p for p in files if _is_label_name(p)]
    cases = []
    for image in (p for p in files if not _is_label_name(p)):
        beside = [p for p in labels if p.parent == image.parent]
        same_stem = [p for p in beside if _stem(p).startswith(_stem(image) + "_")]
        label = same_stem[0] if same_stem else (beside[0] if len(beside) == 1 else None)
        cases.append(Case(image, label))
    return cases


def read_set(source: str | Path, what: str = "set") -> list[Case]:
    """The cases of a folder, batch folder or datalist; an empty or unreadable set is a MaisiError."""
    path = Path(source).expanduser()
    if not path.exists():
        raise MaisiError(f"{what} {path} does not exist", "give a folder of NIfTI files or a MONAI datalist JSON")
    if path.is_dir():
        datalist = path / "datalist.json"
        cases = _from_datalist(datalist, generated_only=True) if datalist.is_file() else _from_folder(path)
    elif path.suffix == ".json":
        cases = _from_datalist(path)
    elif path.name.endswith(NIFTI_SUFFIXES):
        cases = [Case(path)]
    else:
        raise MaisiError(f"{what} {path} is neither a folder nor a datalist", "give a folder of NIfTI files or a .json datalist")
    if not cases:
        raise MaisiError(f"{what} {path} holds no images", "give a folder with .nii.gz files or a datalist with entries")
    absent = [c.image for c in cases if not c.image.is_file()]
    if absent:
        raise MaisiError(f"{what}: image {absent[0]} does not exist ({len(absent)} of {len(cases)} missing)",
                         "fix the datalist's paths (relative paths are read from the datalist's folder)")
    return cases


def guess_modality(array: np.ndarray) -> str:
    """'CT' when the volume holds air (HU), 'MR' otherwise; a guess for sets that do not declare it."""
    values = np.asarray(array, dtype=np.float32).ravel()
    sample = values[:: max(1, values.size // 200_000)]
    return "CT" if float(np.percentile(sample, 1)) <= CT_AIR_PERCENTILE_HU else "MR"


def normalise_modality(name: str | None) -> str | None:
    if not name:
        return None
    upper = str(name).strip().upper()
    return "MR" if upper in ("MR", "MRI") or upper.startswith("MRI") else upper
