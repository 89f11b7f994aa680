"""How the module lives in Slicer's process: the worker's launch (environment, console, process tree),
the PyTorch version check, and job folders that do not pile up in the temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MAISISynth"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from MAISISynthLib import dependencies, jobs, workdirs  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# Worker launch and cancel


class WindowsWorker:
    """A worker as Windows' Popen presents it to the kill logic: a pid, and send_signal, which raises
    when no console is shared with it (Slicer has none; the worker's is hidden)."""

    def __init__(self, pid: int, console_shared: bool) -> None:
        self.pid, self.console_shared, self.signals = pid, console_shared, []

    def send_signal(self, sig) -> None:
        if not self.console_shared:
            raise OSError(87, "The parameter is incorrect")  # what GenerateConsoleCtrlEvent reports
        self.signals.append(sig)


class CommandLog:
    """Records the commands the kill logic runs (taskkill cannot run on this machine)."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, command, **options):
        self.commands.append(list(command))
        return subprocess.CompletedProcess(command, 0)


def test_windows_cancel_falls_back_to_taskkill_of_the_whole_tree_when_ctrl_break_fails():
    run = CommandLog()
    worker = WindowsWorker(4242, console_shared=False)
    assert jobs.signal_windows_tree(worker, graceful=True, run=run) == "taskkill"
    assert run.commands == [["taskkill", "/T", "/F", "/PID", "4242"]]


def test_windows_cancel_sends_ctrl_break_when_it_can_and_forces_when_asked():
    run = CommandLog()
    worker = WindowsWorker(7, console_shared=True)
    assert jobs.signal_windows_tree(worker, graceful=True, run=run) == "break" and run.commands == []
    assert len(worker.signals) == 1
    assert jobs.signal_windows_tree(worker, graceful=False, run=run) == "taskkill"
    assert run.commands == [["taskkill", "/T", "/F", "/PID", "7"]]


def test_the_worker_gets_its_own_session_here():
    assert jobs.popen_platform_options("posix") == {"start_new_session": True}


@pytest.mark.skipif(os.name != "nt", reason="subprocess.STARTUPINFO exists on Windows only")
def test_the_worker_console_is_hidden_on_windows():  # pragma: no cover - runs on Windows
    options = jobs.popen_platform_options("nt")
    assert options["creationflags"] & subprocess.CREATE_NO_WINDOW
    assert options["creationflags"] & subprocess.CREATE_NEW_PROCESS_GROUP
    assert options["startupinfo"].wShowWindow == 0


def test_the_worker_starts_from_the_startup_environment(monkeypatch, tmp_path):
    """Slicer passes the environment it was started with; the application's own additions stay out."""
    monkeypatch.setenv("ADDED_BY_THE_APPLICATION", "1")
    startup = {"PATH": os.environ.get("PATH", ""), "STARTUP_ONLY": "yes"}
    env = jobs.worker_environment({"OMP_NUM_THREADS": "1"}, base=startup)
    assert env["STARTUP_ONLY"] == "yes" and "ADDED_BY_THE_APPLICATION" not in env
    assert env["OMP_NUM_THREADS"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == jobs.engine_search_path()
    # And a real process gets exactly that environment.
    script = tmp_path / "show_env.py"
    script.write_text("import os, sys\nprint(os.environ.get('STARTUP_ONLY'), os.environ.get('ADDED_BY_THE_APPLICATION'))\n")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["yes", "None"]


def test_the_runner_uses_its_base_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ADDED_BY_THE_APPLICATION", "1")
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho \"{\\\"event\\\": \\\"log\\\", \\\"message\\\": \\\"$STARTUP_ONLY-$ADDED_BY_THE_APPLICATION\\\"}\"\n")
    fake_python.chmod(0o755)
    runner = jobs.JobRunner(python=str(fake_python), base_env={"PATH": os.environ["PATH"], "STARTUP_ONLY": "yes"})
    running = runner.start({"type": "generate"}, tmp_path / "work")
    assert running.wait(timeout=30) == 0
    assert [e["message"] for e in running.poll() if e["event"] == "log"] == ["yes-"]


# ---------------------------------------------------------------------------------------------------
# PyTorch version


def test_an_old_torch_is_reported_with_the_version_needed():
    assert dependencies.torch_problem("2.3.1+cu121") == "PyTorch 2.3.1+cu121 is installed, but MAISISynth needs PyTorch >=2.4"
    assert dependencies.torch_problem("1.13.0") is not None
    assert "PyTorch Utils" in dependencies.PYTORCH_UTILS_HINT


def test_a_recent_torch_passes_whatever_its_build_tag():
    for version in ("2.4.0", "2.5.1+cu124", "2.6.0+cpu", "2.13.0", "2.7.0.dev20250101+cu128"):
        assert dependencies.torch_problem(version) is None, version
    assert dependencies.torch_problem(None) is None  # not installed: the install path handles it


def test_the_installed_torch_is_read_from_metadata_and_pinned():
    version = dependencies.installed_version("torch")
    assert version and version.split(".")[0] == "2"
    assert dependencies.torch_problem(version) is None
    assert dependencies.torch_constraints(version) == f"torch=={version}\n"
    assert dependencies.torch_constraints(None) == ""
    assert dependencies.installed_version("no-such-distribution-maisi") is None


def test_missing_packages_are_found_without_importing_them(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy>=1\nno-such-package-maisi>=1\nsafetensors[numpy]>=0.4\n")
    assert dependencies.requirement_import_names(requirements.read_text()) == ["numpy", "no_such_package_maisi", "safetensors"]
    assert dependencies.missing_packages(requirements) == ["no_such_package_maisi"]
    shipped = Path(__file__).resolve().parents[1] / "MAISISynth" / "Resources" / "requirements.txt"
    assert dependencies.missing_packages(shipped) == []  # this environment has the engine's packages


# ---------------------------------------------------------------------------------------------------
# Job folders


def test_job_folders_are_made_under_the_modules_root_and_removed(tmp_path):
    workdir = workdirs.new_work_directory(tmp_path, "generate")
    assert workdir.parent == tmp_path / "MAISISynth" and "-generate-" in workdir.name
    (workdir / "result").mkdir()
    (workdir / "result" / "image.nii.gz").write_bytes(b"x")
    assert workdirs.remove_work_directory(workdir, tmp_path) and not workdir.exists()


def test_nothing_outside_the_modules_root_is_removed(tmp_path):
    outside = tmp_path / "user data"
    outside.mkdir()
    assert not workdirs.remove_work_directory(outside, tmp_path) and outside.is_dir()
    assert not workdirs.remove_work_directory(tmp_path / "MAISISynth", tmp_path)  # the root itself
    assert (tmp_path / "MAISISynth").is_dir() or not (tmp_path / "MAISISynth").exists()
    sneaky = workdirs.jobs_root(tmp_path) / ".." / "user data"
    assert not workdirs.remove_work_directory(sneaky, tmp_path) and outside.is_dir()


def test_stale_job_folders_are_removed_and_recent_or_running_ones_kept(tmp_path):
    old = workdirs.new_work_directory(tmp_path, "inpaint")
    running = workdirs.new_work_directory(tmp_path, "generate")
    recent = workdirs.new_work_directory(tmp_path, "phantom")
    week_ago = time.time() - 8 * 24 * 3600
    for folder in (old, running):
        os.utime(folder, (week_ago, week_ago))
    removed = workdirs.remove_stale_work_directories(tmp_path, keep={running})
    assert removed == [old] and not old.exists() and running.is_dir() and recent.is_dir()


def test_results_read_from_a_job_folder_do_not_refer_to_it(tmp_path):
    """The folder is removed after the job: the node must hold its data, with no storage node pointing there."""
    slicer = pytest.importorskip("slicer")
    import numpy as np

    from slicer_fixtures import SlicerScene

    from MAISISynthLib import mrml

    env = SlicerScene(tmp_path / "cache")
    saved = getattr(slicer, "mrmlScene", None), getattr(slicer, "modules", None)
    slicer.mrmlScene, slicer.modules = env.scene, env.modules_namespace()
    try:
        workdir = workdirs.new_work_directory(tmp_path, "generate")
        data = (np.arange(5 * 6 * 7).reshape(5, 6, 7) - 100).astype(np.int16)
        source = mrml.volume_from_array(data, np.diag([2.0, 2.0, 3.0, 1.0]), "source")
        path = mrml.write_volume_file(source, workdir / "image.nii.gz")
        node = mrml.read_volume_file(path, "result")
        assert workdirs.remove_work_directory(workdir, tmp_path)
        assert node.GetStorageNode() is None
        storages = env.scene.GetNodesByClass("vtkMRMLStorageNode")
        assert [storages.GetItemAsObject(i).GetFileName() for i in range(storages.GetNumberOfItems())
                if storages.GetItemAsObject(i).GetFileName()] == []
        np.testing.assert_array_equal(mrml.array_ijk(node), data)
        kept = mrml.read_volume_file(mrml.write_volume_file(source, tmp_path / "kept.nii.gz"), "kept", keep_storage=True)
        assert kept.GetStorageNode().GetFileName() == str(tmp_path / "kept.nii.gz")
    finally:
        env.close()
        slicer.mrmlScene, slicer.modules = saved
