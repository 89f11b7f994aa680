"""Choosing where jobs run (`MAISISynthLib.execution`): settings, token files, runners, and the
connection check against a real `maisi serve` on 127.0.0.1."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from MAISIEngine.errors import MaisiError
from MAISISynthLib import execution
from MAISISynthLib.execution import ExecutionSettings
from MAISISynthLib.jobs import JobRunner
from server_fixtures import TOKEN, running_server


def token_file(tmp_path: Path, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "maisi.token"
    path.write_text(text)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_settings_from_widget_values_and_settings_files():
    assert ExecutionSettings() == ExecutionSettings("local", "http://127.0.0.1:8765", "")
    from_labels = ExecutionSettings.from_values("Server", "  http://gpu:8765/ ", Path("/keys/maisi.token"))
    assert from_labels == ExecutionSettings("server", "http://gpu:8765/", "/keys/maisi.token")
    assert from_labels.on_server and from_labels.label == "Server"
    # An empty path widget reads back as Path("") == "."; it means no token file.
    assert ExecutionSettings.from_values("This computer", "", Path("")).token_file == ""
    assert ExecutionSettings.from_dict(from_labels.to_dict()) == from_labels
    assert set(from_labels.to_dict()) == {"mode", "url", "token_file"}  # no token in a settings store
    assert ExecutionSettings.from_dict({"mode": "cluster"}).mode == "local"  # unknown stored mode
    with pytest.raises(ValueError, match="unknown execution mode"):
        ExecutionSettings("cloud")


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
    (" https://gpu.example.org/maisi/ ", "https://gpu.example.org/maisi"),
])
def test_server_addresses_are_normalised(url, expected):
    assert execution.normalise_url(url) == expected


@pytest.mark.parametrize("url, message", [
    ("", "no server address is set"),
    ("gpu-server:8765", "'gpu-server:8765' is not a server address"),
    ("ftp://gpu/", "'ftp://gpu/' is not a server address"),
    ("http://gpu:8765/?token=abc", "has a query or fragment"),
])
def test_bad_server_addresses_are_refused_with_a_hint(url, message):
    with pytest.raises(MaisiError) as info:
        execution.make_runner(ExecutionSettings("server", url, ""))
    assert message in info.value.message and "http" in info.value.hint


def test_token_is_read_from_its_file_and_bad_files_are_explained(tmp_path):
    assert execution.read_token_file(token_file(tmp_path, f"  {TOKEN}\n\n")) == TOKEN
    assert execution.read_token_file("") is None
    missing = tmp_path / "nowhere.token"
    with pytest.raises(MaisiError) as info:
        execution.read_token_file(missing)
    assert info.value.message == f"cannot read the token file {missing} (No such file or directory)"
    assert "--token-file" in info.value.hint
    with pytest.raises(MaisiError, match="is empty"):
        execution.read_token_file(token_file(tmp_path, " \n"))
    with pytest.raises(MaisiError, match="holds more than one token"):
        execution.read_token_file(token_file(tmp_path, f"{TOKEN}\nsecond-line"))
    binary = tmp_path / "binary.token"
    binary.write_bytes(b"\xff\xfe\x00token")
    with pytest.raises(MaisiError, match="not a text file"):
        execution.read_token_file(binary)
    with pytest.raises(MaisiError, match="cannot read the token file"):
        execution.read_token_file(tmp_path)  # a folder


def test_runners_follow_the_mode_and_only_gpu_jobs_go_to_the_server(tmp_path):
    local = JobRunner(python="/opt/python")
    assert execution.make_runner(ExecutionSettings(), local) is local
    assert isinstance(execution.make_runner(ExecutionSettings()), JobRunner)
    server = ExecutionSettings("server", "http://127.0.0.1:9/", str(token_file(tmp_path)))
    remote = execution.make_runner(server, local)
    assert type(remote).__name__ == "RemoteJobRunner"
    assert remote.url == "http://127.0.0.1:9" and remote.headers == {"Authorization": f"Bearer {TOKEN}"}
    for kind in ("generate", "inpaint"):
        assert execution.runner_for({"type": kind}, server, local) is not local
    for kind in ("phantom", "download"):
        assert execution.runner_for({"type": kind}, server, local) is local
    # The token never lands in the settings themselves.
    assert TOKEN not in repr(server) and TOKEN not in str(server.to_dict())


def test_check_connection_reports_server_and_token(tmp_path):
    good = str(token_file(tmp_path))
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token-not-the-token")
    with running_server(tmp_path / "jobs") as (url, _):
        answer = execution.check_connection(ExecutionSettings("server", url, good))
        assert answer.startswith("Connected: MAISI server ") and "on cpu; token accepted." in answer
        with pytest.raises(MaisiError) as info:
            execution.check_connection(ExecutionSettings("server", url, str(wrong)))
        assert info.value.message == "the MAISI server refused the access token"
        with pytest.raises(MaisiError, match="refused the access token"):
            execution.check_connection(ExecutionSettings("server", url, ""))
        assert not any((tmp_path / "jobs").iterdir())  # checking created no job
    with running_server(tmp_path / "open-jobs", token=None) as (url, _):
        assert execution.check_connection(ExecutionSettings("server", url, "")).endswith("no token needed.")
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MaisiError) as info:
        execution.check_connection(ExecutionSettings("server", nobody, good))
    assert info.value.message.startswith(f"cannot reach the MAISI server at {nobody}")
    assert execution.check_connection(ExecutionSettings()) == "Jobs run on this computer."


def test_run_to_end_cancels_a_job_that_overruns_its_time(tmp_path):
    # An interpreter that never answers: the real JobRunner starts it, run_to_end gives up and stops it.
    silent = tmp_path / "silent-python"
    silent.write_text("#!/bin/sh\nexec sleep 60\n")
    silent.chmod(0o755)
    running = execution.start_job({"type": "generate"}, tmp_path / "work", ExecutionSettings(), JobRunner(python=str(silent)))
    ticks: list[int] = []
    with pytest.raises(MaisiError) as info:
        execution.run_to_end(running, timeout_s=0.5, tick=lambda: ticks.append(1))
    assert info.value.message == "the job did not finish in 0 s" and "fewer steps" in info.value.hint
    assert running.cancelled and not running.is_running() and len(ticks) >= 5
