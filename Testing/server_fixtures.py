"""A real job server (uvicorn) on 127.0.0.1 in a background thread, for server and client tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TOKEN = "s3cret-token-for-tests-0123456789"
FINAL_STATES = ("done", "failed", "cancelled")


def wait_for_status(url: str, job_id: str, wanted: tuple[str, ...] = FINAL_STATES, timeout: float = 120,
                    poll_s: float = 0.05) -> dict:
    """Poll GET /jobs/{id} with the test token until the job is in one of `wanted`; its state."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = requests.get(f"{url}/jobs/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
        if state["status"] in wanted:
            return state
        time.sleep(poll_s)
    raise AssertionError(f"job {job_id} never reached {wanted}")


@contextmanager
def running_server(jobs_dir: Path, token: str | None = TOKEN, max_upload_bytes: int = 4 << 20,
                   devices: list[str] | None = None, model_dirs: list[Path] | None = None,
                   **options: object) -> Iterator[tuple[str, object]]:
    """The server as `maisi serve` runs it (header timeout protocol included); `model_dirs` are offered
    to clients by folder name, `options` go to `create_app` (max_queued, max_parallel_uploads, ...)."""
    import uvicorn

    from MAISIEngine.server.app import create_app
    from MAISIEngine.server.guard import HeaderTimeoutH11
    from MAISIEngine.server.queue import JobStore

    store = JobStore(jobs_dir, devices or ["cpu"])
    app = create_app(store, token, max_upload_bytes, model_dirs={Path(d).name: Path(d) for d in model_dirs or []},
                     **options)  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", http=HeaderTimeoutH11,
                                           timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        store.shutdown()
        server.should_exit = True
        thread.join(timeout=10)
