"""Server-side jobs: a folder per job, one queue, one runner thread per GPU, the worker as a subprocess.

Each job lives in `<jobs_dir>/<id>/` (job.json, inputs/, output/, events.jsonl, state.json), so it
survives a client disconnect and can be fetched later; jobs older than the retention time are removed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from MAISIEngine.io.atomic import write_text_atomic

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = (DONE, FAILED, CANCELLED)


@dataclass
class JobState:
    id: str
    status: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    device: str | None = None
    progress: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    result_files: list[str] = field(default_factory=list)
    provenance: dict[str, Any] | None = None


class JobStore:
    """Jobs on disk plus the in-memory queue and runners."""

    def __init__(self, root: Path, devices: list[str], keep_seconds: float = 24 * 3600,
                 python: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.public_paths: list[tuple[str, str]] = []  # (server path, name shown to clients)
        self.devices = devices or ["auto"]
        self.keep_seconds = keep_seconds
        self.python = python or sys.executable
        self.lock = threading.Lock()
        self.states: dict[str, JobState] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.cancel_requested: set[str] = set()
        self.pending: queue.Queue[str] = queue.Queue()
        self.order: list[str] = []
        self.changed = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self._load_existing()
        self.threads = [threading.Thread(target=self._runner, args=(d,), daemon=True, name=f"runner-{d}")
                        for d in self.devices]
        self.threads.append(threading.Thread(target=self._janitor, daemon=True, name="janitor"))
        for thread in self.threads:
            thread.start()

    def _janitor(self) -> None:
        while not self.stopping.wait(60.0):
            self.cleanup()

    # ---- persistence -------------------------------------------------------------------------
    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def _save(self, state: JobState) -> None:
        write_text_atomic(self.folder(state.id) / "state.json", json.dumps(asdict(state)))

    def _load_existing(self) -> None:
        """Finished jobs of an earlier server run stay fetchable; unfinished ones are marked failed."""
        for state_file in sorted(self.root.glob("*/state.json")):
            try:
                state = JobState(**json.loads(state_file.read_text()))
            except (ValueError, TypeError):
                continue
            if state.status not in FINAL:
                state.status, state.error = FAILED, {"message": "the server stopped while the job ran", "hint": "submit it again"}
                self._save(state)
            self.states[state.id] = state

    # ---- public API --------------------------------------------------------------------------
    def new_job_folder(self) -> tuple[str, Path]:
        """A fresh job folder, readable by the server's user only (0700; uploads are 0600)."""
        job_id = uuid.uuid4().hex
        folder = self.folder(job_id)
        folder.mkdir(mode=0o700)
        (folder / "inputs").mkdir(mode=0o700)
        return job_id, folder

    def discard(self, job_id: str) -> None:
        """Remove the folder of a submission that was refused: nothing of it stays on disk."""
        with self.lock:
            known = job_id in self.states
        if not known:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def queued_count(self) -> int:
        with self.lock:
            return sum(1 for s in self.states.values() if s.status == QUEUED)

    def scrub(self, value: Any, job_id: str) -> Any:
        """`value` with this server's paths replaced: job folder -> relative, model folders -> names."""
        from MAISIEngine.server.schema import scrub

        folder = str(self.folder(job_id))
        replacements = [(folder + os.sep, ""), (folder, "."), *self.public_paths, (str(self.root), "<jobs>")]
        replacements.sort(key=lambda pair: -len(pair[0]))
        return scrub(value, replacements)

    def submit(self, job_id: str, job: dict[str, Any], max_queued: int | None = None) -> JobState:
        from MAISIEngine.server.schema import JobRefused

        folder = self.folder(job_id)
        job = {**job, "output_dir": str(folder / "output")}
        write_text_atomic(folder / "job.json", json.dumps(job))
        state = JobState(job_id)
        with self.lock:
            if max_queued is not None and sum(1 for s in self.states.values() if s.status == QUEUED) >= max_queued:
                raise JobRefused(429, f"the queue is full ({max_queued} jobs wait)", "try again later")
            self.states[job_id] = state
            self.order.append(job_id)
            self._save(state)
        self.pending.put(job_id)
        return state

    def get(self, job_id: str) -> JobState | None:
        with self.lock:
            return self.states.get(job_id)

    def queue_position(self, job_id: str) -> int | None:
        with self.lock:
            waiting = [j for j in self.order if self.states[j].status == QUEUED]
        return waiting.index(job_id) if job_id in waiting else None

    def cancel(self, job_id: str) -> JobState | None:
        with self.lock:
            state = self.states.get(job_id)
            if state is None or state.status in FINAL:
                return state
            process = self.processes.get(job_id)
            if state.status == QUEUED:
                state.status, state.finished = CANCELLED, time.time()
                self._save(state)
                self.changed.notify_all()
                return state
            self.cancel_requested.add(job_id)
        if process is not None:
            _kill_tree(process)
        return self.get(job_id)

    def events(self, job_id: str, start: int = 0) -> list[dict[str, Any]]:
        path = self.folder(job_id) / "events.jsonl"
        if not path.is_file():
            return []
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines[start:] if line.strip()]

    def wait_for_change(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    def cleanup(self, now: float | None = None) -> list[str]:
        """Remove finished jobs older than the retention time."""
        now = time.time() if now is None else now
        removed = []
        with self.lock:
            for job_id, state in list(self.states.items()):
                if state.status in FINAL and state.finished and now - state.finished > self.keep_seconds:
                    shutil.rmtree(self.folder(job_id), ignore_errors=True)
                    del self.states[job_id]
                    removed.append(job_id)
        return removed

    def shutdown(self) -> None:
        """Stop: every unfinished job is marked failed at once (on disk too), then its worker is ended."""
        self.stopping.set()
        with self.lock:
            processes = list(self.processes.values())
            for state in self.states.values():
                if state.status not in FINAL:
                    state.status, state.finished = FAILED, time.time()
                    state.error = {"message": "the server stopped while the job waited or ran", "hint": "submit it again"}
                    self._save(state)
            self.changed.notify_all()
        for process in processes:
            _kill_tree(process)

    # ---- runners -----------------------------------------------------------------------------
    def _runner(self, device: str) -> None:
        while not self.stopping.is_set():
            try:
                job_id = self.pending.get(timeout=0.2)
            except queue.Empty:
                continue
            self._run(job_id, device)

    def _start(self, job_id: str, device: str) -> subprocess.Popen | None:
        """Start the worker and show the job `running` in one locked step, so a cancel never misses it."""
        folder = self.folder(job_id)
        with self.lock:
            state = self.states.get(job_id)
            if state is None or state.status != QUEUED or self.stopping.is_set():
                return None
            job = json.loads((folder / "job.json").read_text())
            if device != "auto" and "device" in _device_keys(job):
                job["device"] = device
                write_text_atomic(folder / "job.json", json.dumps(job))
            process = subprocess.Popen([self.python, "-m", "MAISIEngine.worker", str(folder / "job.json")],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                       start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                       preexec_fn=_lower_priority if os.name == "posix" else None)
            self.processes[job_id] = process
            state.status, state.started, state.device = RUNNING, time.time(), device
            self._save(state)
            self.changed.notify_all()
        return process

    def _run(self, job_id: str, device: str) -> None:
        folder = self.folder(job_id)
        process = self._start(job_id, device)
        if process is None:
            return
        final: dict[str, Any] | None = None
        assert process.stdout is not None
        with open(folder / "events.jsonl", "a") as log:
            for line in process.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"event": "log", "message": line.rstrip()}
                event = self.scrub(event, job_id) if isinstance(event, dict) else {"event": "log", "message": ""}
                log.write(json.dumps(event) + "\n")
                log.flush()
                with self.lock:
                    if event.get("event") == "progress":
                        self.states[job_id].progress = event
                    if event.get("event") in ("result", "error", "cancelled"):
                        final = event
                    self.changed.notify_all()
        code = process.wait()
        with self.lock:
            self.processes.pop(job_id, None)
            state = self.states[job_id]
            if state.status in FINAL:  # the server stopped and already marked it failed
                return
            state.finished = time.time()
            if job_id in self.cancel_requested:
                state.status = CANCELLED
            elif final and final.get("event") == "result" and code == 0:
                state.status = DONE
                output = folder / "output"
                state.result_files = sorted(p.name for p in output.iterdir() if p.is_file()) if output.is_dir() else []
                state.provenance = self.scrub(final.get("provenance_data"), job_id)
            elif code in (130, -signal.SIGTERM, -signal.SIGKILL) or (final and final.get("event") == "cancelled"):
                state.status = CANCELLED
            else:
                state.status = FAILED
                state.error = self.scrub({"message": (final or {}).get("message", f"the worker exited with code {code}"),
                                          "hint": (final or {}).get("hint", "")}, job_id)
            self._save(state)
            self.changed.notify_all()


WORKER_NICENESS = 5
"""Workers run a little below the server, so status answers stay fast while a job uses every core."""


def _lower_priority() -> None:
    os.nice(WORKER_NICENESS)


def _device_keys(job: dict[str, Any]) -> set[str]:
    return {"device"} if job.get("type") in ("generate", "inpaint") else set()


def _kill_tree(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the worker's process group, SIGKILL if it has not gone after `grace` seconds."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
