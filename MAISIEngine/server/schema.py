"""What a client may put in a job: typed fields (pydantic), models by name, files only as uploads.

The server never takes a path from a client: a file field given as a string is refused, a model is one
of the names the server offers, and the paths the server uses inside its job folders are removed from
everything sent back (`scrub`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from MAISIEngine.validation import DEVICE_PATTERN, MAX_GUIDANCE, MAX_RETRIES, MAX_STEPS, SEED_MAX, check_memory
from MAISIEngine.errors import MaisiError

FILE_FIELDS = ("mask", "image", "labels", "tumor")
"""Job fields that name input files: the client uploads them as multipart parts of these names."""

Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Voxels = Annotated[int, Field(ge=1, le=4096)]
Spacing = Annotated[float, Field(ge=0.05, le=100.0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Device = Annotated[str, Field(max_length=16, pattern=DEVICE_PATTERN.pattern)]


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerateFields(_Job):
    type: Literal["generate"]
    model: Name = "demo"
    template: dict[str, Any] | None = None
    size: Annotated[list[Voxels], Field(min_length=3, max_length=3)] | None = None
    spacing: Annotated[list[Spacing], Field(min_length=3, max_length=3)] | None = None
    region: list[Annotated[str, Field(max_length=32)]] | Annotated[str, Field(max_length=32)] | None = None
    seed: Seed = 0
    steps: Steps | None = None
    guidance_scale: Annotated[float, Field(ge=0.0, le=MAX_GUIDANCE, allow_inf_nan=False)] | None = None
    quality_retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] = 0
    device: Device = "auto"
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    max_gpu_memory: Annotated[str, Field(max_length=16)] | None = None
    format: Literal["nifti", "dicom"] = "nifti"

    @field_validator("max_gpu_memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        try:
            check_memory(value, "max_gpu_memory")
        except MaisiError as exc:
            raise ValueError(exc.one_line()) from None
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and (len(value) > 8 or value.get("kind", "phantom") != "phantom"):
            raise ValueError('a template is {"kind": "phantom", "region": ..., "size": ..., "spacing": ...}')
        return value


class InpaintFields(_Job):
    type: Literal["inpaint"]
    tumor_type: Annotated[str, Field(max_length=32)] = "liver"
    model: Name = "demo"
    method: Literal["controlnet-repaint", "inpaint-controlnet"] = "controlnet-repaint"
    margin_mm: Annotated[float, Field(ge=0.0, le=200.0, allow_inf_nan=False)] = 10.0
    seed: Seed = 0
    steps: Steps | None = None
    device: Device = "auto"
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    format: Literal["nifti", "dicom"] = "nifti"


class PhantomFields(_Job):
    type: Literal["phantom"]
    size: Annotated[list[Annotated[int, Field(ge=16, le=512)]], Field(min_length=3, max_length=3)] = [128, 128, 128]
    spacing: Annotated[list[Spacing], Field(min_length=3, max_length=3)] = [3.0, 3.0, 3.0]
    region: Annotated[str, Field(max_length=32)] = "chest-abdomen"
    seed: Seed = 0
    tumors: Annotated[list[Annotated[str, Field(max_length=32)]], Field(max_length=16)] = []


class DownloadFields(_Job):
    type: Literal["download"]
    model: Name


JOB_MODELS: dict[str, type[_Job]] = {"generate": GenerateFields, "inpaint": InpaintFields,
                                     "phantom": PhantomFields, "download": DownloadFields}
REQUIRED_UPLOADS = {"inpaint": ("image", "labels")}
ALLOWED_UPLOADS = {"generate": ("mask",), "inpaint": ("image", "labels", "tumor")}


class JobRefused(Exception):
    """A job the server will not queue; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


def _first_error(error: ValidationError) -> str:
    item = error.errors()[0]
    where = ".".join(str(p) for p in item.get("loc", ())) or "job"
    return f"job field '{where}': {item.get('msg', 'invalid')}"


def validate_job(raw: Any, uploads: set[str], models: dict[str, Path | None]) -> dict[str, Any]:
    """The job as the worker will get it (without paths), or `JobRefused` (422) saying what is wrong."""
    if not isinstance(raw, dict):
        raise JobRefused(422, "the 'job' field must hold one JSON object", 'e.g. {"type": "generate", ...}')
    raw = dict(raw)
    raw.pop("output_dir", None)  # the server chooses where results go
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in JOB_MODELS:
        raise JobRefused(422, f"unknown job type {kind!r}", f"use one of {', '.join(JOB_MODELS)}")
    given_paths = [k for k in FILE_FIELDS if k in raw]
    if given_paths:
        raise JobRefused(422, f"job field '{given_paths[0]}' must be uploaded as a file part, not given as a path",
                         f"send the file as the multipart part named '{given_paths[0]}'")
    allowed = set(ALLOWED_UPLOADS.get(kind, ()))
    stray = sorted(uploads - allowed)
    if stray:
        raise JobRefused(422, f"a {kind} job takes no uploaded '{stray[0]}'",
                         f"upload only {', '.join(sorted(allowed)) or 'nothing'}")
    missing = [k for k in REQUIRED_UPLOADS.get(kind, ()) if k not in uploads]
    if missing:
        raise JobRefused(422, f"the {kind} job needs the uploaded file '{missing[0]}'", "add it as a multipart part")
    try:
        fields = JOB_MODELS[kind].model_validate(raw).model_dump(exclude_unset=False)
    except ValidationError as exc:
        raise JobRefused(422, _first_error(exc), "see the job fields in the server documentation") from None
    if "model" in fields:
        name = fields["model"]
        if name not in models:
            raise JobRefused(422, f"unknown model {name!r}", f"this server offers {', '.join(sorted(models))}")
        if kind == "download" and models[name] is not None:
            raise JobRefused(422, f"model {name!r} is a local model folder and cannot be downloaded", "")
    if kind == "generate" and "mask" not in uploads and fields.get("template") is None and (
            fields.get("size") is None or fields.get("spacing") is None):
        raise JobRefused(422, "a generate job needs an uploaded mask, a template, or size and spacing",
                         "upload the mask as the part named 'mask'")
    return fields


def scrub(value: Any, replacements: list[tuple[str, str]]) -> Any:
    """`value` with every server path prefix replaced (longest first), for events and provenance."""
    if isinstance(value, str):
        for old, new in replacements:
            if old and old in value:
                value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, replacements) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
