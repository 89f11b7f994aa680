"""Shared helpers of the benchmark scripts: machine description, stage timing with peak memory,
peak RSS of a child process, a cached random-weight model directory, and a plain-text table."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GIB = float(1 << 30)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine_lines(device: str = "cpu") -> list[str]:
    """What the figures were measured on: CPU, threads, load, memory, library versions, GPU."""
    import torch

    lines = [f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}",
             f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
             f"cpu: {cpu_model()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"]
    load = load_average()
    if load is not None:
        busy = " (machine shared with other jobs)" if load[0] > 0.8 * (os.cpu_count() or 1) else ""
        lines.append(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}{busy}")
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        lines.append(f"memory: {total / GIB:.1f} GiB")
    except (ValueError, OSError):
        pass
    import monai

    lines.append(f"python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}")
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        lines.append(f"gpu: {props.name}, {props.total_memory / GIB:.1f} GiB")
    return lines


def _vm_hwm_bytes() -> int | None:
    """This process's peak resident set size since the last reset (Linux VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_vm_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so each stage gets its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class StageMeter:
    """Wall time, CPU time (all threads) and peak memory per stage: peak RSS on CPU,
    torch.cuda.max_memory_allocated on CUDA. CPU time is the steadier figure on a shared machine."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.results: dict[str, dict[str, float | None]] = {}
        self._rss_before_resets = 0

    def _reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._rss_before_resets = max(self._rss_before_resets, _vm_hwm_bytes() or 0)
            _reset_vm_hwm()

    def process_peak_rss(self) -> int | None:
        """This process's peak RSS over its whole life, resets included (they also clear the kernel's
        own figure, so a parent's wait4 would only see the peak since the last reset)."""
        now = _vm_hwm_bytes()
        return None if now is None else max(now, self._rss_before_resets)

    def _peak(self) -> int | None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
        return _vm_hwm_bytes()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Measure the `with` block as stage `name`."""
        self._reset()
        start, cpu_start = time.perf_counter(), time.process_time()
        yield
        peak = self._peak()
        self.results[name] = {"s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start,
                              "peak_bytes": peak}


def run_child(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, float, int]:
    """Run a command to completion, streaming its output; returns (exit code, wall s, peak RSS bytes).

    The peak comes from the kernel's accounting of that one child (wait4), so two children measured
    one after the other never mix their peaks.
    """
    start = time.perf_counter()
    process = subprocess.Popen(list(argv), env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = int(usage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)
    return process.returncode, time.perf_counter() - start, peak


def default_cache_dir(preset_name: str) -> Path:
    """Where a preset's random-weight model folder is kept between benchmark runs."""
    short = {"rflow-ct": "rflow"}.get(preset_name, preset_name)
    return Path(tempfile.gettempdir()) / f"maisi-bench-{short}"


def cached_model_directory(preset_name: str, cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """A model directory of randomly initialised networks of a preset's architecture, written once.

    The official `.pt` layout is used, so both NVIDIA's loading code path and ours read the same files.
    """
    from MAISIEngine.io.atomic import atomic_directory
    from MAISIEngine.modeldir import random_model_directory
    from MAISIEngine.presets import load_preset

    cache = Path(cache_dir) if cache_dir else default_cache_dir(preset_name)
    preset_file = cache / "preset.json"
    if preset_file.is_file():
        import json

        weights = json.loads(preset_file.read_text()).get("weights", {})
        if weights and all((cache / name).is_file() for name in weights.values()):
            return cache
    print(f"writing random {preset_name} weights to {cache} (once; reused by later runs)", flush=True)
    with atomic_directory(cache) as tmp:
        random_model_directory(tmp, load_preset(preset_name), seed=seed)
    return cache


def format_bytes(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GiB"


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
