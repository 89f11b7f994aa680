"""`maisi serve`: an HTTP job server over the worker protocol, for clients without a GPU.

Submit a job with its files (multipart), follow progress by polling or server-sent events, download
results, cancel. Token authentication (compared in constant time), an upload size limit, uploaded
file names reduced to safe base names inside the job folder, one job at a time per GPU with a queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from MAISIEngine import __version__
from MAISIEngine.jobs import parse_job
from MAISIEngine.errors import MaisiError
from MAISIEngine.server.queue import FINAL, JobStore

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FILE_FIELDS = {"mask", "image", "labels", "tumor"}


def safe_filename(name: str) -> str:
    """A client's file name reduced to one safe path component, or a 400."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if base in ("", ".", "..") or not SAFE_NAME.match(base) or ".." in base:
        raise HTTPException(status_code=400, detail=f"unsafe file name {name!r}")
    return base


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_app(store: JobStore, token: str | None, max_upload_bytes: int) -> FastAPI:
    app = FastAPI(title="MAISI job server", version=__version__)
    expected = token_digest(token) if token else None

    def authorise(request: Request) -> None:
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
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "devices": store.devices}

    @app.get("/whoami", dependencies=[Depends(authorise)])
    def whoami() -> dict[str, Any]:
        """An authenticated ping: clients check their token here before submitting anything."""
        return {"status": "ok", "authenticated": True, "version": __version__, "devices": store.devices}

    @app.post("/jobs", dependencies=[Depends(authorise)])
    async def submit(request: Request) -> JSONResponse:
        length = int(request.headers.get("content-length") or 0)
        if length > max_upload_bytes:
            raise HTTPException(status_code=413, detail=f"upload of {length} bytes exceeds the limit of {max_upload_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > max_upload_bytes:
                raise HTTPException(status_code=413, detail=f"upload exceeds the limit of {max_upload_bytes} bytes")
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartParser

        async def replay():
            yield bytes(body)

        form = await MultiPartParser(request.headers, replay(), max_part_size=max_upload_bytes).parse()
        try:
            job = json.loads(str(form.get("job") or "{}"))
        except ValueError:
            raise HTTPException(status_code=400, detail="the 'job' field must hold JSON") from None
        job_id, folder = store.new_job_folder()
        inputs = folder / "inputs"
        for field_name, value in form.multi_items():
            if field_name not in FILE_FIELDS or not isinstance(value, UploadFile):
                continue
            name = safe_filename(value.filename or field_name)
            target = (inputs / f"{field_name}-{name}").resolve()
            if target.parent != inputs.resolve():
                raise HTTPException(status_code=400, detail="file name escapes the job folder")
            target.write_bytes(await value.read())
            job[field_name] = str(target)
        job.pop("output_dir", None)
        job["output_dir"] = str(folder / "output")
        try:
            parse_job(job)
        except MaisiError as exc:
            raise HTTPException(status_code=422, detail={"message": exc.message, "hint": exc.hint}) from None
        state = store.submit(job_id, job)
        return JSONResponse(describe(state), status_code=201)

    @app.get("/jobs/{job_id}", dependencies=[Depends(authorise)])
    def status(job_id: str) -> dict[str, Any]:
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
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise MaisiError(f"cannot read token file {path} ({exc.strerror})", "write the token into a file") from None
    if len(token) < 16:
        raise MaisiError("the token is shorter than 16 characters", "use a long random token, e.g. `openssl rand -hex 32`")
    return token
