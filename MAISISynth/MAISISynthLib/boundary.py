"""The boundary between the front ends and the engine: what the Slicer module and MAISISynthLib may import.

THE RULE. `MAISISynth.py` (at module level and on every path the panel runs before a job is started)
and every module of `MAISISynthLib` import only
  - what 3D Slicer 5.12 ships in its Python: the standard library and `SLICER_SHIPPED_PACKAGES`, and
  - the engine's contract modules, `ENGINE_CONTRACT_MODULES`, which themselves import nothing more.
Everything else (torch, MONAI, nibabel, ...: `ENGINE_ONLY_PACKAGES`) is imported by the engine's worker
process only, which a front end starts with `python -m MAISIEngine.worker job.json` after the user has
agreed to install those packages. A fresh Slicer therefore shows a working panel (button states,
weight status, size checks) before anything is installed.

`Testing/test_slicer_boundary.py` enforces the rule: it imports these modules and runs the panel
logic, the MRML bridge and the job writers with every package in `ENGINE_ONLY_PACKAGES` blocked.
"""

from __future__ import annotations

SLICER_SHIPPED_PACKAGES = frozenset({
    "numpy", "scipy", "requests", "urllib3", "pydicom", "highdicom", "dicomweb_client", "SimpleITK",
    "vtk", "vtkmodules", "qt", "ctk", "slicer", "PythonQt", "packaging",
})
"""Top-level packages a front end may import besides the standard library (Slicer's own Python)."""

ENGINE_CONTRACT_MODULES = frozenset({
    "MAISIEngine",                   # the package itself: a version string and a docstring
    "MAISIEngine.errors",            # MaisiError: message + hint
    "MAISIEngine.labels",            # label ids, names, colours, tumor types and hosts
    "MAISIEngine.presets",           # model presets (sizes, spacings, weight files)
    "MAISIEngine.geometry",          # the engine's size and spacing checks
    "MAISIEngine.jobs",              # the worker's job schema
    "MAISIEngine.io",                # package docstring only
    "MAISIEngine.io.atomic",         # write-then-rename helpers
    "MAISIEngine.weights",           # lazy package: names load from their submodule on first use
    "MAISIEngine.weights.manifest",  # the official files
    "MAISIEngine.weights.cache",     # where they are cached and their recorded status (filelock lazily)
    "MAISIEngine.weights.resolve",   # weights_status: which of a model's files are on this machine
    "MAISIEngine.masktools",         # package docstring only
    "MAISIEngine.masktools.totalseg",  # TotalSegmentator names -> MAISI ids (numpy only)
    "MAISIEngine.maskgen",           # lazy package: names load from their submodule on first use
    "MAISIEngine.maskgen.anatomy",   # the mask generator's ten controllable structures and their checks
    "MAISIEngine.maskgen.grid",      # the grids a mask model can fill (its preset's accepts table)
})
"""Engine modules a front end may import: each needs only the standard library and numpy."""

ENGINE_ONLY_PACKAGES = frozenset({
    "torch", "monai", "nibabel", "filelock", "tqdm", "safetensors", "einops", "yaml", "fastapi", "uvicorn",
})
"""Packages Slicer does not ship: only the worker process (and the engine's CLI and server) import them."""
