"""Run jobs on a MAISI job server (`maisi serve`) instead of this computer.

`RemoteJobRunner` has the same shape as `jobs.JobRunner`: `start(job, workdir)` returns an object with
`poll()`, `is_running()`, `wait()`, `cancel()`, `result`, `error`, `events` and `progress_fraction`, so
the Slicer module and the desktop app switch between "This computer" and "Server" without other
changes. Input files named in the job are uploaded; results are downloaded into `workdir/output` and
the result event's paths point at the local copies.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import requests

from MAISIEngine.errors import MaisiError
from MAISISynthLib.jobs import EXPECTED_STAGES, ProgressTracker, drain_events

UPLOAD_KEYS = ("mask", "image", "labels", "tumor")
"""Job keys that name input files on this computer."""


class RemoteJob:
    """A job running on the server, followed through its server-sent event stream."""

    def __init__(self, base_url: str, headers: dict[str, str], job_id: str, job: dict[str, Any], workdir: Path) -> None:
        self.base_url, self.headers, self.id, self.job, self.workdir = base_url, headers, job_id, job, workdir
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.returncode: int | None = None
        self.cancelled = False
        self._tracker = ProgressTracker(EXPECTED_STAGES.get(str(job.get("type", "")), []))
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._unreturned: list[dict[str, Any]] = []
        self._done = threading.Event()
        self._state_lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, name="maisi-remote-events", daemon=True)
        self._thread.start()

    @property
    def progress_fraction(self) -> float:
        return self._tracker.fraction

    def _follow(self) -> None:
        """Read the event stream; reconnect from where it broke off until the job is final."""
        received = 0
        while not self._done.is_set():
            try:
                with requests.get(f"{self.base_url}/jobs/{self.id}/events", params={"start": received},
                                  headers=self.headers, stream=True, timeout=(10, 60)) as response:
                    if response.status_code == 404:  # the server lost the job (restarted, or it expired)
                        self._queue.put({"event": "error", "message": "the server no longer knows this job",
                                         "hint": "the server may have restarted; start the job again"})
                        self._finish("failed")
                        return
                    response.raise_for_status()
                    kind = "message"
                    for raw in response.iter_lines(decode_unicode=True):
                        if raw is None or raw == "":
                            kind = "message"
                            continue
                        if raw.startswith("event:"):
                            kind = raw[6:].strip()
                        elif raw.startswith("data:"):
                            payload = json.loads(raw[5:])
                            if kind == "end":
                                self._finish(str(payload.get("status")))
                                return
                            received += 1
                            self._queue.put(payload)
            except (requests.RequestException, ValueError):
                time.sleep(1.0)

    def _finish(self, status: str) -> None:
        """Download the results of a finished job, then publish the exit code and `done` together."""
        code = 1
        if status == "done":
            try:
                self._download_results()
                code = 0
            except (requests.RequestException, OSError) as exc:
                self._queue.put({"event": "error", "message": f"could not download the result: {exc}",
                                 "hint": "check the connection to the server and try again"})
        elif status == "cancelled":
            code = 130
        with self._state_lock:
            self.returncode = code
            self._done.set()

    def _download_results(self) -> None:
        state = requests.get(f"{self.base_url}/jobs/{self.id}", headers=self.headers, timeout=30).json()
        output = self.workdir / "output"
        output.mkdir(parents=True, exist_ok=True)
        local: dict[str, str] = {"output_dir": str(output)}
        for name in state.get("result_files", []):
            with requests.get(f"{self.base_url}/jobs/{self.id}/files/{name}", headers=self.headers,
                              stream=True, timeout=(10, 300)) as response:
                response.raise_for_status()
                part = output / f".{name}.part"
                with open(part, "wb") as handle:
                    for chunk in response.iter_content(1 << 20):
                        handle.write(chunk)
                part.replace(output / name)
        for key, name in (("image", "image.nii.gz"), ("labels", "labels.nii.gz"), ("provenance", "provenance.json")):
            if (output / name).is_file():
                local[key] = str(output / name)
        self._local_paths = local

    def _collect(self) -> None:
        # A result waits until its files are downloaded; then its paths point at the local copies.
        drain_events(self, hold_result=not self._done.is_set())
        if self.result is not None and self.result.get("output_dir") != getattr(self, "_local_paths", {}).get("output_dir"):
            self.result.update(getattr(self, "_local_paths", {}))

    def poll(self) -> list[dict[str, Any]]:
        """Events received since the last call; never blocks."""
        self._collect()
        out, self._unreturned = self._unreturned, []
        return out

    def is_running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} is still running on the server")
        self._thread.join(timeout=5)
        self._collect()
        return int(self.returncode if self.returncode is not None else 1)

    def cancel(self, timeout: float = 10.0) -> None:
        self.cancelled = True
        requests.post(f"{self.base_url}/jobs/{self.id}/cancel", headers=self.headers, timeout=timeout)
        self._done.wait(timeout)
        self._collect()


class RemoteJobRunner:
    """Starts jobs on a server given its URL and access token (read from a file or passed in)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def check(self) -> dict[str, Any]:
        """The server's answer to an authenticated ping; a clear error when unreachable or the token is refused."""
        try:
            response = requests.get(f"{self.url}/whoami", headers=self.headers, timeout=10)
        except requests.RequestException as exc:
            raise MaisiError(f"cannot reach the MAISI server at {self.url} ({exc.__class__.__name__})",
                             "check the URL and that `maisi serve` runs there") from None
        if response.status_code == 401:
            raise MaisiError("the MAISI server refused the access token", "check the token file you chose")
        if response.status_code != 200:
            raise MaisiError(f"{self.url} did not answer like a MAISI server (HTTP {response.status_code})",
                             "check the URL and that `maisi serve` runs there")
        return response.json()

    def start(self, job: dict[str, Any], workdir: Path) -> RemoteJob:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        remote_job = {k: v for k, v in job.items() if k not in UPLOAD_KEYS and k != "output_dir"}
        if isinstance(remote_job.get("model"), str) and any(sep in remote_job["model"] for sep in "/\\"):
            # The server offers models by name, never by path: a model folder is known by its folder name.
            remote_job["model"] = Path(remote_job["model"]).name
        handles = {}
        try:
            for key in UPLOAD_KEYS:
                if job.get(key):
                    path = Path(job[key])
                    handles[key] = (path.name, open(path, "rb"), "application/octet-stream")
            try:
                response = requests.post(f"{self.url}/jobs", headers=self.headers,
                                         data={"job": json.dumps(remote_job)}, files=handles, timeout=(10, 600))
            except requests.RequestException as exc:
                raise MaisiError(f"cannot reach the MAISI server at {self.url} ({exc.__class__.__name__})",
                                 "check the URL and that `maisi serve` runs there") from None
        finally:
            for _, handle, _ in handles.values():
                handle.close()
        if response.status_code == 401:
            raise MaisiError("the MAISI server refused the access token", "check the token file you chose")
        if response.status_code == 413:
            raise MaisiError("the input files are larger than the server accepts", "ask its administrator to raise --max-upload-mb")
        if response.status_code >= 400:
            detail = response.json().get("detail") if response.headers.get("content-type", "").startswith("application/json") else response.text
            if isinstance(detail, dict):
                raise MaisiError(str(detail.get("message")), str(detail.get("hint", "")))
            raise MaisiError(f"the MAISI server refused the job: {detail}", "check the job's settings")
        return RemoteJob(self.url, self.headers, response.json()["id"], job, workdir)
