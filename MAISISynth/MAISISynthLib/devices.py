"""Free GPU memory for the device row, read from `nvidia-smi` so the UI never imports torch."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

QUERY = ["--query-gpu=index,name,memory.free,memory.total", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    free_mib: int
    total_mib: int


def parse_nvidia_smi(text: str) -> list[GpuMemory]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.free,memory.total --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            gpus.append(GpuMemory(int(parts[0]), parts[1], int(float(parts[2])), int(float(parts[3]))))
        except ValueError:
            continue
    return gpus


def gpu_memory(timeout_s: float = 3.0) -> list[GpuMemory]:
    """The GPUs NVIDIA's driver reports; empty without a driver (or if it does not answer in time)."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        done = subprocess.run([executable, *QUERY], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(done.stdout) if done.returncode == 0 else []


def describe_gpu_memory(gpus: list[GpuMemory]) -> str:
    """'GPU 0: 21.3 of 24.0 GB free' per GPU, or a note that only the CPU is available."""
    if not gpus:
        return "no NVIDIA GPU found: the CPU will be used"
    return "; ".join(f"GPU {g.index}: {g.free_mib / 1024:.1f} of {g.total_mib / 1024:.1f} GB free" for g in gpus)
