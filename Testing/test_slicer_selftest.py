"""The module's self-test steps (MAISISynthLib.selftest), run here on slicer-core with the real worker.

Inside Slicer, MAISISynthTest runs them with the module's logic; here a logic made of the same
MAISISynthLib functions stands in for it (the Slicer application itself cannot run on this machine).
The DICOM step needs Slicer's DICOM module and runs only in Slicer.
"""

from __future__ import annotations

import sys
import types
import unittest
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_fixtures import WORKER_ENV, slicer_scene  # noqa: E402,F401  (fixture)

slicer = pytest.importorskip("slicer")

from MAISISynthLib import dependencies, editing, execution, mrml, scene_jobs, selftest, workdirs  # noqa: E402
from MAISISynthLib.jobs import JobRunner  # noqa: E402
from MAISISynthLib.panel import INPUT_TEMPLATE  # noqa: E402

REQUIREMENTS = Path(__file__).resolve().parents[1] / "MAISISynth" / "Resources" / "requirements.txt"


class HeadlessLogic:
    """MAISISynthLogic's methods that the self-test calls, from the same library functions."""

    def __init__(self, temporary: Path, missing: list[str] | None = None) -> None:
        self.temporary, self.missing = temporary, missing
        self.settings = types.SimpleNamespace(
            model="demo", inputKind=INPUT_TEMPLATE, inputSegmentation=None, inputLabelmap=None,
            templateRegion="chest-abdomen", region="auto", sizeX=128, sizeY=128, sizeZ=128, spacingX=3.0,
            spacingY=3.0, spacingZ=3.0, seed=0, steps=0, device="auto", tumorVolume=None, tumorSegmentation=None,
            tumorType="liver")

    def getParameterNode(self):
        return _Parameters(self.settings)

    def missingEnginePackages(self):
        return self.missing if self.missing is not None else dependencies.missing_packages(REQUIREMENTS)

    def torchProblem(self):
        return dependencies.torch_problem(dependencies.installed_version("torch"))

    def newWorkDirectory(self, kind):
        return workdirs.new_work_directory(self.temporary, kind)

    def removeWorkDirectory(self, workdir):
        workdirs.remove_work_directory(workdir, self.temporary)

    def generateJob(self, p, workdir):
        return scene_jobs.generate_job_for(p, workdir)

    def inpaintJob(self, p, workdir):
        return scene_jobs.inpaint_job_for(p, workdir)

    def runJob(self, job, workdir, timeout_s=900):
        return execution.run_to_end(JobRunner(env=WORKER_ENV).start(job, workdir), timeout_s)

    def loadGenerationResult(self, result):
        return mrml.load_generation_result(result, surfaces=False)

    def loadInpaintResult(self, result, source):
        return mrml.load_inpaint_result(result, source, surfaces=False)

    def showResult(self, nodes):
        pass  # no views without the application

    def segmentEditorNode(self):
        return editing.segment_editor_node()


class _Parameters:
    """Attribute access like the parameter node wrapper, with its size and spacing properties."""

    def __init__(self, values):
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name):
        v = self._values
        if name == "size":
            return (v.sizeX, v.sizeY, v.sizeZ)
        if name == "spacing":
            return (v.spacingX, v.spacingY, v.spacingZ)
        return getattr(v, name)

    def __setattr__(self, name, value):
        setattr(self._values, name, value)


def test_the_self_test_is_skipped_with_the_missing_packages_named(tmp_path):
    reason = selftest.skip_reason(HeadlessLogic(tmp_path, missing=["torch", "monai"]))
    assert reason == ("the MAISI engine's Python packages are not installed (torch, monai); click Generate once in "
                      "the module to install them, then run the test again")
    assert selftest.skip_reason(HeadlessLogic(tmp_path)) is None  # this environment has everything


def test_the_self_test_skips_through_unittest(tmp_path):
    """MAISISynthTest calls skipTest with the reason: unittest reports a skip, not a failure."""

    class Case(unittest.TestCase):
        def runTest(self):
            reason = selftest.skip_reason(HeadlessLogic(tmp_path, missing=["torch"]))
            if reason:
                self.skipTest(reason)
            self.fail("not skipped")

    result = unittest.TestResult()
    Case().run(result)
    assert result.failures == [] and result.errors == [] and len(result.skipped) == 1
    assert "torch" in result.skipped[0][1]


def test_generate_inpaint_and_nifti_export_steps(slicer_scene, tmp_path):
    case = unittest.TestCase()
    logic = HeadlessLogic(tmp_path)
    nodes = selftest.run_generate(case, logic)
    inpainted, tumor = selftest.run_inpaint(case, logic, nodes)
    assert tumor.sum() >= 7
    selftest.run_nifti_export(case, inpainted, tumor)
    assert list((tmp_path / "MAISISynth").iterdir()) == []  # every job folder removed
