"""The job file the front ends hand to the worker: typed, validated, with clear messages.

One JSON object per job. `type` selects the job kind; unknown keys are refused (a typo would otherwise
silently fall back to a default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError


@dataclass
class GenerateJob:
    output_dir: str
    model: str = "demo"
    mask: str | None = None
    template: dict[str, Any] | None = None
    size: list[int] | None = None
    spacing: list[float] | None = None
    region: list[str] | str | None = None
    seed: int = 0
    steps: int | None = None
    guidance_scale: float | None = None
    modality: str | None = None
    output_grid: str = "model"
    quality_retries: int = 0
    device: str = "auto"
    precision: str = "fp16"
    max_gpu_memory: str | None = None
    format: str = "nifti"


@dataclass
class InpaintJob:
    output_dir: str
    image: str
    labels: str
    tumor: str | None = None
    tumor_type: str = "liver"
    model: str = "demo"
    method: str = "controlnet-repaint"
    margin_mm: float = 10.0
    seed: int = 0
    steps: int | None = None
    modality: str | None = None
    device: str = "auto"
    precision: str = "fp16"
    format: str = "nifti"


@dataclass
class PhantomJob:
    output_dir: str
    size: list[int] = field(default_factory=lambda: [128, 128, 128])
    spacing: list[float] = field(default_factory=lambda: [3.0, 3.0, 3.0])
    region: str = "chest-abdomen"
    seed: int = 0
    tumors: list[str] = field(default_factory=list)


@dataclass
class DownloadJob:
    model: str


@dataclass
class MaskGenerateJob:
    """A label map from the mask-generation model (`maisi masks generate`); `anatomy_sizes` maps a
    controllable structure (liver, pancreas, hepatic-tumor, ...) to a percentile in [0, 1]."""

    output_dir: str
    anatomy_sizes: dict[str, float] = field(default_factory=dict)
    size: list[int] | None = None
    spacing: list[float] | None = None
    region: str | None = None
    seed: int = 0
    model: str = "mask-ct"
    steps: int | None = None
    attempts: int = 3
    device: str = "auto"


JOB_TYPES: dict[str, type] = {
    "generate": GenerateJob,
    "inpaint": InpaintJob,
    "phantom": PhantomJob,
    "download": DownloadJob,
    "generate-mask": MaskGenerateJob,
}


def parse_job(data: dict[str, Any]) -> Any:
    """Validate a job dictionary and return the typed job."""
    if not isinstance(data, dict):
        raise MaisiError("the job file must hold one JSON object", 'e.g. {"type": "generate", ...}')
    kind = data.get("type")
    if kind not in JOB_TYPES:
        raise MaisiError(f"unknown job type {kind!r}", f"use one of {', '.join(JOB_TYPES)}")
    cls = JOB_TYPES[kind]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - allowed - {"type"})
    if unknown:
        raise MaisiError(f"the {kind} job has unknown keys: {', '.join(unknown)}", f"allowed keys: {', '.join(sorted(allowed))}")
    required = [f.name for f in fields(cls) if f.default is f.default_factory is __import__("dataclasses").MISSING]
    missing = [k for k in required if data.get(k) in (None, "")]
    if missing:
        raise MaisiError(f"the {kind} job lacks {', '.join(missing)}", "add them to the job file")
    return cls(**{k: v for k, v in data.items() if k != "type"})


def read_job(path: str | Path) -> Any:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MaisiError(f"job file {path} does not exist", "pass the path of a job JSON file") from None
    except json.JSONDecodeError as exc:
        raise MaisiError(f"job file {path.name} is not valid JSON ({exc.msg} at line {exc.lineno})", "fix the JSON") from None
    return parse_job(data)
