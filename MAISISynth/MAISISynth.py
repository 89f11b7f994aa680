"""MAISISynth: draw or pick a MAISI label map, generate a synthetic CT with MAISI, paint tumors, export.

The widget is thin: everything that is not widget code lives in MAISISynthLib (jobs, parameters,
MRML bridge), which is tested outside the application. Generation runs in a separate process (the
engine's worker, started with PythonSlicer), so the UI stays responsive, Cancel stops it at once and a
CUDA out-of-memory error cannot take Slicer down; or, in the Compute section's Server mode, on a GPU
machine running `maisi serve`, through the same job API.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import ctk
import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode


def _make_engine_importable() -> None:
    """The extension installs the engine beside this file; a source checkout keeps it one level up."""
    here = Path(__file__).resolve().parent
    for candidate in (here, here.parent):
        if (candidate / "MAISIEngine" / "__init__.py").is_file() and str(candidate) not in sys.path:
            sys.path.insert(0, str(candidate))
            return


_make_engine_importable()

from MAISIEngine import labels as maisi_labels  # noqa: E402
from MAISIEngine.errors import MaisiError  # noqa: E402
from MAISIEngine.presets import load_preset  # noqa: E402
from MAISISynthLib import devices, execution, mrml, params  # noqa: E402
from MAISISynthLib.jobs import JobRunner, RunningJob, describe_progress  # noqa: E402

INPUT_TEMPLATE = "Phantom template"
INPUT_SEGMENTATION = "Segmentation"
INPUT_LABELMAP = "Label map volume"
EXPORT_NIFTI = "NIfTI"
EXPORT_DICOM = "DICOM"
TORCH_REQUIREMENT = ">=2.4"
POLL_INTERVAL_MS = 200


#
# MAISISynth
#


class MAISISynth(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MAISI Synthetic CT")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "SubjectHierarchy"]
        self.parent.contributors = ["MAISISynth contributors"]
        self.parent.helpText = _("""
Generate synthetic CT volumes with MAISI from a label map: a phantom template, a segmentation whose
segments are named after MAISI labels, or a label map volume. Paint tumors and inpaint them; export
NIfTI or DICOM. Results are synthetic and carry their provenance (seed, model, weight hashes).
Not for clinical use.
""")
        self.parent.acknowledgementText = _("""
MAISI (Medical AI for Synthetic Imaging) is by NVIDIA and the MONAI consortium; the networks are
MONAI's. The official weights are NVIDIA's, under their own licence.
""")


#
# Parameters
#


@parameterNodeWrapper
class MAISISynthParameterNode:
    """Everything the user chose in the module, saved with the scene."""

    model: Annotated[str, Choice(list(params.MODEL_CHOICES))] = "demo"
    inputKind: Annotated[str, Choice([INPUT_TEMPLATE, INPUT_SEGMENTATION, INPUT_LABELMAP])] = INPUT_TEMPLATE
    inputSegmentation: vtkMRMLSegmentationNode
    inputLabelmap: vtkMRMLLabelMapVolumeNode
    templateRegion: Annotated[str, Choice(list(params.TEMPLATE_REGIONS))] = "chest-abdomen"
    region: Annotated[str, Choice(list(params.REGION_CHOICES))] = "auto"
    sizeX: Annotated[int, WithinRange(16, 1024)] = 128
    sizeY: Annotated[int, WithinRange(16, 1024)] = 128
    sizeZ: Annotated[int, WithinRange(16, 1024)] = 128
    spacingX: Annotated[float, WithinRange(0.1, 20.0)] = 3.0
    spacingY: Annotated[float, WithinRange(0.1, 20.0)] = 3.0
    spacingZ: Annotated[float, WithinRange(0.1, 20.0)] = 3.0
    seed: Annotated[int, WithinRange(0, params.MAX_SEED)] = 0
    steps: Annotated[int, WithinRange(0, 1000)] = 0
    device: Annotated[str, Choice(list(params.DEVICE_CHOICES))] = "auto"
    modality: Annotated[str, Choice(list(params.MODALITY_CHOICES))] = "ct"
    volumeRendering: bool = False
    tumorVolume: vtkMRMLScalarVolumeNode
    tumorSegmentation: vtkMRMLSegmentationNode
    tumorType: Annotated[str, Choice(list(maisi_labels.TUMOR_TYPES))] = "liver"
    exportVolume: vtkMRMLScalarVolumeNode
    exportSegmentation: vtkMRMLSegmentationNode
    exportFormat: Annotated[str, Choice([EXPORT_NIFTI, EXPORT_DICOM])] = EXPORT_NIFTI
    exportDirectory: Path = Path.home()
    computeOn: Annotated[str, Choice(list(execution.MODE_LABELS.values()))] = execution.MODE_LABELS[execution.LOCAL]
    serverUrl: str = execution.DEFAULT_SERVER_URL
    serverTokenFile: Path = Path()

    @property
    def size(self) -> tuple[int, int, int]:
        return (self.sizeX, self.sizeY, self.sizeZ)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (self.spacingX, self.spacingY, self.spacingZ)

    @property
    def executionSettings(self) -> execution.ExecutionSettings:
        """Where generation runs; the scene keeps the token file's path, never the token."""
        return execution.ExecutionSettings.from_values(self.computeOn, self.serverUrl, self.serverTokenFile)


#
# MAISISynthWidget
#


class MAISISynthWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Panels for generation, tumor painting and export; all work is done by the logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: MAISISynthLogic | None = None
        self._parameterNode: MAISISynthParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._job: RunningJob | None = None
        self._jobKind = ""
        self._jobButton = None
        self._jobButtonText = ""
        self._jobContext: dict[str, Any] = {}
        self._jobStarted = 0.0
        self._lastVolume = None
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.timeout.connect(self.onPollJob)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MAISISynth.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MAISISynthLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.generateButton.connect("clicked(bool)", self.onGenerateButton)
        self.ui.downloadWeightsButton.connect("clicked(bool)", self.onDownloadWeights)
        self.ui.diceButton.connect("clicked(bool)", self.onDice)
        self.ui.editPhantomButton.connect("clicked(bool)", self.onEditPhantom)
        self.ui.bodyOutlineButton.connect("clicked(bool)", self.onBodyOutline)
        self.ui.addTumorButton.connect("clicked(bool)", self.onAddTumor)
        self.ui.inpaintButton.connect("clicked(bool)", self.onInpaint)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.volumeRenderingCheckBox.connect("toggled(bool)", self.onVolumeRenderingToggled)
        self.ui.tumorVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onTumorNodesChanged)
        self.ui.tumorSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onTumorNodesChanged)
        self.ui.testConnectionButton.connect("clicked(bool)", self.onTestConnection)
        self.ui.serverTokenFilePathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable

        self.ui.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.ui.progressBar.setRange(0, 1000)
        self.ui.gpuMemoryLabel.text = devices.describe_gpu_memory(devices.gpu_memory())
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes: never leave a worker running."""
        self._pollTimer.stop()
        if self._job is not None and self._job.is_running():
            try:
                self._job.cancel()
            except OSError as exc:  # a server job whose server cannot be reached any more
                logging.warning("MAISISynth: could not stop the job on the server: %s", exc)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()

    def exit(self) -> None:
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: MAISISynthParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
            self.updateGui()

    # -- state shown in the panels ---------------------------------------------------------------
    def updateGui(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        kind = p.inputKind
        for widget in (self.ui.inputSegmentationLabel, self.ui.inputSegmentationSelector):
            widget.visible = kind == INPUT_SEGMENTATION
        for widget in (self.ui.inputLabelmapLabel, self.ui.inputLabelmapSelector):
            widget.visible = kind == INPUT_LABELMAP
        self.ui.fieldOfViewLabel.text = params.field_of_view_text(p.size, p.spacing)
        check = self.logic.checkSettings(p)
        if check.errors:
            self.ui.sizeCheckLabel.text = "\n".join(check.errors)
            self.ui.sizeCheckLabel.styleSheet = "color: #c62828"
        else:
            self.ui.sizeCheckLabel.text = "\n".join(check.warnings)
            self.ui.sizeCheckLabel.styleSheet = "color: #b26a00"
        onServer = p.executionSettings.on_server
        for widget in (self.ui.serverUrlLabel, self.ui.serverUrlLineEdit, self.ui.serverTokenFileLabel,
                       self.ui.serverTokenFilePathLineEdit, self.ui.testConnectionButton, self.ui.connectionStatusLabel):
            widget.enabled = onServer
        if onServer:
            weights = params.WeightsSummary(True, False, _("weights on the server"))
        else:
            weights = params.weights_summary(p.model)
        self.ui.weightsStatusLabel.text = weights.text
        self.ui.downloadWeightsButton.enabled = weights.downloadable and not weights.ready and self._job is None
        busy = self._job is not None
        self.ui.editPhantomButton.enabled = not busy
        inputReady = kind == INPUT_TEMPLATE or (kind == INPUT_SEGMENTATION and p.inputSegmentation) or (
            kind == INPUT_LABELMAP and p.inputLabelmap)
        self.ui.generateButton.enabled = not busy and bool(inputReady) and check.ok
        self.ui.generateButton.toolTip = check.text() or _("Generate a synthetic CT from the label map")
        self.ui.addTumorButton.enabled = bool(p.tumorSegmentation)
        self.ui.inpaintButton.enabled = not busy and bool(p.tumorVolume and p.tumorSegmentation)
        self.ui.exportButton.enabled = bool(p.exportVolume) and not busy
        if self._jobButton is not None:
            self._jobButton.enabled = True  # it is the Cancel button while its job runs

    def onTumorNodesChanged(self, node=None) -> None:
        """The embedded Segment Editor edits the chosen segmentation over the chosen CT."""
        self.ui.segmentEditorWidget.setSegmentationNode(self.ui.tumorSegmentationSelector.currentNode())
        self.ui.segmentEditorWidget.setSourceVolumeNode(self.ui.tumorVolumeSelector.currentNode())

    def onDice(self) -> None:
        self._parameterNode.seed = params.random_seed()

    # -- jobs ----------------------------------------------------------------------------------------
    def _startJob(self, kind: str, job: dict, workdir: Path, button, context: dict | None = None) -> None:
        self._job = self.logic.startJob(job, workdir, self._parameterNode.executionSettings)
        self._jobStarted = time.monotonic()
        self._jobKind, self._jobButton, self._jobContext = kind, button, dict(context or {})
        self._jobButtonText = button.text
        self._jobButton.text = _("Cancel")
        self._jobButton.enabled = True
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Starting...")
        self.ui.logTextEdit.appendPlainText(f"--- {kind} started ({time.strftime('%H:%M:%S')}) in {workdir}")
        self._pollTimer.start()
        self.updateGui()

    def _cancelJob(self) -> None:
        if self._job is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not stop the job."), waitCursor=True):
            self._job.cancel()
        self.ui.statusLabel.text = _("Cancelled")
        self._finishJob()

    def onPollJob(self) -> None:
        job = self._job
        if job is None:
            self._pollTimer.stop()
            return
        ended = not job.is_running()  # asked first: a job seen finished has all its events in this poll
        for event in job.poll():
            kind = event.get("event")
            if kind == "progress":
                self.ui.statusLabel.text = describe_progress(event)
            elif kind == "log":
                self.ui.logTextEdit.appendPlainText(str(event.get("message", "")))
            elif kind in ("error", "cancelled"):
                self.ui.logTextEdit.appendPlainText(describe_progress(event))
        self.ui.progressBar.value = int(round(job.progress_fraction * 1000))
        if not ended or job.returncode is None:
            return
        kind, context = self._jobKind, self._jobContext
        self._finishJob()
        if job.result is not None and job.returncode == 0:
            self.ui.statusLabel.text = _("Done in {seconds:.0f} s").format(seconds=time.monotonic() - self._jobStarted)
            with slicer.util.tryWithErrorDisplay(_("Could not load the result."), waitCursor=True):
                self._onJobResult(kind, job.result, context)
        elif job.error is not None:
            self.ui.statusLabel.text = describe_progress(job.error)
            self.showEngineError(job.error)

    def _finishJob(self) -> None:
        self._pollTimer.stop()
        if self._jobButton is not None:
            self._jobButton.text = self._jobButtonText
        self._job, self._jobButton, self._jobKind, self._jobContext = None, None, "", {}
        self.updateGui()

    def _onJobResult(self, kind: str, result: dict, context: dict) -> None:
        if kind == "generate":
            nodes = self.logic.loadGenerationResult(result)
            self._lastVolume = nodes.volume
            self.logic.showResult(nodes, volumeRendering=self._parameterNode.volumeRendering)
            self._parameterNode.exportVolume = nodes.volume
            self._parameterNode.exportSegmentation = nodes.segmentation
            self._parameterNode.tumorVolume = nodes.volume
            self._parameterNode.tumorSegmentation = nodes.segmentation
        elif kind == "phantom":
            segmentation = mrml.labelmap_file_to_segmentation(result["mask"], name="MAISI phantom template")
            phantomCt = mrml.read_volume_file(result["ct"], name="MAISI phantom CT (procedural)")
            self._useAsInput(segmentation, phantomCt)
        elif kind == "inpaint":
            nodes = self.logic.loadInpaintResult(result, context["sourceVolume"])
            self.logic.showResult(nodes, volumeRendering=self._parameterNode.volumeRendering)
            self._parameterNode.exportVolume = nodes.volume
            self._parameterNode.exportSegmentation = nodes.segmentation
        elif kind == "download":
            self.ui.logTextEdit.appendPlainText(_("Weights downloaded and verified."))

    def _useAsInput(self, segmentation, sourceVolume) -> None:
        """Make a segmentation the generation input and open it, over its grid, in the Segment Editor."""
        p = self._parameterNode
        p.inputSegmentation = segmentation
        p.inputKind = INPUT_SEGMENTATION
        p.tumorVolume = sourceVolume
        p.tumorSegmentation = segmentation
        self.ui.tumorCollapsibleButton.collapsed = False
        self.ui.segmentEditorWidget.setSegmentationNode(segmentation)
        self.ui.segmentEditorWidget.setSourceVolumeNode(sourceVolume)
        slicer.util.setSliceViewerLayers(background=sourceVolume, fit=True)

    # -- buttons -------------------------------------------------------------------------------------
    def onGenerateButton(self) -> None:
        self._runOrCancel("generate", _("Could not start the generation."), self.logic.generateJob,
                          self.ui.generateButton)

    def _runOrCancel(self, kind: str, failure: str, makeJob, button, extra: dict | None = None) -> None:
        """Cancel the running job, or build a job of `kind` from the parameters and start it."""
        if self._job is not None:
            self._cancelJob()
            return
        p = self._parameterNode
        if not self._readyToRun(p):
            return
        with slicer.util.tryWithErrorDisplay(failure, waitCursor=True):
            try:
                workdir = self.logic.newWorkDirectory(kind)
                job = makeJob(p, workdir)
            except MaisiError as exc:
                self.showEngineError({"message": exc.message, "hint": exc.hint})
                return
            try:
                self._startJob(kind, job, workdir, button, extra)
            except MaisiError as exc:
                shutil.rmtree(workdir, ignore_errors=True)
                self.showEngineError({"message": exc.message, "hint": exc.hint})

    def _readyToRun(self, p: MAISISynthParameterNode) -> bool:
        """On this computer: the engine's packages and the model's weights; a server has its own."""
        if p.executionSettings.on_server:
            return True
        return self.logic.ensureEngineDependencies() and self._ensureWeights(p.model)

    def _ensureWeights(self, model: str) -> bool:
        weights = params.weights_summary(model)
        if weights.ready:
            return True
        if weights.downloadable and slicer.util.confirmYesNoDisplay(
            _("The weights of model {model} are not on this computer ({status}). Download them now?").format(
                model=model, status=weights.text)):
            self.onDownloadWeights()
        elif not weights.downloadable:
            slicer.util.errorDisplay(_("Model {model}: {status}.").format(model=model, status=weights.text))
        return False

    def onDownloadWeights(self) -> None:
        if self._job is not None:
            self._cancelJob()
            return
        if not self.logic.ensureEngineDependencies():
            return
        model = self._parameterNode.model
        workdir = self.logic.newWorkDirectory("download")
        self._startJob("download", params.download_job(model), workdir, self.ui.downloadWeightsButton)

    def onEditPhantom(self) -> None:
        if self._job is not None:
            self._cancelJob()
            return
        if not self.logic.ensureEngineDependencies():
            return
        p = self._parameterNode
        workdir = self.logic.newWorkDirectory("phantom")
        job = params.phantom_job(p.templateRegion, p.size, p.spacing, p.seed, workdir / "phantom")
        self._startJob("phantom", job, workdir, self.ui.editPhantomButton)

    def onBodyOutline(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not create the body outline."), waitCursor=True):
            segmentation, grid = mrml.body_outline_segmentation(p.size, p.spacing, name="MAISI body outline")
            self._useAsInput(segmentation, grid)

    def onAddTumor(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not add the tumor segment."), waitCursor=True):
            segmentId = mrml.add_tumor_segment(p.tumorSegmentation, p.tumorType)
            editor = self.ui.segmentEditorWidget
            editor.setSegmentationNode(p.tumorSegmentation)
            editor.setSourceVolumeNode(p.tumorVolume)
            editor.setCurrentSegmentID(segmentId)
            editor.setActiveEffectByName("Paint")

    def onInpaint(self) -> None:
        self._runOrCancel("inpaint", _("Could not start inpainting."), self.logic.inpaintJob, self.ui.inpaintButton,
                          {"sourceVolume": self._parameterNode.tumorVolume})

    def onTestConnection(self) -> None:
        """Reach the chosen server and check the token; the answer is shown beside the button."""
        with slicer.util.tryWithErrorDisplay(_("Could not test the connection."), waitCursor=True):
            try:
                answer = execution.check_connection(self._parameterNode.executionSettings)
            except MaisiError as exc:
                self.ui.connectionStatusLabel.text = _("Not connected: {message}").format(message=exc.message)
                self.showEngineError({"message": exc.message, "hint": exc.hint})
                return
            self.ui.connectionStatusLabel.text = answer

    def onExport(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            try:
                if p.exportFormat == EXPORT_DICOM:
                    written = self.logic.exportDicom(p.exportVolume, p.exportSegmentation, p.exportDirectory)
                else:
                    written = list(mrml.export_nifti(p.exportVolume, p.exportSegmentation, p.exportDirectory).values())
            except MaisiError as exc:
                self.showEngineError({"message": exc.message, "hint": exc.hint})
                return
            self.ui.logTextEdit.appendPlainText(_("Exported: ") + ", ".join(str(w) for w in written))
            slicer.util.infoDisplay(_("Exported to {folder}").format(folder=p.exportDirectory))

    def onVolumeRenderingToggled(self, checked: bool) -> None:
        if self._lastVolume is not None and self._lastVolume.GetScene() is not None:
            self.logic.showVolumeRendering(self._lastVolume, checked)

    # -- errors ----------------------------------------------------------------------------------------
    def showEngineError(self, event: dict) -> None:
        """The engine's message and hint in a dialog, with the action that fixes the usual causes."""
        message = str(event.get("message", _("The job failed.")))
        hint = str(event.get("hint") or "")
        details = str(event.get("stderr_tail") or "") or None
        text = f"{message}\n\n{hint}" if hint else message
        if event.get("kind") == "WeightsMissingError":
            if slicer.util.confirmYesNoDisplay(text + "\n\n" + _("Download the weights now?")):
                self.onDownloadWeights()
            return
        if "out of memory" in message.lower():
            if self._parameterNode.device != "cpu" and slicer.util.confirmYesNoDisplay(
                    text + "\n\n" + _("Switch the device to CPU (slower, uses main memory) and try again?")):
                self._parameterNode.device = "cpu"
            return
        slicer.util.errorDisplay(text, detailedText=details)


#
# MAISISynthLogic
#


class MAISISynthLogic(ScriptedLoadableModuleLogic):
    """Generation, inpainting and export without the widget (usable from the Python console)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = JobRunner(python=self.pythonExecutable())

    def getParameterNode(self) -> MAISISynthParameterNode:
        return MAISISynthParameterNode(super().getParameterNode())

    @staticmethod
    def pythonExecutable() -> str:
        """PythonSlicer: Slicer's interpreter with Slicer's packages, started as a plain process."""
        found = shutil.which("PythonSlicer")
        if found:
            return found
        candidate = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
        return str(candidate) if candidate.exists() else sys.executable

    # -- dependencies --------------------------------------------------------------------------------
    def engineImportNames(self) -> list[str]:
        """torch plus the packages of Resources/requirements.txt (their import names are their names)."""
        names = ["torch"]
        for line in Path(self.resourcePath("requirements.txt")).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                names.append(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].replace("-", "_"))
        return names

    def missingEnginePackages(self) -> list[str]:
        """Packages the worker imports that Slicer's Python lacks (PythonSlicer shares its site-packages)."""
        import importlib.util

        return [name for name in self.engineImportNames() if importlib.util.find_spec(name) is None]

    def ensureEngineDependencies(self) -> bool:
        """Install what the engine needs, each step after the user agreed: torch first, then the rest."""
        missing = self.missingEnginePackages()
        if not missing:
            return True
        if "torch" in missing:
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay(_(
                    "MAISISynth needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, "
                    "restart Slicer and try again."))
                return False
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
            if torch is None:
                slicer.util.errorDisplay(_("PyTorch was not installed; generation needs it."))
                return False
        try:
            import slicer.packaging as packaging

            packaging.pip_ensure  # noqa: B018 - present since Slicer 5.12
        except (ImportError, AttributeError):
            import slicer.pydeps as packaging  # the same functions under their Slicer 5.11 name
        requirements = packaging.load_requirements(self.resourcePath("requirements.txt"))
        try:
            packaging.pip_ensure(requirements, requester="MAISISynth", prompt_install=True)
        except RuntimeError as exc:
            slicer.util.errorDisplay(_("The Python packages MAISISynth needs were not installed: {reason}").format(
                reason=exc))
            return False
        still = self.missingEnginePackages()
        if still:
            slicer.util.errorDisplay(_("Still missing: {packages}. Restart Slicer and try again.").format(
                packages=", ".join(still)))
            return False
        return True

    def resourcePath(self, filename: str) -> str:
        return str(Path(__file__).resolve().parent / "Resources" / filename)

    # -- jobs ------------------------------------------------------------------------------------------
    @staticmethod
    def newWorkDirectory(kind: str) -> Path:
        """A fresh folder for one job's files, under Slicer's temporary folder."""
        root = Path(slicer.app.temporaryPath) / "MAISISynth"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-", dir=root))

    @staticmethod
    def checkSettings(p: MAISISynthParameterNode) -> params.SettingsCheck:
        try:
            preset = load_preset(p.model)
        except MaisiError as exc:
            return params.SettingsCheck(errors=[exc.one_line()])
        return params.check_size_and_spacing(preset, p.size, p.spacing)

    def generateJob(self, p: MAISISynthParameterNode, workdir: Path) -> dict:
        """The worker's job for the current settings; the input label map is written into `workdir`."""
        check = self.checkSettings(p)
        if not check.ok:
            raise MaisiError(check.errors[0], _("change the size or spacing"))
        mask = None
        if p.inputKind == INPUT_SEGMENTATION:
            if not p.inputSegmentation:
                raise MaisiError(_("no segmentation selected"), _("choose one, or use a phantom template"))
            mask = mrml.temporary_labelmap_file(p.inputSegmentation, None, workdir)
        elif p.inputKind == INPUT_LABELMAP:
            if not p.inputLabelmap:
                raise MaisiError(_("no label map volume selected"), _("choose one, or use a phantom template"))
            mask = mrml.labelmap_volume_file(p.inputLabelmap, workdir)
        return params.generate_job(
            p.model, workdir / "result", mask=mask,
            template_region=p.templateRegion if mask is None else None,
            size=p.size, spacing=p.spacing, region=p.region, seed=p.seed, steps=p.steps or None, device=p.device,
            modality=None if p.modality == "ct" else p.modality,  # ct: the model's default (models without classes too)
        )

    def inpaintJob(self, p: MAISISynthParameterNode, workdir: Path) -> dict:
        """CT, labels without the tumor, and the painted tumor mask, all on the CT's grid."""
        if not p.tumorVolume or not p.tumorSegmentation:
            raise MaisiError(_("choose the CT and its segmentation"), _("both are needed to inpaint a tumor"))
        files = mrml.write_inpaint_inputs(p.tumorVolume, p.tumorSegmentation, p.tumorType, workdir)
        return params.inpaint_job(p.model, workdir / "result", image=files["image"], labels=files["labels"],
                                  tumor=files["tumor"], tumor_type=p.tumorType, seed=p.seed,
                                  steps=p.steps or None, device=p.device,
                                  modality=None if p.modality == "ct" else p.modality)

    def startJob(self, job: dict, workdir: Path, settings: execution.ExecutionSettings | None = None):
        """Start a job on this computer, or (generation and inpainting in Server mode) on the server.

        Returns a RunningJob or a RemoteJob; both have the same API.
        """
        return execution.start_job(job, workdir, settings or execution.ExecutionSettings(), self.runner)

    def runJob(self, job: dict, workdir: Path, timeout_s: float = 3600.0,
               settings: execution.ExecutionSettings | None = None):
        """Run a job to its end while keeping the application responsive (tests, scripting)."""
        return execution.run_to_end(self.startJob(job, workdir, settings), timeout_s, slicer.app.processEvents)

    # -- results -------------------------------------------------------------------------------------------
    @staticmethod
    def loadGenerationResult(result: dict) -> mrml.GenerationNodes:
        return mrml.load_generation_result(result)

    @staticmethod
    def loadInpaintResult(result: dict, sourceVolume) -> mrml.GenerationNodes:
        """The inpainted CT as a new volume beside its source (which is never modified)."""
        nodes = mrml.load_generation_result(result)
        nodes.volume.SetName(f"{sourceVolume.GetName()} inpainted seed {nodes.volume.GetAttribute('MAISI.seed')}")
        nodes.volume.SetAttribute("MAISI.inpaintedFrom", sourceVolume.GetID())
        return nodes

    def showResult(self, nodes: mrml.GenerationNodes, volumeRendering: bool = False) -> None:
        """Four-up layout: the CT with its segments in the slice views, 3D surfaces, optional rendering."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        slicer.util.setSliceViewerLayers(background=nodes.volume, foreground=None, label=None, fit=True)
        self.showVolumeRendering(nodes.volume, volumeRendering)
        threeDView = layoutManager.threeDWidget(0).threeDView()
        threeDView.resetFocalPoint()
        threeDView.resetCamera()

    @staticmethod
    def showVolumeRendering(volume, visible: bool) -> None:
        logic = slicer.modules.volumerendering.logic()
        displayNode = logic.GetFirstVolumeRenderingDisplayNode(volume)
        if displayNode is None:
            if not visible:
                return
            displayNode = logic.CreateDefaultVolumeRenderingNodes(volume)
            preset = logic.GetPresetByName(volume.GetAttribute("MAISI.volumeRenderingPreset") or mrml.VOLUME_RENDERING_PRESET)
            if preset is not None:
                displayNode.GetVolumePropertyNode().Copy(preset)
        displayNode.SetVisibility(visible)

    @staticmethod
    def segmentEditorNode():
        node = slicer.mrmlScene.GetSingletonNode("MAISISynth", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag("MAISISynth")
            node = slicer.mrmlScene.AddNode(node)
        return node

    # -- DICOM export (needs the application's DICOM module) ---------------------------------------------
    def exportDicom(self, volume, segmentation, directory: Path) -> list[Path]:
        """CT series through Slicer's DICOM exporter, then DICOM SEG referencing it, under a synthetic patient."""
        try:
            import DICOMScalarVolumePlugin
            import DICOMSegmentationPlugin
            from DICOMLib import DICOMUtils
        except ImportError:
            raise MaisiError(_("DICOM export needs Slicer's DICOM module"),
                             _("enable the DICOM module in Application Settings > Modules, or export NIfTI")) from None
        if volume is None:
            raise MaisiError(_("no CT volume selected"), _("choose the volume to export"))
        directory = Path(directory)
        ctDirectory, segDirectory = directory / "CT", directory / "SEG"
        sh = mrml.subject_hierarchy()
        self._placeUnderSyntheticStudy(volume, segmentation)
        seed, model = volume.GetAttribute("MAISI.seed") or "?", volume.GetAttribute("MAISI.model") or "?"
        constants = slicer.vtkMRMLSubjectHierarchyConstants
        exporter = DICOMScalarVolumePlugin.DICOMScalarVolumePluginClass()
        exportables = exporter.examineForExport(sh.GetItemByDataNode(volume))
        for exportable in exportables:
            exportable.directory = str(ctDirectory)
            exportable.setTag(constants.GetDICOMPatientNameTagName(), mrml.PATIENT_NAME)
            exportable.setTag(constants.GetDICOMPatientIDTagName(), mrml.PATIENT_ID)
            exportable.setTag(constants.GetDICOMStudyDescriptionTagName(), sh.GetItemName(sh.GetItemParent(sh.GetItemByDataNode(volume))))
            exportable.setTag("SeriesDescription", f"SYNTHETIC CT MAISI {model} seed {seed}")
            exportable.setTag("Manufacturer", "MAISISynth (synthetic image)")
            exportable.setTag("Model", f"MAISI {model}")
        ctDirectory.mkdir(parents=True, exist_ok=True)
        error = exporter.export(exportables)
        if error:
            raise MaisiError(_("DICOM export of the CT failed: {error}").format(error=error), _("check the folder"))
        written = sorted(ctDirectory.rglob("*.dcm"))
        if segmentation is None:
            return written
        # DICOM SEG references the CT instances by UID: load the series just written and refer to it.
        with DICOMUtils.TemporaryDICOMDatabase() as database:
            DICOMUtils.importDicom(str(ctDirectory), database)
            seriesUids = [database.fileValue(str(f), "0020,000E") for f in written[:1]]
            loaded = DICOMUtils.loadSeriesByUID(seriesUids)
            referenceVolume = slicer.mrmlScene.GetNodeByID(loaded[0]) if loaded else None
            if referenceVolume is None:
                raise MaisiError(_("the exported CT series could not be read back"), _("check the folder"))
            export = None
            try:
                export = self._segmentationForDicom(segmentation, referenceVolume)
                segItem = sh.GetItemByDataNode(export)
                sh.SetItemParent(segItem, sh.GetItemParent(sh.GetItemByDataNode(referenceVolume)))
                sh.SetItemAttribute(segItem, "DICOM.ReferencedInstanceUIDs",
                                    referenceVolume.GetAttribute("DICOM.instanceUIDs") or "")
                segExporter = DICOMSegmentationPlugin.DICOMSegmentationPluginClass()
                segExportables = segExporter.examineForExport(segItem)
                segDirectory.mkdir(parents=True, exist_ok=True)
                for exportable in segExportables:
                    exportable.directory = str(segDirectory)
                    exportable.setTag("SeriesDescription", f"SYNTHETIC SEG MAISI {model} seed {seed}")
                error = segExporter.export(segExportables) if segExportables else _("no exportable segmentation")
                if error:
                    raise MaisiError(_("DICOM SEG export failed: {error}").format(error=error),
                                     _("check that every segment has a terminology"))
            finally:
                slicer.mrmlScene.RemoveNode(referenceVolume)
                if export is not None:
                    slicer.mrmlScene.RemoveNode(export)
        return written + sorted(segDirectory.rglob("*.dcm"))

    @staticmethod
    def _segmentationForDicom(segmentation, referenceVolume):
        """A copy of the segmentation on the geometry of the DICOM-loaded CT (the original stays as it is)."""
        copy = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", segmentation.GetName())
        copy.GetSegmentation().DeepCopy(segmentation.GetSegmentation())
        copy.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
        copy.SetNodeReferenceID(copy.GetReferenceImageGeometryReferenceRole(), referenceVolume.GetID())
        return copy

    @staticmethod
    def _placeUnderSyntheticStudy(volume, segmentation) -> None:
        """Volumes made elsewhere (e.g. a real CT after inpainting) still export under the synthetic patient."""
        sh = mrml.subject_hierarchy()
        parent = sh.GetItemParent(sh.GetItemByDataNode(volume))
        if sh.GetItemLevel(parent) == "Study" and sh.GetItemAttribute(parent, "MAISI.synthetic") == "true":
            return
        study = mrml.new_synthetic_study(volume.GetAttribute("MAISI.seed") or "?",
                                         volume.GetAttribute("MAISI.model") or "?")
        mrml.place_in_study(volume, study)
        if segmentation is not None:
            mrml.place_in_study(segmentation, study)


#
# MAISISynthTest
#


class MAISISynthTest(ScriptedLoadableModuleTest):
    """Generates with the demo model on the CPU through the real worker and checks the nodes."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_generate_demo_on_cpu()

    def test_generate_demo_on_cpu(self):
        self.delayDisplay("Generating a 64^3 CT with the demo model on the CPU")
        logic = MAISISynthLogic()
        self.assertEqual(logic.missingEnginePackages(), [], "install the engine's packages first")
        self.assertTrue(params.weights_summary("demo").ready, "the demo weights ship with the extension")
        p = logic.getParameterNode()
        p.model, p.inputKind, p.templateRegion = "demo", INPUT_TEMPLATE, "chest-abdomen"
        p.sizeX = p.sizeY = p.sizeZ = 64
        p.spacingX = p.spacingY = p.spacingZ = 5.0
        p.seed, p.steps, p.device = 11, 4, "cpu"
        workdir = logic.newWorkDirectory("test")
        running = logic.runJob(logic.generateJob(p, workdir), workdir, timeout_s=900)
        self.assertEqual(running.returncode, 0, json.dumps(running.error))
        progress = [e for e in running.events if e["event"] == "progress" and e["stage"] == "sampling"]
        self.assertEqual([e["step"] for e in progress][-1], 4)
        nodes = logic.loadGenerationResult(running.result)
        logic.showResult(nodes)

        volume, segmentation = nodes.volume, nodes.segmentation
        self.assertEqual(volume.GetImageData().GetDimensions(), (64, 64, 64))
        for actual, expected in zip(volume.GetSpacing(), (5.0, 5.0, 5.0)):
            self.assertAlmostEqual(actual, expected, places=4)
        hu = slicer.util.arrayFromVolume(volume)
        self.assertGreaterEqual(int(hu.min()), -1000)
        self.assertLessEqual(int(hu.max()), 1000)
        self.assertEqual((volume.GetDisplayNode().GetWindow(), volume.GetDisplayNode().GetLevel()), mrml.CT_WINDOW_LEVEL)
        self.assertEqual(volume.GetAttribute("MAISI.seed"), "11")
        self.assertEqual(volume.GetAttribute("MAISI.model"), "demo")
        self.assertEqual(volume.GetAttribute("MAISI.steps"), "4")
        self.assertEqual(sorted(json.loads(volume.GetAttribute("MAISI.weights_sha256"))),
                         ["autoencoder", "controlnet", "diffusion_unet"])

        labels = slicer.util.arrayFromVolume(mrml.segmentation_to_labelmap(segmentation, volume))
        segmentIds = mrml.segment_ids(segmentation)
        names = {segmentation.GetSegmentation().GetSegment(s).GetName() for s in segmentIds}
        self.assertIn("body", names)
        self.assertIn("liver", names)
        self.assertEqual(sorted(int(v) for v in set(labels.ravel().tolist()) if v),
                         sorted(segmentation.GetSegmentation().GetSegment(s).GetLabelValue() for s in segmentIds))
        self.assertTrue(segmentation.GetSegmentation().ContainsRepresentation("Closed surface"))
        liver = next(s for s in segmentIds if segmentation.GetSegmentation().GetSegment(s).GetName() == "liver")
        self.assertIn("10200004", segmentation.GetSegmentation().GetSegment(liver).GetTerminology())

        sh = mrml.subject_hierarchy()
        study = sh.GetItemParent(sh.GetItemByDataNode(volume))
        self.assertEqual(sh.GetItemName(study), "Synthetic study seed 11, model demo")
        self.assertEqual(sh.GetItemName(sh.GetItemParent(study)), mrml.PATIENT_NAME)
        self.assertEqual(sh.GetItemParent(sh.GetItemByDataNode(segmentation)), study)
        logging.info("MAISISynth demo generation passed")
        self.delayDisplay("Test passed")
