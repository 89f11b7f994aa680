"""`python -m MAISIEngine.worker JOB.json`: one job in, JSON-lines events out.

Front ends never import torch: they start this process, read its stdout line by line and load the
result files. Events: progress (stage, step, total, eta_s), log, result, error (message, hint).
SIGTERM stops the job within seconds; outputs are written atomically, so nothing partial remains.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from MAISIEngine.errors import CancelledError, MaisiError
from MAISIEngine.io.privacy import describe_source, scrub
from MAISIEngine.jobs import DownloadJob, GenerateJob, InpaintJob, MaskGenerateJob, PhantomJob, read_job


def emit(event: dict[str, Any]) -> None:
    """One JSON object per line on stdout, flushed at once so the front end sees it live."""
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def _on_sigterm(signum: int, frame: object) -> None:
    from MAISIEngine.io.atomic import remove_live_partials

    remove_live_partials()
    raise CancelledError("the job was cancelled", "start it again when you are ready")


def _progress(event: Any) -> None:
    emit(event.to_dict())


def _log(message: str) -> None:
    emit({"event": "log", "message": message, "level": "warning" if message.startswith("warning") else "info"})


def check_generate_job(job: GenerateJob) -> None:
    """The job file's fields, checked as the CLI checks its flags, before anything is read or computed."""
    from MAISIEngine.commands.common import check_model_argument
    from MAISIEngine import validation as v

    v.check_output_dir(job.output_dir, "output_dir")
    v.check_size(job.size, "size")
    v.check_spacing(job.spacing, "spacing")
    v.check_seed(job.seed, "seed")
    v.check_steps(job.steps, "steps")
    v.check_guidance(job.guidance_scale, "guidance_scale")
    v.check_retries(job.quality_retries, "quality_retries")
    v.check_device(job.device, "device")
    v.check_memory(job.max_gpu_memory, "max_gpu_memory")
    if job.mask is not None and not isinstance(job.mask, str):
        raise MaisiError(f"'mask' must be a file path, got {job.mask!r}", "give the label map's path")
    if job.template is not None and not isinstance(job.template, dict):
        raise MaisiError("'template' must be an object", 'e.g. {"kind": "phantom"}')
    if not isinstance(job.model, str):
        raise MaisiError(f"'model' must be a name or a folder, got {job.model!r}", "e.g. demo")
    check_model_argument(job.model)


def check_inpaint_job(job: InpaintJob) -> None:
    from MAISIEngine import validation as v

    v.check_output_dir(job.output_dir, "output_dir")
    v.check_seed(job.seed, "seed")
    v.check_steps(job.steps, "steps")
    v.check_device(job.device, "device")
    v.check_float(job.margin_mm, "margin_mm", 0.0, 200.0)
    for key in ("image", "labels", "tumor"):
        value = getattr(job, key)
        if value is not None and not isinstance(value, str):
            raise MaisiError(f"'{key}' must be a file path, got {value!r}", "give the file's path")


def run_generate(job: GenerateJob) -> dict[str, Any]:
    from MAISIEngine.commands.common import parse_memory, read_mask
    from MAISIEngine.conditioning import parse_regions
    from MAISIEngine.pipeline import GenerationRequest, generate

    check_generate_job(job)
    size, spacing, region, seed = job.size, job.spacing, job.region, job.seed
    mask = read_mask(Path(job.mask)) if job.mask else None
    if mask is None and job.template:
        template = dict(job.template)
        if template.get("kind", "phantom") != "phantom":
            raise MaisiError(f"unknown template kind {template.get('kind')!r}", "use phantom")
        region = region or template.get("region")
        size = size or template.get("size")
        spacing = spacing or template.get("spacing")
    request = GenerationRequest(
        model=job.model, mask=mask, mask_source=describe_source(job.mask, "phantom template"),
        size=tuple(size) if size else None, spacing=tuple(spacing) if spacing else None,
        region=parse_regions(region), seed=int(seed), steps=job.steps, guidance_scale=job.guidance_scale,
        modality=job.modality, output_grid=job.output_grid, device=job.device, precision=job.precision, quality_retries=job.quality_retries,
        max_gpu_memory=parse_memory(job.max_gpu_memory),
    )
    result = generate(request, progress=_progress, log=_log)
    emit({"event": "progress", "stage": "write", "step": 0, "total": 1, "eta_s": None})
    paths = result.write(job.output_dir, job.format)
    emit({"event": "progress", "stage": "write", "step": 1, "total": 1, "eta_s": 0.0})
    return {**paths, "provenance_data": result.provenance}


def run_inpaint(job: InpaintJob) -> dict[str, Any]:
    check_inpaint_job(job)
    try:
        from MAISIEngine.inpaint import run_inpaint_job
    except ImportError:
        raise MaisiError("tumor inpainting is not available in this engine version",
                         "update MAISIEngine to a version with the inpaint module") from None
    return run_inpaint_job(job, progress=_progress, log=_log)


def check_phantom_job(job: PhantomJob) -> None:
    from MAISIEngine import validation as v

    if not isinstance(job.output_dir, str) or not job.output_dir.strip():
        raise MaisiError("'output_dir' must name a folder", "give the folder the phantom is written to")
    size = v.check_size(job.size, "size")
    if size is not None and min(size) < 16:
        raise MaisiError(f"'size' {list(size)} is too small for a phantom", "use at least 16 voxels per axis")
    v.check_spacing(job.spacing, "spacing")
    v.check_seed(job.seed, "seed")
    if not isinstance(job.region, str) or not isinstance(job.tumors, list):
        raise MaisiError("'region' must be a name and 'tumors' a list of names", 'e.g. "chest-abdomen", ["liver"]')


def run_phantom(job: PhantomJob) -> dict[str, Any]:
    from MAISIEngine.phantom import make_phantom, write_phantom

    check_phantom_job(job)

    emit({"event": "progress", "stage": "phantom", "step": 0, "total": 1, "eta_s": None})
    phantom = make_phantom(size=tuple(job.size), spacing=tuple(job.spacing), region=job.region, seed=job.seed,
                           tumors=tuple(job.tumors))
    paths = write_phantom(phantom, Path(job.output_dir))
    emit({"event": "progress", "stage": "phantom", "step": 1, "total": 1, "eta_s": 0.0})
    return {"output_dir": job.output_dir, **{k: str(v) for k, v in dict(paths).items()}}


def run_download(job: DownloadJob) -> dict[str, Any]:
    from MAISIEngine.weights import download_model

    state = {"start": time.perf_counter()}

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - state["start"]
        eta = elapsed / done * (total - done) if done and total else None
        emit({"event": "progress", "stage": "download", "step": done, "total": total, "eta_s": eta})

    files = download_model(job.model, progress=progress)
    return {"files": [str(f) for f in files]}


def run_generate_mask(job: MaskGenerateJob) -> dict[str, Any]:
    from MAISIEngine.maskgen.worker_job import run_mask_job

    return run_mask_job(job, emit, _log)


RUNNERS = {GenerateJob: run_generate, InpaintJob: run_inpaint, PhantomJob: run_phantom, DownloadJob: run_download,
           MaskGenerateJob: run_generate_mask}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _on_sigterm)
    if len(argv) != 1:
        emit({"event": "error", "message": "usage: python -m MAISIEngine.worker JOB.json", "hint": "pass one job file"})
        return 2
    try:
        job = read_job(argv[0])
        result = RUNNERS[type(job)](job)
        if "provenance_data" in result:  # what the server hands to remote clients: no local path or name
            result["provenance_data"] = scrub(result["provenance_data"])
        emit({"event": "result", **result})
        return 0
    except CancelledError as exc:
        emit({"event": "cancelled", "message": exc.message})
        return exc.exit_code
    except MaisiError as exc:
        emit({"event": "error", "message": exc.message, "hint": exc.hint, "kind": type(exc).__name__})
        return exc.exit_code
    except MemoryError:
        emit({"event": "error", "message": "the job ran out of memory",
              "hint": "use a smaller size, --max-gpu-memory for a lower-memory plan, or the CPU"})
        return 3
    except Exception as exc:  # noqa: BLE001 - the front end shows this; the traceback goes to stderr
        import traceback

        traceback.print_exc(file=sys.stderr)
        out_of_memory = "out of memory" in str(exc).lower()
        emit({"event": "error",
              "message": "the GPU ran out of memory" if out_of_memory else f"internal error {exc.__class__.__name__}: {exc}",
              "hint": "use a lower-memory plan (max GPU memory) or the CPU" if out_of_memory
              else "please report it with the job file"})
        return 1


if __name__ == "__main__":
    sys.exit(main())
