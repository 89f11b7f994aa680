"""The batch spec (YAML): what to generate, how many, from which masks. Unknown keys are refused.

Example:

    model: demo
    samples: 100
    base_seed: 1000
    steps: 20
    quality_retries: 2
    masks:
      - phantom: {region: [chest-abdomen, abdomen], size: [128, 128, 128], spacing: [3, 3, 3]}
      - folder: /data/masks            # NIfTI label maps with MAISI ids
    tumors: {types: [liver, lung], probability: 0.5, size_mm: [10, 30]}
    datalist: {folds: 5, real: /data/real_datalist.json, ratio: "1:1"}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError
from MAISIEngine.labels import TUMOR_TYPES

TOP_KEYS = {"model", "samples", "base_seed", "steps", "quality_retries", "masks", "tumors", "datalist", "device",
            "precision", "output_format", "size", "spacing"}
MASK_SOURCE_KEYS = {"phantom": {"region", "size", "spacing", "tumors"}, "folder": None, "database": {
    "anatomy", "region", "size", "spacing", "db_dir", "augment"}}
TUMOR_KEYS = {"types", "probability", "size_mm"}
DATALIST_KEYS = {"folds", "real", "ratio"}


@dataclass
class BatchSpec:
    model: str = "demo"
    samples: int = 1
    base_seed: int = 0
    steps: int | None = None
    quality_retries: int = 0
    masks: list[dict[str, Any]] = field(default_factory=lambda: [{"phantom": {}}])
    tumors: dict[str, Any] | None = None
    datalist: dict[str, Any] | None = None
    device: str = "auto"
    precision: str = "fp16"
    output_format: str = "nifti"
    size: list[int] | None = None
    spacing: list[float] | None = None

    def fingerprint(self) -> str:
        """Hash of everything that decides the outputs (the device does not)."""
        decisive = {k: v for k, v in asdict(self).items() if k not in ("device",)}
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


def _refuse_unknown(found: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(found) - allowed)
    if unknown:
        raise MaisiError(f"unknown keys in {where}: {', '.join(unknown)}", f"allowed: {', '.join(sorted(allowed))}")


def parse_spec(data: Any) -> BatchSpec:
    """Validate a spec document (already parsed from YAML/JSON)."""
    if not isinstance(data, dict):
        raise MaisiError("the batch spec must be a mapping of keys to values", "see `maisi batch --help` for an example")
    _refuse_unknown(data, TOP_KEYS, "the batch spec")
    spec = BatchSpec(**data)
    if not isinstance(spec.samples, int) or spec.samples < 1:
        raise MaisiError(f"samples is {spec.samples!r}; at least one sample is needed", "set samples: N with N >= 1")
    if not spec.masks:
        raise MaisiError("the spec lists no mask sources", "add masks: [{phantom: {}}] or [{folder: DIR}]")
    for index, source in enumerate(spec.masks):
        if not isinstance(source, dict) or len(source) != 1 or next(iter(source)) not in MASK_SOURCE_KEYS:
            raise MaisiError(f"mask source {index + 1} is not one of {', '.join(MASK_SOURCE_KEYS)}",
                             "write e.g. - phantom: {region: abdomen}")
        kind, options = next(iter(source.items()))
        allowed = MASK_SOURCE_KEYS[kind]
        if allowed is not None:
            if not isinstance(options, dict):
                raise MaisiError(f"mask source {index + 1} ({kind}) needs a mapping of options", "write {} for defaults")
            _refuse_unknown(options, allowed, f"mask source {index + 1} ({kind})")
    if spec.tumors:
        _refuse_unknown(spec.tumors, TUMOR_KEYS, "tumors")
        bad = [t for t in spec.tumors.get("types", []) if t not in TUMOR_TYPES]
        if bad:
            raise MaisiError(f"unknown tumor types {bad}", f"use {', '.join(TUMOR_TYPES)}")
    if spec.datalist:
        _refuse_unknown(spec.datalist, DATALIST_KEYS, "datalist")
    if spec.output_format not in ("nifti", "dicom"):
        raise MaisiError(f"unknown output_format {spec.output_format!r}", "use nifti or dicom")
    return spec


def read_spec(path: str | Path) -> BatchSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MaisiError(f"cannot read batch spec {path} ({exc.strerror})", "check the path") from None
    try:
        import yaml

        data = yaml.safe_load(text)
    except ImportError:
        data = json.loads(text)
    except Exception as exc:  # yaml.YAMLError and friends
        raise MaisiError(f"batch spec {path.name} is not valid YAML ({exc.__class__.__name__})", "fix its syntax") from None
    return parse_spec(data)
