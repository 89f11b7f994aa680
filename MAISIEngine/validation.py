"""Checks of the inputs a user types (CLI flags, job-file fields), made where they enter, before any work.

Each check raises a `MaisiError` naming the flag, what is wrong and the range that is accepted, so the
CLI prints one line and exits 2, and the worker reports an `error` event, instead of failing later
inside sampling with an overflow, a division by zero or a NaN latent.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from MAISIEngine.errors import MaisiError
from MAISIEngine.geometry import SPACING_RANGE_MM

SEED_MAX = 2**63 - 1
"""Seeds are 0..2^63-1: torch's generator takes 64 bits, and retries add to the seed."""
MAX_VOXELS_PER_AXIS = 4096
MAX_STEPS = 10_000
MAX_RETRIES = 100
MAX_GUIDANCE = 100.0
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
RESULT_NAMES = frozenset({"image.nii.gz", "labels.nii.gz", "provenance.json", "dicom"})
"""What a generation or inpainting writes into its output folder (and may replace there)."""


def _flag(name: str) -> str:
    return name if name.startswith("-") else f"'{name}'"


def check_int(value: object, name: str, low: int, high: int, hint: str = "") -> int:
    """An integer within [low, high] (bools and floats refused: a job file's `true` is not 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MaisiError(f"{_flag(name)} must be a whole number, got {value!r}", hint or f"use {low}..{high}")
    if not low <= value <= high:
        raise MaisiError(f"{_flag(name)} {value} is out of range", hint or f"use a value from {low} to {high}")
    return value


def check_float(value: object, name: str, low: float, high: float, hint: str = "") -> float:
    """A finite number within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MaisiError(f"{_flag(name)} must be a number, got {value!r}", hint or f"use {low}..{high}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise MaisiError(f"{_flag(name)} {value} is out of range", hint or f"use a finite value from {low} to {high}")
    return number


def check_size(size: Sequence[object] | None, name: str = "--size") -> tuple[int, int, int] | None:
    if size is None:
        return None
    if isinstance(size, (str, bytes)) or len(size) != 3:
        raise MaisiError(f"{name} needs three voxel counts, got {size!r}", "e.g. --size 256 256 128")
    return tuple(check_int(v, name, 1, MAX_VOXELS_PER_AXIS, f"each size must be 1..{MAX_VOXELS_PER_AXIS} voxels")
                 for v in size)  # type: ignore[return-value]


def check_spacing(spacing: Sequence[object] | None, name: str = "--spacing") -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    if isinstance(spacing, (str, bytes)) or len(spacing) != 3:
        raise MaisiError(f"{name} needs three spacings in mm, got {spacing!r}", "e.g. --spacing 1.5 1.5 2")
    low, high = SPACING_RANGE_MM
    return tuple(check_float(v, name, low, high, f"each spacing must be {low}-{high} mm")
                 for v in spacing)  # type: ignore[return-value]


def check_seed(seed: object, name: str = "--seed") -> int:
    return check_int(seed, name, 0, SEED_MAX, f"use a seed from 0 to {SEED_MAX}")


def check_steps(steps: object, name: str = "--steps") -> int | None:
    return None if steps is None else check_int(steps, name, 1, MAX_STEPS, f"use 1..{MAX_STEPS} denoising steps")


def check_retries(retries: object, name: str = "--quality-retries") -> int:
    return check_int(retries, name, 0, MAX_RETRIES, f"use 0..{MAX_RETRIES}")


def check_guidance(guidance: object, name: str = "--guidance") -> float | None:
    return None if guidance is None else check_float(guidance, name, 0.0, MAX_GUIDANCE,
                                                     f"use a finite scale from 0 to {MAX_GUIDANCE:g} (0 = off)")


def check_device(device: object, name: str = "--device") -> str:
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device.strip()):
        raise MaisiError(f"{_flag(name)} {device!r} is not a device", "use auto, cpu, mps, cuda or cuda:N")
    return device.strip()


def check_devices(devices: object, name: str = "--devices") -> list[str] | None:
    if devices is None:
        return None
    items = devices.split(",") if isinstance(devices, str) else devices
    if not isinstance(items, (list, tuple)) or not items or any(not isinstance(d, str) for d in items):
        raise MaisiError(f"{_flag(name)} {devices!r} is not a device list", "e.g. --devices cuda:0,cuda:1")
    checked = [check_device(d, name) for d in items]
    if any(d in ("auto",) for d in checked):
        raise MaisiError(f"{_flag(name)} lists 'auto'", "name the devices, e.g. cuda:0,cuda:1")
    return checked


def check_memory(text: object, name: str = "--max-gpu-memory") -> int | None:
    """'16G', '800M', '12.5GB' or a byte count -> bytes; finite, positive, at most 1 PiB."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise MaisiError(f"{_flag(name)} must be text like 16G, got {text!r}", "write it like 16G or 800M")
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(raw[-1:], 1)
    number = raw[:-1] if raw[-1:] in ("K", "M", "G", "T") else raw
    try:
        value = float(number) * factor
    except ValueError:
        raise MaisiError(f"cannot read memory size '{text}' of {name}", "write it like 16G or 800M") from None
    if not math.isfinite(value) or value < 1 or value > 1 << 50:
        raise MaisiError(f"memory size '{text}' of {name} is out of range", "write a positive size like 16G or 800M")
    return int(value)


def check_output_dir(path: object, name: str = "-o") -> Path:
    """An output folder we can create or replace a result in, checked without creating anything.

    Refused: an empty path, an existing file, a folder holding files other than a previous result
    (they would be mixed with the new one), and a place whose nearest existing folder is not writable.
    """
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not text or not str(text).strip():
        raise MaisiError(f"{name} is empty", "give the output folder, e.g. -o results/case1")
    target = Path(text).expanduser()
    if target.exists() and not target.is_dir():
        raise MaisiError(f"output {target} is a file, not a folder", "give a folder path with -o")
    if target.is_dir():
        try:
            foreign = sorted(p.name for p in target.iterdir() if p.name not in RESULT_NAMES
                             and not p.name.startswith("."))
        except OSError as exc:
            raise MaisiError(f"cannot read output folder {target} ({exc.strerror})", "choose another folder") from None
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise MaisiError(f"output folder {target} holds other files ({shown})",
                             "give a new or empty folder, or one holding only an earlier result")
    ancestor = target.parent if not target.exists() else target
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise MaisiError(f"cannot write to output directory {target} ({ancestor} is not a writable folder)",
                         "choose a folder you can write to with -o")
    return target
