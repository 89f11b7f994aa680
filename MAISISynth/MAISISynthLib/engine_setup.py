"""Getting the engine's environment ready inside 3D Slicer: the interpreter the worker runs in, and the
packages it needs, installed one step at a time after the user agreed (PyTorch first, through Slicer's
PyTorch extension, then the rest under a constraint that keeps the installed torch build).

What is missing is read from package metadata (`dependencies`), never by importing torch here.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import slicer

from . import dependencies, workdirs

try:
    from slicer.i18n import tr as _
except ImportError:  # slicer-core outside the application has no translations
    def _(text: str) -> str:
        return text


def python_executable() -> str:
    """PythonSlicer: Slicer's interpreter with Slicer's packages, started as a plain process."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(candidate) if candidate.exists() else sys.executable


def torch_problem() -> str | None:
    """Why the installed PyTorch is too old for the engine, or None (read from metadata, not imported)."""
    return dependencies.torch_problem(dependencies.installed_version("torch"), dependencies.TORCH_REQUIREMENT)


def _install_torch() -> bool:
    """PyTorch through the PyTorch extension's logic (it asks the user and picks the driver's build)."""
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay(_(
            "MAISISynth needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, "
            "restart Slicer and try again."))
        return False
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=True, torchVersionRequirement=dependencies.TORCH_REQUIREMENT)
    if torch is None:
        slicer.util.errorDisplay(_("PyTorch was not installed; generation needs it."))
        return False
    problem = torch_problem()
    if problem:
        slicer.util.errorDisplay(_("{problem}. To update it: {hint}.").format(
            problem=problem, hint=dependencies.PYTORCH_UTILS_HINT))
        return False
    return True


def _install_packages(requirements_file: str, temporary_path: str) -> bool:
    """The other packages with Slicer's pip_ensure, constrained to the installed torch."""
    try:
        import slicer.packaging as packaging

        packaging.pip_ensure  # noqa: B018 - present since Slicer 5.12
    except (ImportError, AttributeError):
        import slicer.pydeps as packaging  # the same functions under their Slicer 5.11 name
    requirements = packaging.load_requirements(requirements_file)
    constraints = Path(workdirs.new_work_directory(temporary_path, "packages")) / "constraints.txt"
    constraints.write_text(dependencies.torch_constraints(dependencies.installed_version("torch")))
    try:
        packaging.pip_ensure(requirements, constraints=str(constraints), requester="MAISISynth",
                             prompt_install=True)
    except RuntimeError as exc:
        slicer.util.errorDisplay(_("The Python packages MAISISynth needs were not installed: {reason}").format(
            reason=exc))
        return False
    finally:
        workdirs.remove_work_directory(constraints.parent, temporary_path)
    return True


def ensure_engine_dependencies(requirements_file: str, temporary_path: str) -> bool:
    """Install what the engine needs, each step after the user agreed: torch first, then the rest.

    An installed PyTorch older than the engine needs is reported with a pointer to PyTorch Utils;
    the other packages are installed under a constraint that keeps the installed torch build.
    """
    missing = dependencies.missing_packages(requirements_file)
    problem = None if "torch" in missing else torch_problem()
    if problem:
        slicer.util.errorDisplay(_("{problem}. To update it: {hint}.").format(
            problem=problem, hint=dependencies.PYTORCH_UTILS_HINT))
        return False
    if not missing:
        return True
    if "torch" in missing and not _install_torch():
        return False
    if not _install_packages(requirements_file, temporary_path):
        return False
    still = dependencies.missing_packages(requirements_file)
    if still:
        slicer.util.errorDisplay(_("Still missing: {packages}. Restart Slicer and try again.").format(
            packages=", ".join(still)))
        return False
    return True
