"""A real MRML scene with Slicer's module logics, without the Slicer application (slicer-core).

Slicer's own logics (colors, volumes, segmentations, subject hierarchy, data) are created, given the
scene and registered with an application logic, the way the application wires them at startup. The
`slicer.modules.<name>.logic()` accessors that `slicer.util` and our bridge call are provided for
exactly those logics. Import the `slicer_scene` fixture from a test module to use it.
"""

from __future__ import annotations

import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "MAISISynth"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Tests run workers single-threaded: the suite shares a few cores and the volumes are tiny."""


def run_worker_job(job: dict, workdir: Path, timeout_s: float = 300) -> dict:
    """Run one job through the real worker, as the module does, and return its result event."""
    from MAISISynthLib.jobs import JobRunner

    running = JobRunner(env=WORKER_ENV).start(job, workdir)
    assert running.wait(timeout=timeout_s) == 0, (running.error, running.stderr_tail[-2000:])
    running.poll()
    return running.result

LOGIC_CLASSES = {
    "Volumes": "vtkSlicerVolumesLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Data": "vtkSlicerDataModuleLogic",
}


class SlicerScene:
    """The scene, the application logic and the module logics of one test."""

    def __init__(self, cache_dir: Path) -> None:
        import slicer

        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.colors = slicer.vtkSlicerColorLogic()
        self.colors.SetMRMLApplicationLogic(self.app_logic)
        self.colors.SetMRMLScene(self.scene)
        self.app_logic.SetColorLogic(self.colors)
        self.app_logic.SetModuleLogic("Colors", self.colors)
        self.colors.AddDefaultColorNodes()
        self.logics = {"Colors": self.colors}
        for name, class_name in LOGIC_CLASSES.items():
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic
        self.remote_io = slicer.vtkMRMLRemoteIOLogic()
        self.remote_io.SetMRMLScene(self.scene)
        self.remote_io.GetCacheManager().SetRemoteCacheDirectory(str(cache_dir))
        self.data_io = slicer.vtkDataIOManagerLogic()
        self.data_io.SetMRMLApplicationLogic(self.app_logic)
        self.data_io.SetAndObserveDataIOManager(self.remote_io.GetDataIOManager())

    def modules_namespace(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            **{name.lower(): types.SimpleNamespace(logic=(lambda logic=logic: logic)) for name, logic in self.logics.items()}
        )

    def close(self) -> None:
        self.scene.Clear(True)
        for logic in self.logics.values():
            logic.SetMRMLScene(None)


@pytest.fixture
def slicer_scene() -> Iterator[SlicerScene]:
    """A fresh scene set as `slicer.mrmlScene`, with `slicer.modules.*.logic()` of the real logics."""
    import slicer

    saved = {name: getattr(slicer, name) for name in ("mrmlScene", "modules") if hasattr(slicer, name)}
    with tempfile.TemporaryDirectory() as cache:
        env = SlicerScene(Path(cache))
        slicer.mrmlScene = env.scene
        slicer.modules = env.modules_namespace()
        try:
            yield env
        finally:
            env.close()
            for name in ("mrmlScene", "modules"):
                if name in saved:
                    setattr(slicer, name, saved[name])
                elif hasattr(slicer, name):
                    delattr(slicer, name)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    """A model directory (preset.json + safetensors) of the demo architecture with random weights.

    The worker loads it like any fine-tuned model; it is small enough to sample 32^3 on a CPU.
    """
    import json

    import torch

    from MAISIEngine.networks import build_network, save_safetensors
    from MAISIEngine.presets import load_preset, preset_from_dict

    raw = load_preset("demo").to_dict()
    raw.update(name="random-demo", weights_source="directory")
    directory = tmp_path_factory.mktemp("random-demo")
    (directory / "preset.json").write_text(json.dumps(raw))
    preset = preset_from_dict(raw)
    torch.manual_seed(0)
    for role, filename in preset.weights.items():
        metadata = {"scale_factor": "1.0"} if role == "diffusion_unet" else {}
        save_safetensors(directory / filename, build_network(role, preset), metadata)
    return directory
