"""Load on `maisi serve`: status requests while a generation runs, and parallel uploads at the size limit.

1. A real `maisi serve` process on 127.0.0.1 runs one generation (the demo model from a phantom
   template); meanwhile `--clients` threads poll `GET /jobs/{id}` for `--seconds`. Reported: requests,
   errors, p50 / p99 / max latency. Goal: p99 under 100 ms, 0 errors.
2. A fresh server with `--max-upload-mb` receives `--uploads` submissions at once, each carrying a file
   just under the limit. Reported: accepted / refused (429) / other, and the server's peak RSS
   (VmHWM of its process). Goal: peak under 2x the limit in total.

    nice -n 10 python bench/server_load.py                  # the figures in docs/performance.md
    python bench/server_load.py --seconds 5 --upload-mb 8   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_lines  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """`maisi serve` as a child process with a token file (0600) in a temporary folder."""

    def __init__(self, folder: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token = folder / "token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'MAISISynth'}", "MAISI_NO_PROGRESS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "MAISIEngine.cli", "serve", "--port", str(self.port), "--jobs-dir",
             str(folder / "jobs"), "--token-file", str(token), "--devices", "cpu", *extra],
            stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.url}/health", timeout=2)
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def poll_status(url: str, job_id: str, clients: int, seconds: float) -> dict:
    """`clients` threads, each with its own connection, asking for the job's status for `seconds`."""
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                response = session.get(f"{url}/jobs/{job_id}", headers=HEADERS, timeout=10)
                ok = response.status_code == 200 and "status" in response.json()
            except requests.RequestException as exc:
                ok, response = False, exc
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(str(response))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "seconds": seconds, "requests": len(latencies), "errors": len(errors),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def _wait_stage(url: str, job_id: str, wanted: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = requests.get(f"{url}/jobs/{job_id}", headers=HEADERS, timeout=10).json()
        if state["status"] == wanted or (state.get("progress") or {}).get("stage") == wanted:
            return state
        if time.monotonic() > deadline or state["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {job_id} never reached {wanted}: {state}")
        time.sleep(0.2)


def status_load(folder: Path, clients: int, seconds: float, steps: int) -> tuple[dict, dict]:
    """Status latency with the server idle (a finished job), then during a generation's sampling."""
    server = Server(folder)
    try:
        phantom = {"type": "phantom", "size": [16, 16, 16], "spacing": [8.0, 8.0, 8.0]}
        idle_id = requests.post(f"{server.url}/jobs", headers=HEADERS, data={"job": json.dumps(phantom)},
                                timeout=30).json()["id"]
        _wait_stage(server.url, idle_id, "done")
        idle = poll_status(server.url, idle_id, clients, seconds)
        job = {"type": "generate", "model": "demo", "template": {"kind": "phantom", "region": "chest-abdomen"},
               "size": [128, 128, 128], "spacing": [3.0, 3.0, 3.0], "steps": steps, "device": "cpu"}
        answer = requests.post(f"{server.url}/jobs", headers=HEADERS, data={"job": json.dumps(job)}, timeout=30)
        answer.raise_for_status()
        job_id = answer.json()["id"]
        _wait_stage(server.url, job_id, "sampling")  # measure while the denoising loop keeps every core busy
        busy = poll_status(server.url, job_id, clients, seconds)
        state = requests.get(f"{server.url}/jobs/{job_id}", headers=HEADERS, timeout=10).json()
        busy.update(job_status_at_end=state["status"], job_stage_at_end=(state.get("progress") or {}).get("stage"))
        return idle, busy
    finally:
        server.stop()


def parallel_uploads(folder: Path, uploads: int, upload_mb: float, parallel_limit: int) -> dict:
    server = Server(folder, "--max-upload-mb", str(upload_mb), "--max-parallel-uploads", str(parallel_limit),
                    "--max-queued", str(uploads + 1))
    try:
        size = int(upload_mb * 2**20) - 4096  # the file plus the form fields stay within the limit
        payload = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
        job = json.dumps({"type": "generate", "model": "demo", "steps": 1, "device": "cpu"})
        barrier = threading.Barrier(uploads)
        baseline = vm_hwm_mb(server.process.pid)

        def upload(_: int) -> int:
            barrier.wait()
            return requests.post(f"{server.url}/jobs", headers=HEADERS, data={"job": job},
                                 files={"mask": ("mask.nii.gz", payload, "application/gzip")}, timeout=300).status_code

        start = time.perf_counter()
        with ThreadPoolExecutor(uploads) as pool:
            codes = list(pool.map(upload, range(uploads)))
        elapsed = time.perf_counter() - start
        peak = vm_hwm_mb(server.process.pid)
        return {"uploads": uploads, "upload_mb": upload_mb, "parallel_limit": parallel_limit,
                "accepted": codes.count(201), "refused_429": codes.count(429),
                "other": len(codes) - codes.count(201) - codes.count(429), "seconds": elapsed,
                "server_rss_before_mb": baseline, "server_peak_rss_mb": peak,
                "limit_total_mb": upload_mb * min(uploads, parallel_limit)}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=100, help="denoising steps of the generation that runs meanwhile")
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--upload-mb", type=float, default=64.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maisi-server-load-") as tmp:
        root = Path(tmp)
        (root / "a").mkdir()
        (root / "b").mkdir()
        (root / "c").mkdir()
        idle, status = status_load(root / "a", args.clients, args.seconds, args.steps)
        at_limit = parallel_uploads(root / "b", args.uploads, args.upload_mb, parallel_limit=args.uploads)
        default_limit = parallel_uploads(root / "c", args.uploads, args.upload_mb, parallel_limit=4)
    if args.json:
        print(json.dumps({"status_idle": idle, "status": status, "uploads": [at_limit, default_limit]}, indent=2))
        return 0
    for line in machine_lines():
        print(line)
    print(f"\nstatus requests, {idle['clients']} clients for {idle['seconds']:.0f} s, no job running:")
    print(f"  {idle['requests']} requests, {idle['errors']} errors, p50 {idle['p50_ms']:.1f} ms, "
          f"p99 {idle['p99_ms']:.1f} ms, max {idle['max_ms']:.1f} ms")
    print(f"\nstatus requests, {status['clients']} clients for {status['seconds']:.0f} s during a generation "
          f"(job {status['job_status_at_end']}, stage {status['job_stage_at_end']}):")
    print(f"  {status['requests']} requests, {status['errors']} errors, p50 {status['p50_ms']:.1f} ms, "
          f"p99 {status['p99_ms']:.1f} ms, max {status['max_ms']:.1f} ms")
    for run in (at_limit, default_limit):
        print(f"\n{run['uploads']} parallel uploads of {run['upload_mb']:.0f} MiB (limit {run['upload_mb']:.0f} MiB, "
              f"--max-parallel-uploads {run['parallel_limit']}):")
        print(f"  accepted {run['accepted']}, refused 429 {run['refused_429']}, other {run['other']}, "
              f"{run['seconds']:.1f} s; server RSS {run['server_rss_before_mb']:.0f} MB before, "
              f"peak {run['server_peak_rss_mb']:.0f} MB (2x the limit: {2 * run['upload_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
