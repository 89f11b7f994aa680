"""Where generation runs: on this computer (a worker process) or on a MAISI job server (`maisi serve`).

Both front ends keep the choice as an `ExecutionSettings` (mode, server URL, token *file*) and get
their runner from `make_runner`; the local `JobRunner` and the `RemoteJobRunner` have the same API,
so nothing else in a front end depends on the choice. The access token is read from its file only when
a runner is made: it is never kept in the settings, a saved scene, the desktop's settings file or on
the screen.

Only generation and inpainting need the GPU and go to the server; drawing a phantom template and
downloading weights for this computer stay local (`SERVER_JOB_TYPES`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from MAISIEngine.errors import MaisiError

from .jobs import JobRunner, RunningJob

if TYPE_CHECKING:  # the client imports requests; a purely local session never loads it
    from .remote import RemoteJob, RemoteJobRunner

LOCAL, SERVER = "local", "server"
MODE_LABELS = {LOCAL: "This computer", SERVER: "Server"}
"""The words the front ends show for each mode, in display order."""
DEFAULT_SERVER_URL = "http://127.0.0.1:8765"
"""Where `maisi serve` listens by default (an SSH tunnel to a GPU machine ends here too)."""
SERVER_JOB_TYPES = frozenset({"generate", "inpaint"})
"""Job types sent to the server in Server mode; the others always run on this computer."""

TOKEN_HINT = "choose the file that holds the server's access token (the file given to `maisi serve --token-file`)"


@dataclass(frozen=True)
class ExecutionSettings:
    """The user's choice of where jobs run; holds the token file's path, never the token."""

    mode: str = LOCAL
    url: str = DEFAULT_SERVER_URL
    token_file: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODE_LABELS:
            raise ValueError(f"unknown execution mode {self.mode!r}; expected one of {sorted(MODE_LABELS)}")

    @property
    def on_server(self) -> bool:
        return self.mode == SERVER

    @property
    def label(self) -> str:
        return MODE_LABELS[self.mode]

    @classmethod
    def from_values(cls, mode_or_label: str, url: str | None, token_file: str | Path | None) -> ExecutionSettings:
        """Settings from what widgets or a settings file hold (labels accepted, blanks cleaned).

        An empty path widget reads back as `Path("")`, i.e. ".", which means "no token file". An
        unknown mode (a settings file from another version) falls back to this computer.
        """
        by_label = {label: mode for mode, label in MODE_LABELS.items()}
        mode = by_label.get(str(mode_or_label), str(mode_or_label))
        if mode not in MODE_LABELS:
            mode = LOCAL
        token = "" if token_file is None else str(token_file).strip()
        if token in (".", ""):
            token = ""
        return cls(mode, (url or "").strip(), token)

    def to_dict(self) -> dict[str, str]:
        """For a settings store (QSettings): the mode, the URL and the token file's path."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionSettings:
        return cls.from_values(str(data.get("mode", LOCAL)), data.get("url", DEFAULT_SERVER_URL),
                               data.get("token_file", ""))


def normalise_url(url: str) -> str:
    """The server's base URL without a trailing slash, or a clear error for anything else."""
    text = (url or "").strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MaisiError(f"{text!r} is not a server address" if text else "no server address is set",
                         "enter the address `maisi serve` prints, e.g. http://127.0.0.1:8765 or https://gpu-server:8765")
    if parts.query or parts.fragment:
        raise MaisiError(f"the server address {text} has a query or fragment",
                         "enter only http(s)://HOST:PORT (and a path prefix if a proxy adds one)")
    return text.rstrip("/")


def read_token_file(path: str | Path) -> str | None:
    """The token in `path` (surrounding blanks removed); None when no file is chosen.

    A server on 127.0.0.1 may run without a token, so no file is not an error here; the server
    answers 401 if it wanted one.
    """
    if not str(path or "").strip():
        return None
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or ("not a text file" if isinstance(exc, UnicodeDecodeError) else str(exc))
        raise MaisiError(f"cannot read the token file {file} ({reason})", TOKEN_HINT) from None
    token = text.strip()
    if not token:
        raise MaisiError(f"the token file {file} is empty", TOKEN_HINT)
    if any(ch.isspace() for ch in token) or not token.isprintable():
        raise MaisiError(f"the token file {file} holds more than one token",
                         "it should hold the token alone, on one line")
    return token


def make_runner(settings: ExecutionSettings, local: JobRunner | None = None) -> JobRunner | RemoteJobRunner:
    """The runner for `settings`: `local` (or a default JobRunner) on this computer, else a server client."""
    if not settings.on_server:
        return local or JobRunner()
    url = normalise_url(settings.url)
    token = read_token_file(settings.token_file)
    from .remote import RemoteJobRunner

    return RemoteJobRunner(url, token)


def runner_for(job: dict[str, Any], settings: ExecutionSettings, local: JobRunner | None = None) -> JobRunner | RemoteJobRunner:
    """The runner a job goes to: generation and inpainting follow `settings`, other jobs stay local."""
    if str(job.get("type")) in SERVER_JOB_TYPES:
        return make_runner(settings, local)
    return local or JobRunner()


def start_job(job: dict[str, Any], workdir: str | Path, settings: ExecutionSettings,
              local: JobRunner | None = None) -> RunningJob | RemoteJob:
    """Start `job` where `settings` say (see `runner_for`); returns at once with the running job."""
    return runner_for(job, settings, local).start(job, Path(workdir))


def run_to_end(running: RunningJob | RemoteJob, timeout_s: float, tick: Callable[[], Any] | None = None,
               interval_s: float = 0.05) -> RunningJob | RemoteJob:
    """Poll a started job until it ends, calling `tick` between polls (an application's event loop).

    The job is asked whether it still runs before the last poll, so the returned job holds all its
    events and, on success, its result. Past `timeout_s` the job is cancelled and a MaisiError raised.
    """
    deadline = time.monotonic() + timeout_s
    while running.is_running():
        running.poll()
        if tick is not None:
            tick()
        if time.monotonic() > deadline:
            running.cancel()
            raise MaisiError(f"the job did not finish in {timeout_s:.0f} s", "try a smaller size or fewer steps")
        time.sleep(interval_s)
    running.poll()
    return running


def check_connection(settings: ExecutionSettings) -> str:
    """Reach the server and check the token; one line for the user, or a MaisiError saying what failed."""
    if not settings.on_server:
        return "Jobs run on this computer."
    runner = make_runner(settings)
    health = runner.check()  # an authenticated ping: a refused token raises here
    devices = ", ".join(str(d) for d in health.get("devices", [])) or "?"
    access = "token accepted" if "Authorization" in runner.headers else "no token needed"
    return f"Connected: MAISI server {health.get('version', '?')} on {devices}; {access}."
