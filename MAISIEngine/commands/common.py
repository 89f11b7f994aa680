"""Argument helpers and terminal progress shared by the `maisi` sub-commands."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from MAISIEngine.errors import MaisiError
from MAISIEngine.io.nifti import Volume, read_volume


def parse_memory(text: str | None) -> int | None:
    """'16G', '800M', '12.5GB' or a byte count -> bytes (see `MAISIEngine.validation.check_memory`)."""
    from MAISIEngine.validation import check_memory

    return check_memory(text, "memory size")


def check_model_argument(model: str) -> None:
    """A model is a shipped name or a folder holding preset.json (or that file): refuse anything else early."""
    from MAISIEngine.presets import load_preset

    load_preset(model)


def ensure_writable_dir(path: Path) -> None:
    """Fail before any work when the output folder cannot be created or written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise MaisiError(f"cannot write to output directory {path} ({exc.strerror or exc})",
                         "choose a folder you can write to with -o") from None


def read_mask(path: Path) -> Volume:
    """A label map from NIfTI, or from a DICOM SEG file / a folder holding a CT series and its SEG."""
    if path.is_dir() or path.suffix.lower() in (".dcm", ".dicom"):
        try:
            from MAISIEngine.io.dicom import read_dicom_mask
        except ImportError:
            raise MaisiError("DICOM input needs the dicom extra", "pip install 'maisi-engine[dicom]'") from None
        array, affine = read_dicom_mask(path)
        return Volume(array, affine)
    return read_volume(path, what="mask", labels=True)


class StageBars:
    """One tqdm bar per stage on stderr, closed when the next stage starts."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and os.environ.get("MAISI_NO_PROGRESS") is None
        self.bar = None
        self.stage = ""

    def __call__(self, event) -> None:  # event: MAISIEngine.pipeline.ProgressEvent
        if not self.enabled:
            return
        from tqdm import tqdm

        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            self.bar = tqdm(total=event.total, desc=f"{event.stage:>9}", unit="step", file=sys.stderr, leave=True)
        if self.bar is not None:
            self.bar.total = event.total
            self.bar.n = event.step
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (first GPU if any), cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16", "fp32"),
                        help="sampling autocast precision on CUDA: fp16 (default, as NVIDIA's reference), bf16 or "
                             "fp32; CPU always runs fp32. The TSP decoder picks its own (fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--max-gpu-memory", default=None,
                        help="memory budget for decoding, e.g. 16G; the planner picks splits to fit")
    parser.add_argument("--devices", default=None,
                        help="comma-separated devices to spread the TSP decode over, e.g. cuda:0,cuda:1")


def warn(message: str) -> None:
    print(message if message.startswith("warning:") else f"warning: {message}", file=sys.stderr)
