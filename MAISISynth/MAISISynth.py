"""MAISISynth: draw or pick a MAISI label map, generate a synthetic CT with MAISI, paint tumors, export.

The widget is thin: everything that is not widget code lives in MAISISynthLib (jobs, parameters,
MRML bridge), which is tested outside the application; so do the widget's job lifecycle
(`job_handling`), the panel state shown on its widgets (`panel_widgets`), the engine's packages
(`engine_setup`) and the result's views (`result_view`). Generation runs in a separate process (the
engine's worker, started with PythonSlicer), so the UI stays responsive, Cancel stops it at once and a
CUDA out-of-memory error cannot take Slicer down; or, in the Compute section's Server mode, on a GPU
machine running `maisi serve`, through the same job API.
"""

from __future__ import annotations

import logging
import sys
import unittest
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

# The boundary (MAISISynthLib/boundary.py): this file and MAISISynthLib import only what Slicer ships and
# the engine's contract modules. torch, MONAI, nibabel, filelock, tqdm... are imported by the worker
# process alone, so the panel works in a fresh Slicer before the engine's packages are installed.
from MAISIEngine import labels as maisi_labels  # noqa: E402
from MAISIEngine.errors import MaisiError  # noqa: E402
from MAISISynthLib import (  # noqa: E402
    dependencies, devices, dicom_export, editing, engine_setup, execution, generated_map, mask_request, mrml, panel,
    panel_widgets, params, result_view, scene_jobs, selftest, terminology, workdirs)
from MAISISynthLib.job_handling import JobHandlingMixin  # noqa: E402
from MAISISynthLib.jobs import JobRunner, RunningJob  # noqa: E402

INPUT_TEMPLATE, INPUT_SEGMENTATION, INPUT_LABELMAP, INPUT_GENERATED = panel.INPUT_KINDS
MASK_JOB = mask_request.MASK_JOB
EXPORT_NIFTI = "NIfTI"
EXPORT_DICOM = "DICOM"
TORCH_REQUIREMENT = dependencies.TORCH_REQUIREMENT
POLL_INTERVAL_MS = 200
DOCUMENTATION_URL = "https://github.com/maisisynth/MAISISynth/blob/main/docs/slicer.md"


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
segments are named after MAISI labels, a label map volume, or a label map generated from anatomy sizes
(editable before the CT is made). Paint tumors and inpaint them; export
NIfTI or DICOM. Results are synthetic and carry their provenance (seed, model, weight hashes).
Not for clinical use.
""") + _("See the <a href=\"{url}\">documentation</a>: installation, a first-run checklist, every button.").format(
            url=DOCUMENTATION_URL)
        self.parent.acknowledgementText = _("""
MAISI (Medical AI for Synthetic Imaging) is by NVIDIA and the MONAI consortium; the networks are
MONAI's. The official weights are NVIDIA's, under their own licence.
""")
        # Once the application has started (all modules loaded): the editor's terminology picker
        # then offers the MAISI labels with their codes and colours.
        slicer.app.connect("startupCompleted()", registerMaisiTerminology)


def registerMaisiTerminology() -> None:
    """Load Resources/maisi.term.json into Slicer's terminology logic; a failure is logged, never raised."""
    try:
        name = terminology.register_terminology(slicer.modules.terminologies.logic())
    except (RuntimeError, AttributeError) as exc:
        logging.warning("MAISISynth: the MAISI terminology was not registered: %s", exc)
        return
    logging.info("MAISISynth: terminology '%s' registered", name)


#
# Parameters
#


@parameterNodeWrapper
class MAISISynthParameterNode:
    """Everything the user chose in the module, saved with the scene."""

    model: Annotated[str, Choice(list(params.MODEL_CHOICES))] = "demo"
    inputKind: Annotated[str, Choice(list(panel.INPUT_KINDS))] = INPUT_TEMPLATE
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
    keepJobFiles: bool = False
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
    # The "Generated label map" input (MAISISynthLib.mask_request): one check box and slider per organ.
    maskModel: Annotated[str, Choice(list(mask_request.MASK_MODEL_CHOICES))] = mask_request.MASK_MODELS[0]
    maskModelFolder: Path = Path()
    maskSeed: Annotated[int, WithinRange(0, params.MAX_SEED)] = 0
    maskUseGallbladder: bool = False
    maskSizeGallbladder: Annotated[float, WithinRange(0.0, 1.0)] = mask_request.DEFAULT_SIZE
    maskUseLiver: bool = False
    maskSizeLiver: Annotated[float, WithinRange(0.0, 1.0)] = mask_request.DEFAULT_SIZE
    maskUseStomach: bool = False
    maskSizeStomach: Annotated[float, WithinRange(0.0, 1.0)] = mask_request.DEFAULT_SIZE
    maskUsePancreas: bool = False
    maskSizePancreas: Annotated[float, WithinRange(0.0, 1.0)] = mask_request.DEFAULT_SIZE
    maskUseColon: bool = False
    maskSizeColon: Annotated[float, WithinRange(0.0, 1.0)] = mask_request.DEFAULT_SIZE
    maskTumor: Annotated[str, Choice(list(mask_request.TUMOR_CHOICES))] = mask_request.NO_TUMOR
    maskTumorSize: Annotated[float, WithinRange(0.0, 1.0)] = mask_request.DEFAULT_SIZE

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


class MAISISynthWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, JobHandlingMixin):
    """Panels for generation, tumor painting and export; all work is done by the logic, a job's
    start, progress and end by `JobHandlingMixin` (MAISISynthLib.job_handling)."""

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
        self._editorNode = None
        self._jobWorkdir: Path | None = None
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
        self.ui.generateMapButton.connect("clicked(bool)", self.onGenerateMap)
        self.ui.maskDiceButton.connect("clicked(bool)", self.onMaskDice)
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
        self.ui.maskModelFolderPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs

        self.ui.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        self._observeEditorNode()
        self.ui.progressBar.setRange(0, 1000)
        self.logic.removeStaleWorkDirectories()
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
        self._removeJobFiles()
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
        """A job's result would land in the next scene, beside nothing: stop the job quietly."""
        if self._job is not None:
            job, kind = self._job, self._jobKind
            try:
                job.cancel()
            except OSError as exc:  # a server job whose server cannot be reached any more
                logging.warning("MAISISynth: could not stop the job on the server: %s", exc)
            self.ui.logTextEdit.appendPlainText(_("--- {kind} stopped: the scene was closed").format(kind=kind))
            self.ui.statusLabel.text = _("Stopped: the scene was closed")
            self._finishJob()
            self._removeJobFiles()
        if self._editorNode is not None:
            self.removeObserver(self._editorNode, vtk.vtkCommand.ModifiedEvent, self.onEditorNodeModified)
            self._editorNode = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self._observeEditorNode()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def _observeEditorNode(self) -> None:
        """Give the embedded editor the module's editor node (the user's defaults) and follow its selectors."""
        node = self.logic.segmentEditorNode()
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(node)
        if node is not self._editorNode:
            if self._editorNode is not None:
                self.removeObserver(self._editorNode, vtk.vtkCommand.ModifiedEvent, self.onEditorNodeModified)
            self._editorNode = node
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onEditorNodeModified)

    def onEditorNodeModified(self, caller=None, event=None) -> None:
        """Nodes chosen in the embedded editor's own selectors become the module's tumor nodes."""
        p = self._parameterNode
        if p is None or self._editorNode is None:
            return
        for name, node in editing.editor_selection_changes(self._editorNode, p.tumorSegmentation, p.tumorVolume).items():
            setattr(p, name, node)

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
        """Copy the panel state (MAISISynthLib.panel, pure logic) onto the widgets."""
        p = self._parameterNode
        if p is None:
            return
        state = panel.panel_state(panel.PanelInputs(
            model=p.model, input_kind=p.inputKind, has_input_segmentation=bool(p.inputSegmentation),
            has_input_labelmap=bool(p.inputLabelmap), size=p.size, spacing=p.spacing,
            on_server=p.executionSettings.on_server, busy=self._job is not None,
            has_tumor_volume=bool(p.tumorVolume), has_tumor_segmentation=bool(p.tumorSegmentation),
            has_export_volume=bool(p.exportVolume), mask_model=p.maskModel, mask_model_folder=str(p.maskModelFolder)))
        panel_widgets.apply_panel_state(self.ui, state, p)
        if self._jobButton is not None:
            self._jobButton.enabled = True  # it is the Cancel button while its job runs

    def onTumorNodesChanged(self, node=None) -> None:
        """The embedded Segment Editor edits the chosen segmentation over the chosen CT."""
        self.ui.segmentEditorWidget.setSegmentationNode(self.ui.tumorSegmentationSelector.currentNode())
        self.ui.show3DButton.setSegmentationNode(self.ui.tumorSegmentationSelector.currentNode())
        self.ui.segmentEditorWidget.setSourceVolumeNode(self.ui.tumorVolumeSelector.currentNode())

    def onDice(self) -> None:
        self._parameterNode.seed = params.random_seed()

    def onMaskDice(self) -> None:
        self._parameterNode.maskSeed = params.random_seed()

    def _onJobResult(self, kind: str, result: dict, context: dict) -> None:
        if kind == "generate":
            nodes = self.logic.loadGenerationResult(result)
            self._lastVolume = nodes.volume
            self.logic.showResult(nodes, volumeRendering=self._parameterNode.volumeRendering)
            self.ui.show3DButton.setSegmentationNode(nodes.segmentation)
            self._parameterNode.exportVolume = nodes.volume
            self._parameterNode.exportSegmentation = nodes.segmentation
            self._parameterNode.tumorVolume = nodes.volume
            self._parameterNode.tumorSegmentation = nodes.segmentation
        elif kind == "phantom":
            segmentation = mrml.labelmap_file_to_segmentation(result["mask"], name="MAISI phantom template")
            phantomCt = mrml.read_volume_file(result["ct"], name="MAISI phantom CT (procedural)")
            self._useAsInput(segmentation, phantomCt)
        elif kind == "inpaint":
            source = context.get("sourceVolume")
            if source is not None and source.GetScene() is not None:
                nodes = self.logic.loadInpaintResult(result, source)
            else:  # the CT was deleted while the job ran: the result still loads, in its own study
                nodes = self.logic.loadGenerationResult(result)
            self._lastVolume = nodes.volume
            self.logic.showResult(nodes, volumeRendering=self._parameterNode.volumeRendering)
            self.ui.show3DButton.setSegmentationNode(nodes.segmentation)
            self._parameterNode.exportVolume = nodes.volume
            self._parameterNode.exportSegmentation = nodes.segmentation
        elif kind == MASK_JOB:
            nodes = self.logic.loadGeneratedMap(result)
            self._useAsInput(nodes.segmentation, nodes.grid, INPUT_GENERATED)
            missing = result.get("missing") or []
            self.ui.logTextEdit.appendPlainText(_("Label map generated: {request}").format(
                request=context.get("request", "")))
            if missing:
                slicer.util.warningDisplay(_("The generated map lacks: {missing}. Generate again with another seed, "
                                             "or paint them.").format(missing=", ".join(missing)))
        elif kind == "download":
            self.ui.logTextEdit.appendPlainText(_("Weights downloaded and verified."))

    def _useAsInput(self, segmentation, sourceVolume, inputKind: str = INPUT_SEGMENTATION) -> None:
        """Make a segmentation the generation input and open it, over its grid, in the Segment Editor."""
        p = self._parameterNode
        p.inputSegmentation = segmentation
        p.inputKind = inputKind
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

    def onGenerateMap(self) -> None:
        """Draw a label map from the sliders' anatomy sizes; it opens as the (editable) input segmentation."""
        request = mask_request.MaskRequest.from_settings(self._parameterNode)
        self._runOrCancel(MASK_JOB, _("Could not start the label map generation."), self.logic.maskJob,
                          self.ui.generateMapButton, {"request": request.describe()})

    def _runOrCancel(self, kind: str, failure: str, makeJob, button, extra: dict | None = None) -> None:
        """Cancel the running job, or build a job of `kind` from the parameters and start it."""
        if self._job is not None:
            self._cancelJob()
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(failure, waitCursor=True):
            try:
                if not self._readyToRun(p, kind):
                    return
                workdir = self.logic.newWorkDirectory(kind)
                job = makeJob(p, workdir)
            except MaisiError as exc:
                self.showEngineError({"message": exc.message, "hint": exc.hint})
                return
            self._startJobOrExplain(kind, job, workdir, button, extra)

    def _readyToRun(self, p: MAISISynthParameterNode, kind: str = "generate") -> bool:
        """On this computer: the engine's packages and the model's weights; a server has its own.

        A label map generation always runs here and needs no CT weights: a missing mask model is
        reported by the worker in one line (what is missing, the command that fetches it).
        """
        if kind == MASK_JOB:
            return self.logic.ensureEngineDependencies()
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
        with slicer.util.tryWithErrorDisplay(_("Could not start the download."), waitCursor=True):
            if not self.logic.ensureEngineDependencies():
                return
            model = self._parameterNode.model
            workdir = self.logic.newWorkDirectory("download")
            self._startJobOrExplain("download", params.download_job(model), workdir, self.ui.downloadWeightsButton)

    def onEditPhantom(self) -> None:
        if self._job is not None:
            self._cancelJob()
            return
        with slicer.util.tryWithErrorDisplay(_("Could not draw the phantom."), waitCursor=True):
            if not self.logic.ensureEngineDependencies():
                return
            p = self._parameterNode
            workdir = self.logic.newWorkDirectory("phantom")
            job = params.phantom_job(p.templateRegion, p.size, p.spacing, p.seed, workdir / "phantom")
            self._startJobOrExplain("phantom", job, workdir, self.ui.editPhantomButton)

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
            # Overwrite none: the tumor is painted over its organ, which keeps every voxel (MAISISynthLib.editing).
            editing.prepare_tumor_painting(self.logic.segmentEditorNode(), p.tumorSegmentation, p.tumorVolume, segmentId)
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
    def showEngineError(self, event: dict, offerDownload: bool = True) -> None:
        """The engine's message and hint in a dialog, with the action that fixes the usual causes.

        Without `offerDownload` (a label map generation: the Download button fetches the CT model's
        weights, not the mask model's) a missing weight file is shown as it is, with the engine's hint.
        """
        message = str(event.get("message", _("The job failed.")))
        details = str(event.get("stderr_tail") or "") or None
        text = mask_request.error_text(event)
        if not offerDownload:
            slicer.util.errorDisplay(text, detailedText=details)
            return
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
        # The environment Slicer was started with: PythonSlicer sets up Slicer's own paths itself.
        startup = getattr(slicer.util, "startupEnvironment", None)
        self.runner = JobRunner(python=self.pythonExecutable(), base_env=startup() if startup else None)

    def getParameterNode(self) -> MAISISynthParameterNode:
        return MAISISynthParameterNode(super().getParameterNode())

    @staticmethod
    def pythonExecutable() -> str:
        """PythonSlicer: Slicer's interpreter with Slicer's packages, started as a plain process."""
        return engine_setup.python_executable()

    # -- dependencies --------------------------------------------------------------------------------
    def missingEnginePackages(self) -> list[str]:
        """Packages the worker imports that Slicer's Python lacks (PythonSlicer shares its site-packages)."""
        return dependencies.missing_packages(self.resourcePath("requirements.txt"))

    def torchProblem(self) -> str | None:
        """Why the installed PyTorch is too old for the engine, or None (read from metadata, not imported)."""
        return engine_setup.torch_problem()

    def ensureEngineDependencies(self) -> bool:
        """Install what the engine needs after the user agreed, torch first (MAISISynthLib.engine_setup)."""
        return engine_setup.ensure_engine_dependencies(self.resourcePath("requirements.txt"), slicer.app.temporaryPath)

    def resourcePath(self, filename: str) -> str:
        return str(Path(__file__).resolve().parent / "Resources" / filename)

    # -- jobs ------------------------------------------------------------------------------------------
    @staticmethod
    def newWorkDirectory(kind: str) -> Path:
        """A fresh folder for one job's files, under Slicer's temporary folder."""
        return workdirs.new_work_directory(slicer.app.temporaryPath, kind)

    @staticmethod
    def removeWorkDirectory(workdir: Path) -> None:
        """Remove a job's folder (only ever one under the module's temporary root)."""
        workdirs.remove_work_directory(workdir, slicer.app.temporaryPath)

    @staticmethod
    def removeStaleWorkDirectories() -> None:
        """Job folders a crash left behind, older than a week."""
        for folder in workdirs.remove_stale_work_directories(slicer.app.temporaryPath):
            logging.info("MAISISynth: removed the old job folder %s", folder)

    @staticmethod
    def checkSettings(p: MAISISynthParameterNode) -> params.SettingsCheck:
        return panel.check_settings(p.model, p.size, p.spacing, p.inputKind)

    def generateJob(self, p: MAISISynthParameterNode, workdir: Path) -> dict:
        """The worker's job for the current settings; the input label map is written into `workdir`."""
        return scene_jobs.generate_job_for(p, workdir)

    def maskJob(self, p: MAISISynthParameterNode, workdir: Path) -> dict:
        """The worker's generate-mask job: the sliders' anatomy sizes, a map on the panel's grid."""
        return scene_jobs.mask_job_for(p, workdir)

    @staticmethod
    def loadGeneratedMap(result: dict) -> generated_map.GeneratedMapNodes:
        """The generated map as an editable segmentation (MAISI names, colours, codes) and its grid volume."""
        return generated_map.load_generated_map(result)

    def inpaintJob(self, p: MAISISynthParameterNode, workdir: Path) -> dict:
        """CT, labels without the tumor (its host organ under it), and the painted tumor mask, on the CT's grid."""
        return scene_jobs.inpaint_job_for(p, workdir)

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
        """CT and segmentation under a new synthetic study; 3D surfaces wait for the "Show 3D" button."""
        return mrml.load_generation_result(result, surfaces=False)

    @staticmethod
    def loadInpaintResult(result: dict, sourceVolume) -> mrml.GenerationNodes:
        """The inpainted CT as a new volume beside its source, in its study (the source is never modified)."""
        return mrml.load_inpaint_result(result, sourceVolume, surfaces=False)

    @staticmethod
    def showResult(nodes: mrml.GenerationNodes, volumeRendering: bool = False) -> None:
        """Four-up layout: the CT with its segments in the slice views, 3D surfaces, optional rendering."""
        result_view.show_result(nodes, volumeRendering)

    @staticmethod
    def showVolumeRendering(volume, visible: bool) -> None:
        result_view.show_volume_rendering(volume, visible)

    @staticmethod
    def segmentEditorNode():
        """The module's own editor node, made with CreateNodeByClass so the user's defaults apply."""
        return editing.segment_editor_node(slicer.mrmlScene)

    # -- DICOM export (needs the application's DICOM module) ---------------------------------------------
    @staticmethod
    def exportDicom(volume, segmentation, directory: Path) -> list[Path]:
        """CT series through Slicer's DICOM exporter, then DICOM SEG referencing it, under a synthetic patient."""
        return dicom_export.export_dicom(volume, segmentation, directory)


#
# MAISISynthTest
#


class MAISISynthTest(ScriptedLoadableModuleTest):
    """End to end in Slicer with the demo model on the CPU: Generate, Inpaint, NIfTI and DICOM export.

    Skipped with the reason where the engine's packages are missing (the Extensions Index build
    machines); the steps are in MAISISynthLib.selftest.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()
        self.logic = MAISISynthLogic()
        reason = selftest.skip_reason(self.logic)
        if reason:
            logging.warning("MAISISynth self-test skipped: %s", reason)
            self.skipTest(reason)

    def runTest(self):
        try:
            self.setUp()
        except unittest.SkipTest as skipped:
            self.delayDisplay(_("MAISISynth self-test skipped: {reason}").format(reason=skipped))
            return
        self.test_generate_inpaint_and_export()

    def test_generate_inpaint_and_export(self):
        self.delayDisplay("Generating a 64^3 CT with the demo model on the CPU")
        nodes = selftest.run_generate(self, self.logic)
        self.delayDisplay("Painting a liver tumor and inpainting it")
        inpainted, tumor = selftest.run_inpaint(self, self.logic, nodes)
        self.delayDisplay("Exporting NIfTI and DICOM")
        selftest.run_exports(self, self.logic, inpainted, tumor)
        self.delayDisplay("Test passed")
