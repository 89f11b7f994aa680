"""Run one engine job in a separate process and follow it through its JSON-lines protocol.

A front end never imports torch: it writes `job.json`, starts `python -m MAISIEngine.worker job.json`
in its own process group (so Cancel reaches the launcher's children too, e.g. Slicer's `PythonSlicer`
wrapper and the real interpreter under it), and polls the events that a reader thread collects. The UI
thread therefore never blocks on the worker, a CUDA out-of-memory error cannot take the application
down, and GPU memory is released when the worker exits.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MAISIEngine.errors import MaisiError
from MAISIEngine.io.atomic import write_text_atomic

STDERR_TAIL_LINES = 40
"""How many of the worker's last stderr lines are kept to explain a crash."""

STAGE_WEIGHTS: dict[str, float] = {
    "load": 0.06,
    "encode": 0.05,
    "sampling": 0.70,
    "decode": 0.15,
    "decoding": 0.15,
    "write": 0.03,
    "phantom": 1.0,
    "download": 1.0,
}
"""Share of the run time each stage the worker reports takes on a typical job (others: 0.05)."""

DEFAULT_STAGE_WEIGHT = 0.05


def engine_search_path() -> str | None:
    """The folder holding the `MAISIEngine` package, for the worker's PYTHONPATH.

    Inside Slicer the engine lives beside the module rather than in site-packages, so the worker
    process would not find it without this. Looking the package up does not import it (nor torch).
    """
    spec = importlib.util.find_spec("MAISIEngine")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))).parent)


def worker_environment(overrides: dict[str, str] | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: `base` (default: ours) plus `overrides`, unbuffered output, the engine on PYTHONPATH.

    In Slicer `base` is the environment Slicer was started with (`slicer.util.startupEnvironment()`):
    the PythonSlicer launcher then sets up its own paths, as for any process Slicer launches.
    """
    env = dict(os.environ if base is None else base)
    env.update(overrides or {})
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    engine_dir = engine_search_path()
    if engine_dir:
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if engine_dir not in parts:
            env["PYTHONPATH"] = os.pathsep.join([engine_dir, *parts])
    return env


def parse_line(line: str) -> dict[str, Any]:
    """One stdout line as an event; anything that is not a JSON event becomes a log event."""
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("event"), str):
            return value
    return {"event": "log", "message": text}


def format_duration(seconds: float) -> str:
    """A short human duration: '4 s', '2 min 5 s', '1 h 3 min'."""
    seconds = max(0, int(round(float(seconds))))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def describe_progress(event: dict[str, Any]) -> str:
    """One line for a status bar, e.g. 'Sampling: step 3 of 20, ETA 4 s'."""
    kind = event.get("event")
    if kind == "progress":
        stage = str(event.get("stage") or "working").replace("_", " ")
        text = stage[:1].upper() + stage[1:]
        step, total = event.get("step"), event.get("total")
        details = []
        if step is not None and total:
            details.append(f"step {int(step)} of {int(total)}")
        eta = event.get("eta_s")
        if eta is not None and float(eta) >= 0 and (total is None or step is None or int(step) < int(total)):
            details.append(f"ETA {format_duration(float(eta))}")
        if event.get("message"):
            details.append(str(event["message"]))
        return f"{text}: {', '.join(details)}" if details else text
    if kind == "error":
        message = str(event.get("message", "the job failed"))
        hint = event.get("hint")
        return f"Error: {message} ({hint})" if hint else f"Error: {message}"
    if kind == "cancelled":
        return "Cancelled"
    if kind == "result":
        where = event.get("output_dir") or event.get("image") or ""
        return f"Done: {where}" if where else "Done"
    return str(event.get("message", ""))


def stage_weight(stage: str) -> float:
    return STAGE_WEIGHTS.get(stage.lower(), DEFAULT_STAGE_WEIGHT)


class ProgressTracker:
    """Turns the stream of progress events into one monotone fraction in [0, 1].

    Stages are weighted by their typical share of the run time; a stage seen later closes every stage
    before it. The fraction never goes backwards, so the bar does not jump when a new stage starts.
    """

    def __init__(self, expected_stages: list[str] | None = None) -> None:
        self.expected = list(expected_stages or [])
        self.seen: list[str] = []
        self.current_step_fraction = 0.0
        self.fraction = 0.0

    def update(self, event: dict[str, Any]) -> float:
        stage = str(event.get("stage") or "working")
        if stage not in self.seen:
            self.seen.append(stage)
            self.current_step_fraction = 0.0
        step, total = event.get("step"), event.get("total")
        if step is not None and total:
            self.current_step_fraction = min(1.0, max(0.0, float(step) / float(total)))
        stages = list(self.expected) + [s for s in self.seen if s not in self.expected]
        total_weight = sum(stage_weight(s) for s in stages) or 1.0
        index = self.seen.index(stage)
        done = sum(stage_weight(s) for s in self.seen[:index])
        # Expected stages the worker skipped (e.g. no download) count as done once a later one runs.
        if stage in self.expected:
            position = self.expected.index(stage)
            done += sum(stage_weight(s) for s in self.expected[:position] if s not in self.seen)
        value = (done + stage_weight(stage) * self.current_step_fraction) / total_weight
        self.fraction = max(self.fraction, min(1.0, value))
        return self.fraction


EXPECTED_STAGES: dict[str, list[str]] = {
    "generate": ["load", "sampling", "decode", "write"],
    "inpaint": ["load", "encode", "sampling", "decode"],
    "generate-mask": ["load", "sampling", "decoding"],
}
"""The stages the worker reports for each job type, in order (a skipped one counts as done)."""


def record_event(job: Any, event: dict[str, Any]) -> None:
    """File one event on a job (local or remote): progress, result, error or cancellation."""
    kind = event.get("event")
    if kind == "progress":
        job._tracker.update(event)
    elif kind == "result":
        job.result = event
        job._tracker.fraction = 1.0
    elif kind == "error":
        job.error = event
    elif kind == "cancelled":
        job.cancelled = True
    job.events.append(event)
    job._unreturned.append(event)


def drain_events(job: Any, hold_result: bool = False) -> None:
    """Move every queued event onto the job; with `hold_result`, a result waits in the queue."""
    while True:
        try:
            event = job._queue.get_nowait()
        except queue.Empty:
            return
        if hold_result and event.get("event") == "result":
            job._queue.put(event)
            return
        record_event(job, event)


class RunningJob:
    """A worker process and the events it has printed so far."""

    def __init__(self, process: subprocess.Popen, job: dict[str, Any], workdir: Path) -> None:
        self.process = process
        self.job = job
        self.workdir = workdir
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.returncode: int | None = None
        self.cancelled = False
        self.started_at = time.monotonic()
        self._tracker = ProgressTracker(EXPECTED_STAGES.get(str(job.get("type", "")), []))
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._unreturned: list[dict[str, Any]] = []
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._lock = threading.Lock()
        self._stdout_thread = threading.Thread(target=self._read_stdout, name="maisi-worker-stdout", daemon=True)
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="maisi-worker-stderr", daemon=True)
        self._stdout_thread.start()
        self._stderr_thread.start()

    # -- reader threads -------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self._queue.put(parse_line(line))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self._stderr_tail.append(line.rstrip("\r\n"))

    # -- state ------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr_tail(self) -> str:
        with self._lock:
            return "\n".join(self._stderr_tail)

    @property
    def progress_fraction(self) -> float:
        return self._tracker.fraction

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    def _collect(self) -> None:
        drain_events(self)

    def _finish_if_exited(self) -> None:
        if self.returncode is not None:
            return
        code = self.process.poll()
        if code is None:
            return
        # The pipes close when the worker (and any child holding them) exits; read what is left.
        self._stdout_thread.join(timeout=5)
        self._stderr_thread.join(timeout=5)
        self._collect()
        self.returncode = code
        if code != 0 and self.error is None and not self.cancelled:
            self.error = self._crash_event(code)
            self.events.append(self.error)
            self._unreturned.append(self.error)

    def _crash_event(self, code: int) -> dict[str, Any]:
        """An error event for a worker that died without saying why (crash, kill, missing engine)."""
        tail = self.stderr_tail
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            message = f"the generation process was killed ({name})"
            hint = (
                "the system may have run out of memory: choose a smaller size or the CPU device, and close other programs"
                if -code == getattr(signal, "SIGKILL", 9)
                else "start the job again"
            )
        else:
            message = f"the generation process stopped unexpectedly (exit code {code})"
            hint = f"its last message was: {last}" if last else "see the log for details"
        return {"event": "error", "message": message, "hint": hint, "crashed": True,
                "returncode": code, "stderr_tail": tail}

    # -- public API -------------------------------------------------------------------------------
    def poll(self) -> list[dict[str, Any]]:
        """Events printed since the last call; never blocks."""
        self._collect()
        self._finish_if_exited()
        out, self._unreturned = self._unreturned, []
        return out

    def is_running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the worker to exit and return its exit code (raises subprocess.TimeoutExpired)."""
        self.process.wait(timeout=timeout)
        self._collect()
        self._finish_if_exited()
        assert self.returncode is not None
        return self.returncode

    def cancel(self, timeout: float = 5.0) -> None:
        """Stop the worker and every process it started: SIGTERM to the group, SIGKILL if it lingers.

        The worker removes its partial output on SIGTERM; if it could not (killed, or Windows, where
        there is no SIGTERM), the temporary output folder it was filling is removed here.
        """
        self.cancelled = True
        if self.process.poll() is None or group_members(self.process.pid):
            _signal_tree(self.process, graceful=True)
            if not _wait_for_group(self.process, timeout):
                _signal_tree(self.process, graceful=False)
                _wait_for_group(self.process, timeout)
        self.process.wait(timeout=timeout)
        self._collect()
        self._finish_if_exited()
        _remove_partial_output(self.job.get("output_dir"))


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group; the leader's pid names the group."""
    if os.name == "nt":
        return []
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, ...
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _wait_for_group(process: subprocess.Popen, timeout: float) -> bool:
    """Wait until the worker and all its children have exited; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so it does not count as alive
        if process.returncode is not None and not group_members(process.pid):
            return True
        time.sleep(0.05)
    return False


def _signal_tree(process: subprocess.Popen, graceful: bool) -> None:
    if os.name == "nt":
        signal_windows_tree(process, graceful)
        return
    try:
        os.killpg(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def taskkill_command(pid: int) -> list[str]:
    """Windows: end a process and every process it started (/T), at once (/F)."""
    return ["taskkill", "/T", "/F", "/PID", str(int(pid))]


def signal_windows_tree(process: Any, graceful: bool, run: Callable[..., Any] = subprocess.run) -> str:
    """Stop a worker's process tree on Windows; returns "break" or "taskkill" (what was done).

    A graceful stop sends CTRL_BREAK_EVENT to the worker's process group, which lets it remove its
    partial output. That needs a console shared with the worker; Slicer has none and the worker's is
    hidden, so the call raises OSError there: the tree is then ended with taskkill, which also reaches
    the interpreter under the PythonSlicer launcher.
    """
    if graceful:
        try:
            process.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM))
            return "break"
        except (OSError, ValueError):
            pass
    run(taskkill_command(process.pid), capture_output=True, check=False)
    return "taskkill"


def popen_platform_options(platform: str = os.name) -> dict[str, Any]:
    """Popen options that put the worker in its own process group, with no console window on Windows."""
    if platform != "nt":
        return {"start_new_session": True}
    startupinfo = subprocess.STARTUPINFO()  # type: ignore[attr-defined]
    startupinfo.dwFlags |= subprocess.STARTF_USESHOWWINDOW  # type: ignore[attr-defined]
    startupinfo.wShowWindow = 0  # SW_HIDE
    flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
    return {"creationflags": flags, "startupinfo": startupinfo}


def _remove_partial_output(output_dir: str | None) -> None:
    """Delete the temporary folders an atomic output directory leaves when its writer is killed."""
    if not output_dir:
        return
    target = Path(output_dir)
    if not target.parent.is_dir():
        return
    for leftover in target.parent.glob(f".{target.name}.*.partial"):
        shutil.rmtree(leftover, ignore_errors=True)


class WorkerStartError(MaisiError):
    """The worker process could not be started at all (no Python interpreter at that path)."""


class JobRunner:
    """Starts workers; one runner serves many jobs."""

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None,
                 base_env: dict[str, str] | None = None) -> None:
        """`python` runs the worker (default: this interpreter); `env` adds or replaces variables of
        `base_env` (default: this process's environment)."""
        self.python = python or sys.executable
        self.env = env
        self.base_env = base_env

    def command(self, job_path: Path) -> list[str]:
        return [self.python, "-u", "-m", "MAISIEngine.worker", str(job_path)]

    def start(self, job: dict[str, Any], workdir: Path) -> RunningJob:
        """Write `job.json` into `workdir` and start the worker on it; returns at once."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        job_path = workdir / "job.json"
        write_text_atomic(job_path, json.dumps(job, indent=2, default=str))
        options = popen_platform_options()
        try:
            process = subprocess.Popen(
                self.command(job_path),
                cwd=str(workdir),
                env=worker_environment(self.env, self.base_env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                **options,
            )
        except OSError as exc:
            raise WorkerStartError(
                f"cannot start the generation process with {self.python}: {exc.strerror or exc}",
                "check the Python interpreter setting (in Slicer: PythonSlicer next to the Slicer executable)",
            ) from None
        return RunningJob(process, job, workdir)
