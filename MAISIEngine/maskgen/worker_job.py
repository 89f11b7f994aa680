"""The worker's `generate-mask` job: what `maisi masks generate` does, with JSON-lines progress for front ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MAISIEngine.maskgen import anatomy
from MAISIEngine.maskgen.cli import _check_steps, _grid, draw_mask, write_mask
from MAISIEngine.maskgen.model import load_mask_model, load_mask_preset


def run_mask_job(job: Any, emit: Callable[[dict[str, Any]], None], log: Callable[[str], None]) -> dict[str, Any]:
    """Validate, load, draw, write; progress events per sampling step and for decoding."""
    from MAISIEngine.models import resolve_device

    pairs = anatomy.validate_anatomy_sizes([(name, size) for name, size in dict(job.anatomy_sizes).items()])
    preset = load_mask_preset(job.model)
    size, spacing = _grid(preset, job.size, job.spacing)
    _check_steps(job.steps, preset)
    emit({"event": "progress", "stage": "load", "step": 0, "total": 1, "eta_s": None})
    model = load_mask_model(preset, resolve_device(job.device))
    emit({"event": "progress", "stage": "load", "step": 1, "total": 1, "eta_s": 0.0})
    start = {"t": time.perf_counter(), "stage": ""}

    def progress(stage: str, done: int, total: int) -> None:
        if stage != start["stage"]:
            start.update(t=time.perf_counter(), stage=stage)
        elapsed = time.perf_counter() - start["t"]
        emit({"event": "progress", "stage": stage, "step": done, "total": total,
              "eta_s": elapsed / done * (total - done) if done else None})

    result = draw_mask(model, pairs, size, spacing, int(job.seed), job.region, job.steps, int(job.attempts), log,
                       progress)
    paths = write_mask(Path(job.output_dir), result)
    return {**paths, "missing": result.missing, "provenance_data": result.provenance}
