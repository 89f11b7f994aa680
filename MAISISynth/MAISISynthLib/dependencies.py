"""Which of the engine's packages Slicer's Python lacks, and whether its PyTorch is recent enough.

Read from package metadata (importlib), never by importing: importing torch in Slicer's process would
load CUDA there, which is the worker's job. PyTorch itself comes from Slicer's PyTorch extension
(PyTorch Utils module), which picks the build that matches the NVIDIA driver; the other packages are
installed with `pip_ensure` under a constraint that keeps the installed torch, so pip cannot replace a
CUDA build with a CPU one while it installs MONAI.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

TORCH_REQUIREMENT = ">=2.4"
"""The oldest PyTorch the engine supports (MONAI's MAISI networks, safetensors loading, SDPA)."""

PYTORCH_UTILS_HINT = ("open the PyTorch Utils module (Modules > Utilities > PyTorch Utils), uninstall PyTorch, "
                      "restart Slicer and install it again there; it picks the build for your NVIDIA driver")


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (e.g. '2.5.1+cu124'), or None; nothing is imported."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_problem(version: str | None, requirement: str = TORCH_REQUIREMENT) -> str | None:
    """Why the installed PyTorch cannot run the engine, or None when it can (or is not installed yet)."""
    if version is None:
        return None
    try:
        parsed = Version(version)
    except InvalidVersion:
        return f"PyTorch reports an unreadable version '{version}'"
    if not SpecifierSet(requirement).contains(Version(parsed.public), prereleases=True):
        return f"PyTorch {version} is installed, but MAISISynth needs PyTorch {requirement}"
    return None


def torch_constraints(version: str | None) -> str:
    """A pip constraints file's text that keeps the installed torch (empty when there is none)."""
    return f"torch=={version}\n" if version else ""


def requirement_import_names(requirements: str) -> list[str]:
    """Import names of the packages in a requirements.txt (their names, '-' as '_'), comments skipped."""
    names = []
    for line in requirements.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].replace("-", "_"))
    return names


def missing_packages(requirements_file: str | Path) -> list[str]:
    """torch plus the requirement packages that cannot be found (find_spec only: nothing is imported)."""
    names = ["torch", *requirement_import_names(Path(requirements_file).read_text())]
    return [name for name in names if importlib.util.find_spec(name) is None]
