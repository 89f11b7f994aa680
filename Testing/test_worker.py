"""The worker process: JSON-lines events in order, errors with hints, SIGTERM leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import block_mask, oblique_affine
from MAISIEngine.io.nifti import write_volume


def start_worker(job: dict, tmp_path: Path) -> subprocess.Popen:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    return subprocess.Popen([sys.executable, "-m", "MAISIEngine.worker", str(job_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_progress_events_then_result(tiny_model_dir, tmp_path) -> None:
    mask = write_volume(tmp_path / "mask.nii.gz", block_mask((32, 32, 32)), oblique_affine(), dtype=np.uint8)
    out = tmp_path / "out"
    proc = start_worker({"type": "generate", "model": str(tiny_model_dir), "mask": str(mask), "seed": 2, "steps": 4,
                         "device": "cpu", "output_dir": str(out)}, tmp_path)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    events = events_of(stdout)
    sampling = [(e["step"], e["total"]) for e in events if e["event"] == "progress" and e["stage"] == "sampling"]
    assert sampling == [(1, 4), (2, 4), (3, 4), (4, 4)]
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert stages.index("load") < stages.index("sampling") < stages.index("decode") < stages.index("write")
    result = events[-1]
    assert result["event"] == "result" and result["image"] == str(out / "image.nii.gz")
    assert result["provenance_data"]["seed"] == 2 and Path(result["labels"]).is_file()


def test_engine_error_arrives_as_message_and_hint(tiny_model_dir, tmp_path) -> None:
    labels = block_mask((32, 32, 32))
    labels[0, 0, 0] = 250
    mask = write_volume(tmp_path / "mask.nii.gz", labels, np.eye(4), dtype=np.uint8)
    proc = start_worker({"type": "generate", "model": str(tiny_model_dir), "mask": str(mask),
                         "output_dir": str(tmp_path / "out")}, tmp_path)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    error = events_of(stdout)[-1]
    assert error["event"] == "error" and "250" in error["message"] and "MAISI ids" in error["hint"]


def test_bad_job_file_is_refused_with_the_keys(tmp_path) -> None:
    proc = start_worker({"type": "generate", "output_dir": str(tmp_path), "sead": 3}, tmp_path)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert events_of(stdout)[-1]["message"] == "the generate job has unknown keys: sead"


def test_sigterm_mid_run_leaves_no_output(tiny_model_dir, tmp_path) -> None:
    mask = write_volume(tmp_path / "mask.nii.gz", block_mask((64, 64, 64)), np.eye(4) * [2, 2, 2, 1], dtype=np.uint8)
    out = tmp_path / "out"
    proc = start_worker({"type": "generate", "model": str(tiny_model_dir), "mask": str(mask), "steps": 400,
                         "device": "cpu", "output_dir": str(out)}, tmp_path)
    seen: list[dict] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1].get("stage") == "sampling" and seen[-1].get("step", 0) >= 3:
            break
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 5.0
    assert proc.returncode == 130
    assert events_of(rest)[-1]["event"] == "cancelled"
    leftovers = list(out.rglob("*")) if out.exists() else []
    assert leftovers == [] and not list(tmp_path.glob(".out.*"))
