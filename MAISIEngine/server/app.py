"""`maisi serve`: an HTTP job server over the worker protocol, for clients without a GPU.

Submit a job with its files (multipart, streamed to disk), follow progress by polling or server-sent
events, download results, cancel. Token authentication (compared in constant time); job fields typed
(`schema`), files only as uploads and models only by name; uploads bounded per part, in total and in
number at once; a bounded queue (429 + Retry-After); a Host / Origin guard (`guard`); one job at a time
per device. Nothing a client is sent names a path on the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from MAISIEngine import __version__
from MAISIEngine.jobs import parse_job
from MAISIEngine.errors import MaisiError
from MAISIEngine.server.guard import LOOPBACK_HOSTS, HostOriginGuard
from MAISIEngine.server.queue import FINAL, JobStore
from MAISIEngine.server.schema import JobRefused, validate_job
from MAISIEngine.server.uploads import receive_multipart

DEFAULT_MAX_QUEUED = 16
DEFAULT_PARALLEL_UPLOADS = 4
RETRY_AFTER_S = 10


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def offered_models(model_dirs: dict[str, Path] | None = None) -> dict[str, Path | None]:
    """The models a client may name: the shipped presets, and model folders given to `maisi serve`."""
    from MAISIEngine.presets import shipped_preset_names

    offered: dict[str, Path | None] = {name: None for name in shipped_preset_names()}
    offered.update({name: Path(folder) for name, folder in (model_dirs or {}).items()})
    return offered


def refuse(status: int, message: str, hint: str = "", headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail={"message": message, "hint": hint}, headers=headers)


def create_app(store: JobStore, token: str | None, max_upload_bytes: int, model_dirs: dict[str, Path] | None = None,
               max_queued: int = DEFAULT_MAX_QUEUED, max_parallel_uploads: int = DEFAULT_PARALLEL_UPLOADS,
               allowed_hosts: list[str] | None = None, allowed_origins: tuple[str, ...] = ()) -> FastAPI:
    """The job server's routes. Without a token only loopback Host names are served (`guard`)."""
    app = FastAPI(title="MAISI job server", version=__version__)
    if token is None and allowed_hosts is None:
        allowed_hosts = sorted(LOOPBACK_HOSTS)
    app.add_middleware(HostOriginGuard, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
    expected = token_digest(token) if token else None
    models = offered_models(model_dirs)
    store.public_paths = [(str(folder), name) for name, folder in models.items() if folder is not None]
    upload_slots = asyncio.Semaphore(max_parallel_uploads)

    async def authorise(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        presented = header[7:] if header.lower().startswith("bearer ") else ""
        # Both sides are fixed-length digests, compared in constant time: no length or prefix leaks.
        if not hmac.compare_digest(token_digest(presented), expected):
            raise HTTPException(status_code=401, detail="missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    def state_or_404(job_id: str) -> Any:
        state = store.get(job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id) else None
        if state is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return state

    def describe(state: Any) -> dict[str, Any]:
        return {**asdict(state), "queue_position": store.queue_position(state.id)}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "devices": store.devices}

    @app.get("/whoami", dependencies=[Depends(authorise)])
    async def whoami() -> dict[str, Any]:
        """An authenticated ping: clients check their token here before submitting anything."""
        return {"status": "ok", "authenticated": True, "version": __version__, "devices": store.devices}

    @app.get("/models", dependencies=[Depends(authorise)])
    def list_models() -> dict[str, Any]:
        return {"models": sorted(models)}

    @app.post("/jobs", dependencies=[Depends(authorise)])
    async def submit(request: Request) -> JSONResponse:
        busy = {"Retry-After": str(RETRY_AFTER_S)}
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            raise refuse(400, "the Content-Length header is not a number") from None
        if length > max_upload_bytes:
            raise refuse(413, f"upload of {length} bytes exceeds the limit of {max_upload_bytes}",
                         "send smaller files, or ask for a larger --max-upload-mb")
        if store.queued_count() >= max_queued:
            raise refuse(429, f"the queue is full ({max_queued} jobs wait)", "try again later", busy)
        if upload_slots.locked():
            raise refuse(429, f"{max_parallel_uploads} uploads are already in progress", "try again shortly", busy)
        async with upload_slots:
            job_id, folder = store.new_job_folder()
            try:
                received = await receive_multipart(request, folder / "inputs", max_upload_bytes, max_upload_bytes)
                text = received.fields.get("job")
                if text is None:
                    raise JobRefused(422, "the form lacks the 'job' field", "send the job JSON as the field 'job'")
                try:
                    raw = json.loads(text)
                except (ValueError, RecursionError):
                    raise JobRefused(400, "the 'job' field must hold JSON", "send the job as a JSON object") from None
                job = validate_job(raw, set(received.files), models)
                job.update({name: str(path) for name, path in received.files.items()})
                if models.get(job.get("model", "")) is not None:
                    job["model"] = str(models[job["model"]])
                job["output_dir"] = str(folder / "output")
                parse_job(job)
                state = store.submit(job_id, job, max_queued)
            except JobRefused as exc:
                store.discard(job_id)
                raise refuse(exc.status, exc.message, exc.hint, busy if exc.status == 429 else None) from None
            except MaisiError as exc:
                store.discard(job_id)
                raise refuse(422, exc.message, exc.hint) from None
            except BaseException:
                store.discard(job_id)
                raise
        return JSONResponse(describe(state), status_code=201)

    @app.get("/jobs/{job_id}", dependencies=[Depends(authorise)])
    async def status(job_id: str) -> dict[str, Any]:
        return describe(state_or_404(job_id))

    @app.get("/jobs/{job_id}/events", dependencies=[Depends(authorise)])
    async def events(job_id: str, start: int = 0) -> StreamingResponse:
        state_or_404(job_id)

        async def stream():
            sent = start
            while True:
                new = store.events(job_id, sent)
                for event in new:
                    yield f"data: {json.dumps(event)}\n\n"
                sent += len(new)
                current = store.get(job_id)
                if current is None or (current.status in FINAL and not store.events(job_id, sent)):
                    yield f"event: end\ndata: {json.dumps({'status': getattr(current, 'status', 'gone')})}\n\n"
                    return
                await asyncio.sleep(0.2)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/jobs/{job_id}/files/{name}", dependencies=[Depends(authorise)])
    def download(job_id: str, name: str) -> FileResponse:
        state = state_or_404(job_id)
        if name not in state.result_files:
            raise HTTPException(status_code=404, detail=f"job {job_id} has no result file {name!r}")
        return FileResponse(store.folder(job_id) / "output" / name, filename=name)

    @app.post("/jobs/{job_id}/cancel", dependencies=[Depends(authorise)])
    def cancel(job_id: str) -> dict[str, Any]:
        state_or_404(job_id)
        return describe(store.cancel(job_id))

    return app


def read_token(path: Path | None) -> str | None:
    """The token in `path`; a warning when others may read the file."""
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise MaisiError(f"cannot read token file {path} ({exc.strerror})", "write the token into a file") from None
    if len(token) < 16:
        raise MaisiError("the token is shorter than 16 characters", "use a long random token, e.g. `openssl rand -hex 32`")
    mode = Path(path).stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        print(f"warning: token file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`",
              file=sys.stderr)
    return token
