"""Time from starting `maisi-desktop` to its main window being shown on screen (printed, not asserted).

Runs `python -m MAISIDesktop.app --report-startup` several times and measures, from this process,
the wall time from launching the interpreter to the line the app prints once its window is exposed.
Without a DISPLAY an Xvfb server is started for the runs.

    python bench/desktop_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 3.0
"""The issue's goal: the window shows within 3 s of start."""


def start_xvfb() -> tuple[subprocess.Popen, str]:
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1920x1200x24", "-nolisten", "tcp"],
                              pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        server.kill()
        raise SystemExit("Xvfb did not start; install xvfb or run under a display")
    return server, f":{number}"


def one_run(env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "MAISIDesktop.app", "--report-startup"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("window shown"):
            elapsed = time.perf_counter() - started
            process.wait(timeout=30)
            return elapsed, line.strip()
    process.wait(timeout=30)
    raise SystemExit(f"the app exited without showing its window:\n{process.stderr.read() if process.stderr else ''}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ)
    package_root = Path(__file__).resolve().parents[1] / "MAISISynth"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MAISI_DESKTOP_RUNS", str(Path.home() / ".cache" / "maisi-desktop-bench-runs"))
    server = None
    if not env.get("DISPLAY"):
        server, env["DISPLAY"] = start_xvfb()
        env.pop("WAYLAND_DISPLAY", None)
    try:
        one_run(env)  # warm the file cache: the first start after installation reads every library from disk
        times = []
        for n in range(args.runs):
            elapsed, line = one_run(env)
            times.append(elapsed)
            print(f"run {n + 1}: {elapsed:.2f} s from process start to window shown ({line})")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    median = statistics.median(times)
    print(f"median {median:.2f} s, min {min(times):.2f} s, max {max(times):.2f} s over {len(times)} runs "
          f"(goal: within {TARGET_S:.0f} s) on {os.cpu_count()} CPU cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
