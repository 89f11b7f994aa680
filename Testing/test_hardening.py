"""Hardening beyond the bad-input table: memory before validation, whole-or-absent outputs, signals,
and the job server's queue bound, cancel race, timeouts, file modes and path hygiene."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from bad_inputs import make_bad_files
from conftest import REPO, block_mask
from MAISIEngine.io.atomic import atomic_directory, clean_stale_partials
from MAISIEngine.io.nifti import write_volume
from server_fixtures import TOKEN, running_server, wait_for_status

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'MAISISynth'}", "MAISI_NO_PROGRESS": "1"}


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("bad-files"))


def child_peak_rss_mb(args: list[str], cwd: Path) -> tuple[int, str, float]:
    """Run the CLI in a child of a fresh interpreter; its exit code, stderr and peak RSS (getrusage)."""
    probe = ("import resource, subprocess, sys\n"
             "done = subprocess.run([sys.executable, '-m', 'MAISIEngine.cli', *sys.argv[1:]], capture_output=True, text=True)\n"
             "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
             "print(done.returncode, peak, sep='\\n'); sys.stderr.write(done.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=120)
    code, peak_kb = done.stdout.split()
    return int(code), done.stderr, int(peak_kb) / 1024


@pytest.mark.parametrize("name", ["huge_header", "gzip_bomb", "bomb_claims_1gib"])
def test_huge_header_and_gzip_bomb_are_refused_in_under_1gb(name, bad, tmp_path) -> None:
    start = time.perf_counter()
    code, err, peak_mb = child_peak_rss_mb(["generate", "--mask", str(bad[name]), "-o", str(tmp_path / "out")], tmp_path)
    elapsed = time.perf_counter() - start
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"
    assert elapsed < 60 and not (tmp_path / "out").exists()


def test_result_folder_is_swapped_in_whole_and_keeps_other_files(tmp_path) -> None:
    target = tmp_path / "result"
    with atomic_directory(target) as tmp:
        (tmp / "image.nii.gz").write_text("run 1")
        (tmp / "provenance.json").write_text("run 1")
        (tmp / "dicom").mkdir()
        assert not target.exists()  # nothing visible until complete
    (target / "notes.txt").write_text("mine")
    inode_before = target.stat().st_ino
    with atomic_directory(target) as tmp:
        (tmp / "image.nii.gz").write_text("run 2")
        (tmp / "provenance.json").write_text("run 2")
        assert (target / "image.nii.gz").read_text() == "run 1"  # the old result stays whole meanwhile
    assert (target / "image.nii.gz").read_text() == "run 2" and (target / "provenance.json").read_text() == "run 2"
    assert (target / "notes.txt").read_text() == "mine"
    assert target.stat().st_ino != inode_before  # a new folder renamed in, not files copied into the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]

    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "image.nii.gz").write_text("run 3")
            raise RuntimeError("killed halfway")
    assert (target / "image.nii.gz").read_text() == "run 2" and sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_stale_partials_of_dead_processes_are_cleaned_and_live_ones_kept(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".result.{dead.pid}.abc123.partial"
    live = tmp_path / f".result.{os.getppid()}.def456.partial"
    other = tmp_path / f".other.{dead.pid}.abc123.partial"
    for folder in (stale, live, other):
        folder.mkdir()
        (folder / "image.nii.gz").write_text("x")
    assert clean_stale_partials(tmp_path / "result") == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_sigterm_inside_an_output_build_removes_the_build_folder(tmp_path) -> None:
    script = ("import signal, sys, time\n"
              "from MAISIEngine.cli import _on_sigterm\n"
              "from MAISIEngine.io.atomic import atomic_directory\n"
              "signal.signal(signal.SIGTERM, _on_sigterm)\n"
              "with atomic_directory(sys.argv[1]) as tmp:\n"
              "    (tmp / 'image.nii.gz').write_text('half')\n"
              "    print('ready', flush=True)\n"
              "    time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV)
    assert process.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.glob(".out.*.partial"))) == 1
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    assert process.returncode != 0 and sorted(tmp_path.iterdir()) == []


def test_sigterm_during_generation_ends_with_one_line_and_no_output(tiny_model_dir, tmp_path) -> None:
    mask = write_volume(tmp_path / "mask.nii.gz", block_mask((64, 64, 64)), np.diag([2, 2, 2, 1]), dtype=np.uint8)
    env = {k: v for k, v in ENV.items() if k != "MAISI_NO_PROGRESS"}  # the progress bar tells when sampling runs
    process = subprocess.Popen(
        [sys.executable, "-m", "MAISIEngine.cli", "generate", "--model", str(tiny_model_dir), "--mask", str(mask),
         "--steps", "400", "--device", "cpu", "-o", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: process.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    while "sampling" not in "".join(seen):
        assert time.monotonic() < deadline and process.poll() is None, "".join(seen)
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    reader.join(timeout=10)
    rest = "".join(seen)
    assert process.returncode == 130, rest
    last = rest.strip().splitlines()[-1]
    assert last.startswith("error: terminated (SIGTERM)") and "Traceback" not in rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]


# --- server ---------------------------------------------------------------------------------------------


def _submit(url: str, job: dict, mask: Path | None = None) -> requests.Response:
    files = {"mask": (mask.name, mask.read_bytes(), "application/gzip")} if mask else {}
    return requests.post(f"{url}/jobs", headers=AUTH, data={"job": json.dumps(job)}, files=files, timeout=30)


def _status(url: str, job_id: str) -> dict:
    return requests.get(f"{url}/jobs/{job_id}", headers=AUTH, timeout=10).json()


def _wait(url: str, job_id: str, wanted: tuple[str, ...], timeout: float = 120) -> dict:
    return wait_for_status(url, job_id, wanted, timeout, poll_s=0.02)


@pytest.fixture
def big_mask(tmp_path: Path) -> Path:
    return write_volume(tmp_path / "big.nii.gz", block_mask((64, 64, 64)), np.diag([2, 2, 2, 1]), dtype=np.uint8)


def test_full_queue_answers_429_with_retry_after_and_cancel_right_after_running_is_honoured(
        tiny_model_dir, big_mask, tmp_path) -> None:
    job = {"type": "generate", "model": tiny_model_dir.name, "steps": 400, "device": "cpu"}
    with running_server(tmp_path / "jobs", model_dirs=[tiny_model_dir], max_queued=1) as (url, store):
        first = _submit(url, job, big_mask).json()["id"]
        _wait(url, first, ("running",))
        second = _submit(url, job, big_mask)
        assert second.status_code == 201
        third = _submit(url, job, big_mask)
        assert third.status_code == 429 and third.headers["Retry-After"] == "10"
        assert "queue is full" in third.json()["detail"]["message"]
        assert len(list((tmp_path / "jobs").iterdir())) == 2  # the refused one left nothing
        second = second.json()["id"]
        for job_id in (first, second):
            if job_id == second:
                _wait(url, second, ("running",))  # cancelled the moment it shows running
            assert requests.post(f"{url}/jobs/{job_id}/cancel", headers=AUTH, timeout=30).status_code == 200
            assert _wait(url, job_id, ("done", "failed", "cancelled"), 60)["status"] == "cancelled"
            assert not (tmp_path / "jobs" / job_id / "output").exists()


def test_uploads_are_private_and_no_server_path_reaches_the_client(tiny_model_dir, tmp_path) -> None:
    mask = write_volume(tmp_path / "mask.nii.gz", block_mask((32, 32, 32)), np.diag([4, 4, 4, 1]), dtype=np.uint8)
    jobs = tmp_path / "jobs"
    with running_server(jobs, model_dirs=[tiny_model_dir]) as (url, _):
        job_id = _submit(url, {"type": "generate", "model": tiny_model_dir.name, "steps": 2, "device": "cpu"},
                         mask).json()["id"]
        state = _wait(url, job_id, ("done", "failed", "cancelled"))
        assert state["status"] == "done", state
        events = requests.get(f"{url}/jobs/{job_id}/events", headers=AUTH, timeout=30).text
    folder = jobs / job_id
    assert (folder.stat().st_mode & 0o777) == 0o700 and (folder / "inputs").stat().st_mode & 0o777 == 0o700
    [upload] = list((folder / "inputs").iterdir())
    assert upload.stat().st_mode & 0o777 == 0o600
    sent = json.dumps(state) + events
    for private in (str(jobs), str(tmp_path), str(tiny_model_dir)):
        assert private not in sent
    assert state["provenance"]["model_dir"] if "model_dir" in state["provenance"] else True
    assert '"image": "output/image.nii.gz"' in events


def test_half_sent_headers_are_closed_after_the_header_timeout(tmp_path, monkeypatch) -> None:
    from MAISIEngine.server.guard import HeaderTimeoutH11

    monkeypatch.setattr(HeaderTimeoutH11, "header_timeout_s", 1.0)
    with running_server(tmp_path / "jobs") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        sockets = []
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            sockets.append(s)
        time.sleep(2.0)
        closed = 0
        for s in sockets:
            try:
                closed += s.recv(1024) == b""
            except (ConnectionResetError, socket.timeout):
                closed += 1
            s.close()
        assert closed == 30
        assert requests.get(f"{url}/health", timeout=5).status_code == 200  # whole requests still served


def test_token_file_readable_by_others_gets_a_warning(tmp_path, capsys) -> None:
    from MAISIEngine.server.app import read_token

    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    assert read_token(token) == TOKEN
    assert f"warning: token file {token} is readable by others (mode 644)" in capsys.readouterr().err
    token.chmod(0o600)
    assert read_token(token) == TOKEN and capsys.readouterr().err == ""


def test_sigterm_to_the_server_marks_its_jobs_failed_at_once(tiny_model_dir, big_mask, tmp_path) -> None:
    jobs = tmp_path / "jobs"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "MAISIEngine.cli", "serve", "--port", str(port), "--jobs-dir",
                               str(jobs), "--model-dir", str(tiny_model_dir), "--devices", "cpu"],
                              stderr=subprocess.PIPE, text=True, env=ENV)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{url}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.2)
        job = {"type": "generate", "model": tiny_model_dir.name, "steps": 400, "device": "cpu"}
        files = {"mask": (big_mask.name, big_mask.read_bytes(), "application/gzip")}
        running = requests.post(f"{url}/jobs", data={"job": json.dumps(job)}, files=files, timeout=30).json()["id"]
        waiting = requests.post(f"{url}/jobs", data={"job": json.dumps(job)}, files=files, timeout=30).json()["id"]
        while requests.get(f"{url}/jobs/{running}", timeout=5).json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    for job_id in (running, waiting):
        state = json.loads((jobs / job_id / "state.json").read_text())
        assert state["status"] == "failed" and "server stopped" in state["error"]["message"]


@pytest.mark.parametrize("mode, cached_mode", [(0o644, 0o644), (0o640, 0o600), (0o600, 0o600)])
def test_imported_weights_are_private_unless_the_source_was_world_readable(mode, cached_mode, tmp_path) -> None:
    import io

    import torch

    from MAISIEngine.weights.cache import cache_path
    from MAISIEngine.weights.local import import_files
    from MAISIEngine.weights.manifest import entry_by_name

    entry = entry_by_name("autoencoder_v1.pt")
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(11_000_000)}}, buffer)  # 44 MB: within 2x of the published 84 MB
    source = tmp_path / "usb" / "autoencoder_v1.pt"
    source.parent.mkdir()
    source.write_bytes(buffer.getvalue())
    source.chmod(mode)
    [imported] = import_files([source.parent], show_bar=False)
    assert imported.path == cache_path(entry) and cache_path(entry).stat().st_mode & 0o777 == cached_mode


def test_a_link_inside_the_imported_folder_is_followed(tmp_path) -> None:
    from MAISIEngine.weights.local import import_files

    folder = tmp_path / "usb"
    (folder / "real").mkdir(parents=True)
    (folder / "real" / "data.json").write_text('{"candidates": []}')
    (folder / "candidate_masks_flexible_size_and_spacing_4000.json").symlink_to(folder / "real" / "data.json")
    [imported] = import_files([folder], show_bar=False)
    assert imported.path.read_text() == '{"candidates": []}' and not imported.path.is_symlink()
