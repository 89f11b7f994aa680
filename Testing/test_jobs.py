"""The jobs layer against the real worker (`python -m MAISIEngine.worker`) and a real model directory.

The model is the demo architecture with randomly initialised weights written to a temporary model
directory (preset.json + safetensors), so the worker loads it exactly as it loads a fine-tuned model.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MAISISynth"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from MAISISynthLib import jobs, params  # noqa: E402
from MAISISynthLib.jobs import JobRunner, ProgressTracker, describe_progress, parse_line  # noqa: E402
from slicer_fixtures import WORKER_ENV, random_model_dir  # noqa: E402,F401  (fixture)


SIZE = [32, 32, 32]
SPACING = [8.0, 8.0, 8.0]
STEPS = 4


def phantom_free_mask(path: Path, values: dict[int, tuple[slice, slice, slice]]) -> Path:
    """A small MAISI label map (body plus boxes of the given ids) written with nibabel."""
    import nibabel as nib

    labels = np.zeros(SIZE, dtype=np.uint8)
    labels[4:28, 6:26, 2:30] = 200
    for value, box in values.items():
        labels[box] = value
    nib.save(nib.Nifti1Image(labels, np.diag(SPACING + [1.0])), str(path))
    return path


def generate(random_model_dir: Path, tmp_path: Path, **changes) -> dict:
    mask = phantom_free_mask(tmp_path / "mask.nii.gz", {1: (slice(8, 20), slice(10, 20), slice(8, 20))})
    job = params.generate_job(str(random_model_dir), tmp_path / "out", mask=mask, size=SIZE, spacing=SPACING,
                              seed=3, steps=STEPS, device="cpu")
    job.update(changes)
    return job


def run_to_end(running: jobs.RunningJob, timeout: float = 90.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    fractions, seen = [], []
    while time.monotonic() < deadline:
        seen += running.poll()
        fractions.append(running.progress_fraction)
        if not running.is_running():
            running.wait(timeout=10)
            seen += running.poll()
            assert fractions == sorted(fractions), "progress went backwards"
            return seen
        time.sleep(0.05)
    running.cancel()
    raise AssertionError(f"worker did not finish in {timeout} s; events: {seen[-5:]}")


def wait_for(running: jobs.RunningJob, predicate, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    while time.monotonic() < deadline:
        seen += running.poll()
        if any(predicate(e) for e in seen):
            return seen
        if not running.is_running() and running.returncode is not None:
            break
        time.sleep(0.02)
    running.cancel()
    raise AssertionError(f"expected event did not arrive; got {seen[-5:]}, stderr: {running.stderr_tail[-800:]}")


# ---------------------------------------------------------------------------------------------------
# Protocol parsing and progress arithmetic (no worker needed)


def test_parse_line_reads_events_and_wraps_other_output():
    assert parse_line('{"event":"progress","stage":"sampling","step":2,"total":5}\n') == {
        "event": "progress", "stage": "sampling", "step": 2, "total": 5}
    assert parse_line("Loading weights...\n") == {"event": "log", "message": "Loading weights..."}
    assert parse_line('{"not_an_event": 1}') == {"event": "log", "message": '{"not_an_event": 1}'}
    assert parse_line("{broken json") == {"event": "log", "message": "{broken json"}


def test_describe_progress_formats_stage_step_and_eta():
    assert describe_progress({"event": "progress", "stage": "sampling", "step": 3, "total": 20, "eta_s": 4.2}) == (
        "Sampling: step 3 of 20, ETA 4 s")
    assert describe_progress({"event": "progress", "stage": "decode", "step": 1, "total": 4, "eta_s": 125}) == (
        "Decode: step 1 of 4, ETA 2 min 5 s")
    assert describe_progress({"event": "progress", "stage": "load"}) == "Load"
    assert describe_progress({"event": "error", "message": "weights missing", "hint": "download them"}) == (
        "Error: weights missing (download them)")
    assert describe_progress({"event": "log", "message": "hello"}) == "hello"
    assert jobs.format_duration(3725) == "1 h 2 min"


def test_progress_fraction_weights_stages_and_never_goes_back():
    stages = jobs.EXPECTED_STAGES["inpaint"]
    assert stages == ["load", "encode", "sampling", "decode"]
    tracker = ProgressTracker(stages)
    total = 0.06 + 0.05 + 0.70 + 0.15
    assert tracker.update({"stage": "load", "step": 1, "total": 1}) == pytest.approx(0.06 / total)
    # Sampling half done: load and the encode stage the worker skipped count as done.
    value = tracker.update({"stage": "sampling", "step": 10, "total": 20})
    assert value == pytest.approx((0.06 + 0.05 + 0.70 * 0.5) / total)
    # A repeated, older step does not move the bar back.
    assert tracker.update({"stage": "sampling", "step": 5, "total": 20}) == pytest.approx(value)
    assert tracker.update({"stage": "decode", "step": 1, "total": 1}) == pytest.approx(1.0)
    # A download is one stage: the fraction is its byte count.
    download = ProgressTracker([])
    assert download.update({"stage": "download", "step": 250, "total": 1000}) == pytest.approx(0.25)


def test_start_with_a_missing_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(jobs.WorkerStartError) as info:
        JobRunner(python=str(tmp_path / "no-python")).start({"type": "generate"}, tmp_path / "job")
    assert "cannot start the generation process" in info.value.message
    assert "PythonSlicer" in info.value.hint
    assert json.loads((tmp_path / "job" / "job.json").read_text()) == {"type": "generate"}


def test_worker_environment_puts_the_engine_first_on_pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    env = jobs.worker_environment({"CUDA_VISIBLE_DEVICES": "1"})
    engine_dir = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    assert (engine_dir / "MAISIEngine" / "worker.py").is_file() or (engine_dir / "MAISIEngine" / "__init__.py").is_file()
    assert env["PYTHONPATH"].split(os.pathsep)[1] == "/somewhere/else"
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["PYTHONUNBUFFERED"] == "1"


# ---------------------------------------------------------------------------------------------------
# The real worker


def test_generation_reports_ordered_progress_and_a_result(random_model_dir, tmp_path):
    running = JobRunner(env=WORKER_ENV).start(generate(random_model_dir, tmp_path), tmp_path / "work")
    events = run_to_end(running)
    assert running.returncode == 0, running.stderr_tail
    assert running.error is None
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, events
    sampling = [e["step"] for e in progress if e["stage"] == "sampling"]
    assert sampling == list(range(1, STEPS + 1)) or sampling == list(range(0, STEPS + 1)), sampling
    # Within every stage steps only increase, and every stage appears in one block.
    stages = [e["stage"] for e in progress]
    blocks = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert len(blocks) == len(set(blocks)), blocks
    assert events[-1]["event"] == "result"
    assert running.result is events[-1] or running.result == events[-1]
    assert running.progress_fraction == 1.0
    image, labels = Path(running.result["image"]), Path(running.result["labels"])
    assert image.is_file() and labels.is_file()
    import nibabel as nib

    assert nib.load(str(image)).shape == tuple(SIZE)
    assert np.allclose(nib.load(str(image)).affine, np.diag(SPACING + [1.0]))
    assert running.result["provenance_data"]["seed"] == 3


def test_cancel_kills_the_launcher_and_the_worker_and_leaves_no_output(random_model_dir, tmp_path):
    # A launcher that starts the interpreter as a child, as Slicer's PythonSlicer does.
    launcher = tmp_path / "launcher.sh"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\necho launcher-finished >&2\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    job = generate(random_model_dir, tmp_path, steps=200)
    running = JobRunner(python=str(launcher), env=WORKER_ENV).start(job, tmp_path / "work")
    wait_for(running, lambda e: e["event"] == "progress" and e.get("stage") == "sampling")
    children = subprocess.run(["pgrep", "-g", str(running.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 2, children  # the launcher and the interpreter under it
    started = time.monotonic()
    running.cancel(timeout=10)
    assert time.monotonic() - started < 12
    assert not running.is_running()
    assert running.returncode != 0
    assert jobs.group_members(running.pid) == []
    for pid in children:  # gone, or a zombie waiting for its new parent to reap it
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    out = Path(job["output_dir"])
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*")), list(out.parent.iterdir())
    assert running.result is None
    assert running.error is None
    # The worker stopped on SIGTERM itself (it had the chance to clean up), it was not SIGKILLed.
    assert [e for e in running.events if e["event"] == "cancelled"], running.events[-3:]


def test_unknown_model_arrives_as_message_and_hint(tmp_path):
    mask = phantom_free_mask(tmp_path / "mask.nii.gz", {})
    job = params.generate_job("no-such-model", tmp_path / "out", mask=mask, size=SIZE, spacing=SPACING, device="cpu")
    running = JobRunner(env=WORKER_ENV).start(job, tmp_path / "work")
    events = run_to_end(running)
    assert running.returncode not in (0, None)
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1, events
    assert "no-such-model" in errors[0]["message"]
    assert errors[0]["hint"]
    assert "Traceback" not in json.dumps(errors[0])
    assert running.error == errors[0]
    assert not running.error.get("crashed")


def test_unknown_label_ids_arrive_as_message_and_hint(random_model_dir, tmp_path):
    job = generate(random_model_dir, tmp_path)
    phantom_free_mask(Path(job["mask"]), {1: (slice(8, 20), slice(10, 20), slice(8, 20)),
                                          250: (slice(20, 24), slice(10, 14), slice(10, 14))})
    running = JobRunner(env=WORKER_ENV).start(job, tmp_path / "work")
    run_to_end(running)
    assert running.returncode not in (0, None)
    assert "250" in running.error["message"], running.error
    assert running.error["hint"]
    assert not Path(job["output_dir"]).exists()


def test_a_killed_worker_is_reported_as_a_crash(random_model_dir, tmp_path):
    job = generate(random_model_dir, tmp_path, steps=200)
    running = JobRunner(env=WORKER_ENV).start(job, tmp_path / "work")
    wait_for(running, lambda e: e["event"] == "progress" and e.get("stage") == "sampling")
    os.kill(running.pid, signal.SIGKILL)  # what the kernel's out-of-memory killer does
    assert running.wait(timeout=20) == -signal.SIGKILL
    running.poll()
    assert running.error["crashed"] is True
    assert running.error["message"] == "the generation process was killed (SIGKILL)"
    assert "memory" in running.error["hint"]
    assert running.result is None


# ---------------------------------------------------------------------------------------------------
# Job files and settings (checked by the engine's own job parser and size rules)


def test_job_files_are_accepted_by_the_engine_parser(tmp_path):
    from MAISIEngine.jobs import DownloadJob, GenerateJob, InpaintJob, PhantomJob, parse_job

    generate_template = params.generate_job("demo", tmp_path / "a", template_region="chest", size=(64, 64, 64),
                                            spacing=(4.0, 4.0, 4.0), region="auto", seed=5, steps=0, device="cpu")
    parsed = parse_job(json.loads(json.dumps(generate_template)))
    assert isinstance(parsed, GenerateJob)
    assert (parsed.mask, parsed.template["region"], parsed.region, parsed.steps, parsed.seed) == (None, "chest", None, None, 5)
    from_mask = parse_job(params.generate_job("rflow-ct", tmp_path / "b", mask=tmp_path / "m.nii.gz", region="chest-abdomen"))
    assert from_mask.mask == str(tmp_path / "m.nii.gz") and from_mask.template is None and from_mask.region == "chest-abdomen"
    inpaint = parse_job(params.inpaint_job("demo", tmp_path / "c", image="i.nii.gz", labels="l.nii.gz", tumor="t.nii.gz",
                                           tumor_type="pancreas", seed=2))
    assert isinstance(inpaint, InpaintJob) and inpaint.method == "controlnet-repaint" and inpaint.tumor_type == "pancreas"
    phantom = parse_job(params.phantom_job("abdomen", (64, 64, 32), (5.0, 5.0, 5.0), 9, tmp_path / "d"))
    assert isinstance(phantom, PhantomJob) and (phantom.size, phantom.region, phantom.seed) == ([64, 64, 32], "abdomen", 9)
    assert isinstance(parse_job(params.download_job("rflow-ct")), DownloadJob)
    with pytest.raises(ValueError):
        params.generate_job("demo", tmp_path)


def test_template_regions_are_the_engines_phantom_regions():
    from MAISIEngine.phantom import REGIONS

    assert set(params.TEMPLATE_REGIONS) == set(REGIONS)


def test_settings_check_refuses_what_the_preset_refuses_and_warns_outside_training():
    from MAISIEngine.presets import load_preset

    rflow = load_preset("rflow-ct")
    ok = params.check_size_and_spacing(rflow, (512, 512, 256), (0.8, 0.8, 2.0))
    assert ok.ok and ok.warnings == []
    refused = params.check_size_and_spacing(rflow, (500, 512, 256), (0.8, 0.8, 2.0))
    assert not refused.ok and "multiple of 32" in refused.errors[0] and "--size 512 512 256" in refused.errors[0]
    too_big = params.check_size_and_spacing(rflow, (512, 512, 1024), (0.8, 0.8, 2.0))
    assert not too_big.ok and "outside" in too_big.errors[0]
    small_fov = params.check_size_and_spacing(rflow, (256, 256, 128), (0.5, 0.5, 2.0))
    assert small_fov.ok and any("field of view 128 x 128 mm" in w for w in small_fov.warnings)
    assert params.field_of_view_text((256, 256, 128), (1.5, 1.5, 2.5)) == "384 x 384 x 320 mm"


def test_weights_summary_reads_the_model_directory(random_model_dir):
    summary = params.weights_summary(str(random_model_dir))
    assert summary.ready and not summary.downloadable and summary.text == "weights present"
    (random_model_dir / "controlnet.safetensors").rename(random_model_dir / "controlnet.moved")
    try:
        missing = params.weights_summary(str(random_model_dir))
        assert not missing.ready and missing.text == "weights missing: controlnet"
    finally:
        (random_model_dir / "controlnet.moved").rename(random_model_dir / "controlnet.safetensors")
    assert params.weights_summary("rflow-ct").downloadable
    unknown = params.weights_summary("no-such-model")
    assert not unknown.ready and "unknown model" in unknown.text


def test_gpu_memory_text_from_nvidia_smi_rows():
    from MAISISynthLib import devices

    gpus = devices.parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 80000, 81559\n1, NVIDIA L4, 20480, 23034\nbad line\n")
    assert gpus == [devices.GpuMemory(0, "NVIDIA H100 80GB HBM3", 80000, 81559),
                    devices.GpuMemory(1, "NVIDIA L4", 20480, 23034)]
    assert devices.describe_gpu_memory(gpus) == "GPU 0: 78.1 of 79.6 GB free; GPU 1: 20.0 of 22.5 GB free"
    assert devices.describe_gpu_memory([]) == "no NVIDIA GPU found: the CPU will be used"
