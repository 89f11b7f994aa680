"""Static checks of the Slicer extension: code compiles, the .ui is valid and matches the code, every
parameter is bound to a widget of the right type, CMake lists and installs what the module needs."""

from __future__ import annotations

import ast
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tomllib
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "MAISISynth"
MODULE_FILE = MODULE_DIR / "MAISISynth.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MAISISynth.ui"
LIB_FILES = sorted((MODULE_DIR / "MAISISynthLib").glob("*.py"))
WIDGET_MIXINS = {"JobHandlingMixin": MODULE_DIR / "MAISISynthLib" / "job_handling.py"}
"""Library classes `MAISISynthWidget` inherits its methods from (the module file stays thin)."""
WIDGET_CODE_FILES = [MODULE_FILE, *WIDGET_MIXINS.values(), MODULE_DIR / "MAISISynthLib" / "panel_widgets.py"]
"""Files that use the module's widgets (`self.ui.X`, or `ui.X` on the widget's `ui`)."""
STAND_IN_CLASSES = {
    "qMRMLWidget": "QWidget", "ctkCollapsibleButton": "QWidget", "ctkCollapsibleGroupBox": "QGroupBox",
    "qMRMLNodeComboBox": "QWidget", "qMRMLSegmentEditorWidget": "QWidget", "ctkDirectoryButton": "QWidget",
    "ctkPathLineEdit": "QWidget", "qMRMLSegmentationShow3DButton": "QToolButton", "ctkSliderWidget": "QWidget",
}
"""Slicer/CTK widget classes the .ui uses; Qt's loader gets stand-ins for them (CTK is not installed here)."""


def ui_tree() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ui_tree().iter("widget")}


def widget_property(widget: ET.Element, name: str) -> ET.Element | None:
    return next((p for p in widget.findall("property") if p.get("name") == name), None)


def bound_widgets() -> dict[str, ET.Element]:
    """Parameter name -> the widget whose SlicerParameterName names it."""
    out = {}
    for widget in ui_widgets().values():
        prop = widget_property(widget, "SlicerParameterName")
        if prop is not None:
            name = prop.findtext("string")
            assert name not in out, f"parameter {name} is bound twice"
            out[name] = widget
    return out


def parameter_annotations() -> dict[str, ast.expr]:
    """Field name -> annotation of the @parameterNodeWrapper class in the module file."""
    tree = ast.parse(MODULE_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {s.target.id: s.annotation for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in MAISISynth.py")


def base_type(annotation: ast.expr) -> str:
    """'str', 'int', 'float', 'bool', 'Path' or a node class name, unwrapping Annotated[...]."""
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name) and annotation.value.id == "Annotated":
        return base_type(annotation.slice.elts[0])  # type: ignore[attr-defined]
    assert isinstance(annotation, ast.Name), ast.dump(annotation)
    return annotation.id


def test_module_and_library_compile(tmp_path):
    for path in [MODULE_FILE, *LIB_FILES]:
        py_compile.compile(str(path), cfile=str(tmp_path / (path.name + "c")), doraise=True)
    assert {p.name for p in LIB_FILES} >= {"__init__.py", "jobs.py", "mrml.py", "params.py", "geometry.py"}


def test_ui_is_valid_qt_designer_xml():
    root = ui_tree()
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.findtext("class") == "MAISISynth"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "MAISISynth"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    declared = {c.findtext("class") for c in root.find("customwidgets")}
    qt_classes = {"QLabel", "QComboBox", "QPushButton", "QSpinBox", "QDoubleSpinBox", "QCheckBox", "QProgressBar",
                  "QPlainTextEdit", "QLineEdit"}
    assert declared >= {"qMRMLSegmentationShow3DButton"}
    for widget in root.iter("widget"):
        assert widget.get("class") in declared | qt_classes, widget.get("class")
    # Form rows are unique per layout and every layout item holds exactly one thing.
    for layout in root.iter("layout"):
        rows = [(i.get("row"), i.get("column")) for i in layout.findall("item") if i.get("row") is not None]
        assert len(rows) == len(set(rows)), layout.get("name")
        for item in layout.findall("item"):
            assert len(list(item)) == 1, layout.get("name")


def test_every_mrml_widget_receives_the_scene():
    root = ui_tree()
    receivers = {
        c.findtext("receiver")
        for c in root.find("connections")
        if c.findtext("sender") == "MAISISynth" and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    # The Show 3D button takes its segmentation node from the code, not the scene.
    mrml_widgets = {n for n, w in ui_widgets().items() if w.get("class").startswith("qMRML") and n != "MAISISynth"
                    and w.get("class") != "qMRMLSegmentationShow3DButton"}
    assert mrml_widgets and receivers == mrml_widgets


def test_every_widget_the_code_uses_exists_in_the_ui():
    used = set()
    for path in WIDGET_CODE_FILES:
        found = set(re.findall(r"\bui\.(\w+)", path.read_text()))
        missing = found - set(ui_widgets())
        assert not missing, f"{path.name} uses widgets the .ui lacks: {sorted(missing)}"
        used |= found
    assert {"generateButton", "progressBar", "logTextEdit", "segmentEditorWidget", "inpaintButton",
            "exportButton", "downloadWeightsButton", "diceButton", "addTumorButton", "statusLabel",
            "sizeCheckLabel", "weightsStatusLabel", "serverTokenFilePathLineEdit"} <= used


def test_the_widget_inherits_the_job_handling_and_copies_the_panel_state_onto_its_widgets():
    """The methods `method()` finds in the library's mixins are the widget's own; `apply_panel_state`
    sets every widget from a real panel state (plain objects stand in for Qt's widgets)."""
    widget = next(n for n in module_tree().body if isinstance(n, ast.ClassDef) and n.name == "MAISISynthWidget")
    assert set(WIDGET_MIXINS) <= {ast.unparse(base) for base in widget.bases}
    assert "panel_widgets.apply_panel_state(self.ui, state, p)" in ast.unparse(method("updateGui"))
    sys.path.insert(0, str(MODULE_DIR))
    from MAISISynthLib import mask_request, panel, panel_widgets

    names = {n for n in re.findall(r"\bui\.(\w+)", (MODULE_DIR / "MAISISynthLib" / "panel_widgets.py").read_text())}
    names |= {f"{mask_request.parameter_names(organ)[1]}Slider" for organ in mask_request.ORGANS}
    ui = types.SimpleNamespace(**{name: types.SimpleNamespace() for name in names})
    settings = types.SimpleNamespace(maskTumor=mask_request.NO_TUMOR, **{
        mask_request.parameter_names(organ)[0]: organ == "liver" for organ in mask_request.ORGANS})
    state = panel.panel_state(panel.PanelInputs(model="demo", input_kind=panel.INPUT_GENERATED, size=(100, 100, 100),
                                                on_server=True))
    panel_widgets.apply_panel_state(ui, state, settings)
    assert ui.generatedMapGroupBox.visible and ui.inputSegmentationSelector.visible and not ui.inputLabelmapLabel.visible
    assert ui.testConnectionButton.enabled and ui.serverUrlLineEdit.enabled
    assert ui.generateButton.enabled is state.generate_enabled is False  # no segmentation chosen yet
    assert ui.sizeCheckLabel.text == state.size_check_text and state.size_check_text
    assert ui.sizeCheckLabel.styleSheet == ("color: #c62828" if state.size_check_is_error else
                                            "color: #b26a00" if state.size_check_is_warning else "")
    assert ui.maskSizeLiverSlider.enabled and not ui.maskSizeStomachSlider.enabled
    assert ui.maskTumorSizeSlider.enabled is False
    assert ui.weightsStatusLabel.text == state.weights.text and ui.fieldOfViewLabel.text == state.field_of_view


def test_every_parameter_is_bound_to_a_widget_of_its_type():
    annotations = parameter_annotations()
    bound = bound_widgets()
    assert set(annotations) == set(bound), (
        f"unbound parameters: {sorted(set(annotations) - set(bound))}; "
        f"bound names without a parameter: {sorted(set(bound) - set(annotations))}")
    # The classes Slicer's parameter node GUI connectors bind each type to.
    expected_classes = {"str": {"QComboBox", "QLineEdit"}, "int": {"QSpinBox"}, "float": {"QDoubleSpinBox", "ctkSliderWidget"},
                        "bool": {"QCheckBox"}, "Path": {"ctkDirectoryButton", "ctkPathLineEdit"}}
    for name, annotation in annotations.items():
        kind = base_type(annotation)
        widget = bound[name]
        if kind.startswith("vtkMRML"):
            assert widget.get("class") == "qMRMLNodeComboBox", name
            node_types = widget_property(widget, "nodeTypes").find("stringlist")
            assert [s.text for s in node_types] == [kind], name
        else:
            assert widget.get("class") in expected_classes[kind], (name, kind, widget.get("class"))
            if widget.get("class") == "QComboBox":  # the combo box connector needs the choices
                assert "Choice(" in ast.unparse(annotation), name
            if widget.get("class") == "QLineEdit":  # free text: a Choice would be enforced nowhere
                assert "Choice(" not in ast.unparse(annotation), name


def test_ui_loads_in_qt_and_wires_the_scene(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    from PyQt5 import QtCore, QtWidgets, uic

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])

    class Indexable:
        def __init__(self, bound):
            self.bound = bound

        def __getitem__(self, signature):
            return self.bound

    def stand_in(name: str, base: type) -> type:
        def __getattr__(self, attr):
            if attr.startswith("set") and len(attr) > 3:
                key = attr[3].lower() + attr[4:]
                return lambda value: self.setProperty(key, value)
            raise AttributeError(attr)

        namespace = {
            "__getattr__": __getattr__,
            "sceneChanged": QtCore.pyqtSignal(object),
            "mrmlSceneChanged": property(lambda self: Indexable(self.sceneChanged)),
            "setMRMLScene": QtCore.pyqtSlot(object)(lambda self, scene: self.setProperty("scene", scene)),
        }
        return type(name, (base,), namespace)

    for name, base in STAND_IN_CLASSES.items():
        module = types.ModuleType(name)
        setattr(module, name, stand_in(name, getattr(QtWidgets, base)))
        monkeypatch.setitem(sys.modules, name, module)
    widget = uic.loadUi(str(UI_FILE))
    assert type(widget).__name__ == "qMRMLWidget"
    assert widget.generateButton.text() == "Generate"
    assert widget.stepsSpinBox.specialValueText() == "model default"
    assert widget.logTextEdit.maximumBlockCount() == 1000 and widget.logTextEdit.isReadOnly()
    assert widget.modelComboBox.property("SlicerParameterName") == "model"
    assert widget.inputSegmentationSelector.property("nodeTypes") == ["vtkMRMLSegmentationNode"]
    assert widget.computeOnComboBox.property("SlicerParameterName") == "computeOn"
    assert widget.serverUrlLineEdit.placeholderText() == "http://127.0.0.1:8765"
    assert widget.serverTokenFilePathLineEdit.property("SlicerParameterName") == "serverTokenFile"
    assert widget.generateMapButton.text() == "Generate label map"
    assert widget.maskSizeLiverSlider.property("SlicerParameterName") == "maskSizeLiver"
    assert widget.maskUseLiverCheckBox.text() == "Liver"
    widget.sceneChanged.emit("the scene")
    for name in ("inputSegmentationSelector", "tumorVolumeSelector", "exportSegmentationSelector", "segmentEditorWidget"):
        assert getattr(widget, name).property("scene") == "the scene", name
    widget.deleteLater()
    app.processEvents()


# ---------------------------------------------------------------------------------------------------
# Extension build files


def cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, variable
    return [item.replace("${MODULE_NAME}", "MAISISynth") for item in match.group(1).split()]


def test_cmake_lists_every_module_file_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    assert sorted(scripts) == sorted(["MAISISynth.py"] + [f"MAISISynthLib/{p.name}" for p in LIB_FILES])
    for resource in cmake_list(text, "MODULE_PYTHON_RESOURCES"):
        assert (MODULE_DIR / resource).is_file(), resource
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    top = (REPO / "CMakeLists.txt").read_text()
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in top
    assert "add_subdirectory(MAISISynth)" in top
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert f"set({key} " in top, key
    assert (REPO / "Resources" / "Icons" / "MAISISynth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (MODULE_DIR / "Resources" / "Icons" / "MAISISynth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_requirements_cover_the_engine_dependencies_except_torch():
    from packaging.requirements import Requirement

    lines = [line.strip() for line in (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()]
    listed = {Requirement(line).name.lower() for line in lines if line and not line.startswith("#")}
    engine = {Requirement(d).name.lower() for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    # torch comes from the PyTorch extension; numpy ships with Slicer.
    assert "torch" not in listed
    assert engine - {"torch", "numpy"} <= listed, sorted(engine - {"torch", "numpy"} - listed)


SLICER_STAND_IN = """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(M "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(f IN LISTS M_SCRIPTS M_RESOURCES)
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
      message(FATAL_ERROR "module file missing: ${f}")
    endif()
  endforeach()
endfunction()
function(slicer_add_python_unittest)
endfunction()
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_configures_and_installs_the_engine_beside_the_module(tmp_path):
    """Slicer's own macros are replaced by minimal ones; the engine copy and install are CMake's own."""
    stand_in = tmp_path / "slicer"
    stand_in.mkdir()
    (stand_in / "SlicerConfig.cmake").write_text(SLICER_STAND_IN)
    (stand_in / "empty.cmake").write_text("")
    build, prefix = tmp_path / "build", tmp_path / "install"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for command in (
        ["cmake", "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={stand_in}", "-DBUILD_TESTING=ON"],
        ["cmake", "--build", str(build)],
        ["cmake", "--install", str(build), "--prefix", str(prefix)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    engine_files = sorted(p.relative_to(REPO / "MAISIEngine").as_posix() for p in (REPO / "MAISIEngine").rglob("*")
                          if p.suffix in (".py", ".json", ".md", ".safetensors") and "__pycache__" not in p.parts)
    for root in (build / "lib/Slicer/qt-scripted-modules/MAISIEngine", prefix / "lib/Slicer/qt-scripted-modules/MAISIEngine"):
        copied = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert copied == engine_files
    assert (prefix / "lib/Slicer/qt-scripted-modules/MAISIEngine/worker.py").read_bytes() == (
        REPO / "MAISIEngine/worker.py").read_bytes()


# ---------------------------------------------------------------------------------------------------
# Widget behaviour that needs the Slicer application: checked on the code itself


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text())


def method(name: str, class_name: str = "MAISISynthWidget") -> ast.FunctionDef:
    """A method of a class of the module file; the widget's may come from its library mixins."""
    places = [(module_tree(), class_name)]
    if class_name == "MAISISynthWidget":
        places += [(ast.parse(path.read_text()), mixin) for mixin, path in WIDGET_MIXINS.items()]
    for tree, owner in places:
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == owner:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == name:
                        return item
    raise AssertionError(f"{class_name}.{name} not found")


def calls_inside_error_display(function: ast.FunctionDef) -> set[str]:
    """Dotted names of the calls made inside `with slicer.util.tryWithErrorDisplay(...)` blocks."""
    inside = set()
    for node in ast.walk(function):
        if isinstance(node, ast.With) and any(
                "tryWithErrorDisplay" in ast.unparse(item.context_expr) for item in node.items):
            for call in ast.walk(node):
                if isinstance(call, ast.Call):
                    inside.add(ast.unparse(call.func))
    return inside


def test_readiness_checks_and_job_buttons_show_their_errors_in_dialogs():
    assert "self._readyToRun" in calls_inside_error_display(method("_runOrCancel"))
    for name in ("onDownloadWeights", "onEditPhantom"):
        inside = calls_inside_error_display(method(name))
        assert {"self.logic.ensureEngineDependencies", "self.logic.newWorkDirectory", "self._startJobOrExplain"} <= inside, name


def test_the_editor_node_comes_from_create_node_by_class():
    source = MODULE_FILE.read_text()
    assert "vtkMRMLSegmentEditorNode()" not in source
    assert "editing.segment_editor_node(slicer.mrmlScene)" in ast.unparse(method("segmentEditorNode", "MAISISynthLogic"))
    assert "CreateNodeByClass" in (MODULE_DIR / "MAISISynthLib" / "editing.py").read_text()


def test_add_tumor_paints_without_overwriting_the_organ_and_the_editor_selectors_are_followed():
    assert "editing.prepare_tumor_painting" in ast.unparse(method("onAddTumor"))
    follow = ast.unparse(method("onEditorNodeModified"))
    assert "editing.editor_selection_changes" in follow and "setattr(p, name, node)" in follow
    assert "self.onEditorNodeModified" in ast.unparse(method("_observeEditorNode"))


def test_closing_the_scene_stops_a_running_job_and_the_result_needs_its_source():
    close = ast.unparse(method("onSceneStartClose"))
    assert "job.cancel()" in close and "self._finishJob()" in close and "self._removeJobFiles()" in close
    result = ast.unparse(method("_onJobResult"))
    assert "source.GetScene() is not None" in result


def test_the_terminology_is_registered_at_startup():
    init = ast.unparse(method("__init__", "MAISISynth"))
    assert "slicer.app.connect('startupCompleted()', registerMaisiTerminology)" in init
    register = next(n for n in module_tree().body if isinstance(n, ast.FunctionDef) and n.name == "registerMaisiTerminology")
    assert "terminology.register_terminology(slicer.modules.terminologies.logic())" in ast.unparse(register)


def test_results_are_loaded_without_surfaces_and_the_show_3d_button_gets_them():
    for name in ("loadGenerationResult", "loadInpaintResult"):
        assert "surfaces=False" in ast.unparse(method(name, "MAISISynthLogic")), name
    assert ui_widgets()["show3DButton"].get("class") == "qMRMLSegmentationShow3DButton"
    assert "self.ui.show3DButton.setSegmentationNode(nodes.segmentation)" in ast.unparse(method("_onJobResult"))


def test_job_files_are_removed_unless_kept():
    remove = ast.unparse(method("_removeJobFiles"))
    assert "keepJobFiles" in remove and "self.logic.removeWorkDirectory(workdir)" in remove
    for name in ("onPollJob", "_cancelJob"):
        assert "self._removeJobFiles()" in ast.unparse(method(name)), name
    assert widget_property(ui_widgets()["keepJobFilesCheckBox"], "SlicerParameterName").findtext("string") == "keepJobFiles"


def test_the_help_links_the_documentation_and_the_screenshot_exists():
    source = MODULE_FILE.read_text()
    url = re.search(r'DOCUMENTATION_URL = "([^"]+)"', source).group(1)
    assert url == "https://github.com/maisisynth/MAISISynth/blob/main/docs/slicer.md" and (REPO / "docs/slicer.md").is_file()
    assert "DOCUMENTATION_URL" in ast.unparse(method("__init__", "MAISISynth"))
    top = (REPO / "CMakeLists.txt").read_text()
    for variable in ("EXTENSION_SCREENSHOTURLS", "EXTENSION_ICONURL"):
        for link in re.search(rf'set\({variable} "([^"]+)"\)', top).group(1).split():
            prefix = "https://raw.githubusercontent.com/maisisynth/MAISISynth/main/"
            assert link.startswith(prefix), link
            assert (REPO / link[len(prefix):]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link


def test_the_worker_starts_from_slicers_startup_environment():
    init = ast.unparse(method("__init__", "MAISISynthLogic"))
    assert "startupEnvironment" in init and "base_env=" in init


# ---------------------------------------------------------------------------------------------------
# The "Generated label map" input


def test_the_generated_map_parameters_are_the_engines_structures_with_their_ranges():
    sys.path.insert(0, str(MODULE_DIR))
    from MAISIEngine.maskgen import anatomy
    from MAISISynthLib import mask_request

    annotations = parameter_annotations()
    widgets = ui_widgets()
    assert mask_request.ORGANS == anatomy.CONTROLLABLE[:5] and mask_request.TUMOR_CHOICES[1:] == anatomy.TUMORS
    for organ in anatomy.ORGANS:
        use, size = mask_request.parameter_names(organ)
        assert base_type(annotations[use]) == "bool", use
        assert ast.unparse(annotations[size]) == "Annotated[float, WithinRange(0.0, 1.0)]", size
        slider = widgets[f"{size}Slider"]
        assert slider.get("class") == "ctkSliderWidget"
        limits = {name: float(widget_property(slider, name).findtext("double")) for name in ("minimum", "maximum")}
        assert limits == {"minimum": 0.0, "maximum": 1.0}, size
    assert "Choice(list(mask_request.TUMOR_CHOICES))" in ast.unparse(annotations["maskTumor"])
    assert "Choice(list(mask_request.MASK_MODEL_CHOICES))" in ast.unparse(annotations["maskModel"])
    assert "Choice(list(panel.INPUT_KINDS))" in ast.unparse(annotations["inputKind"])
    from MAISIEngine.maskgen.pipeline import REGIONS

    assert set(mask_request.MASK_REGIONS.values()) <= set(REGIONS)


def test_generate_label_map_runs_the_worker_job_and_opens_the_map_as_the_input_segmentation():
    assert "self._runOrCancel(MASK_JOB" in ast.unparse(method("onGenerateMap"))
    assert "self.logic.maskJob" in ast.unparse(method("onGenerateMap"))
    assert "scene_jobs.mask_job_for(p, workdir)" in ast.unparse(method("maskJob", "MAISISynthLogic"))
    result = ast.unparse(method("_onJobResult"))
    assert "self.logic.loadGeneratedMap(result)" in result
    assert "self._useAsInput(nodes.segmentation, nodes.grid, INPUT_GENERATED)" in result
    # A map needs the engine's packages, not the CT model's weights; its errors are shown as the engine says them.
    ready = ast.unparse(method("_readyToRun"))
    assert "if kind == MASK_JOB:\n        return self.logic.ensureEngineDependencies()" in ready
    assert "self.showEngineError(job.error, offerDownload=kind != MASK_JOB)" in ast.unparse(method("onPollJob"))
    error = ast.unparse(method("showEngineError"))
    assert "if not offerDownload:\n        slicer.util.errorDisplay(text, detailedText=details)\n        return" in error


def test_the_parameter_defaults_are_the_request_with_nothing_constrained():
    """Saved with the scene and read back, the parameters give the request again (defaults included)."""
    from MAISISynthLib import mask_request

    defaults = {}
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == "MAISISynthParameterNode":
            defaults = {s.target.id: ast.unparse(s.value) for s in node.body
                        if isinstance(s, ast.AnnAssign) and s.value is not None}
    expected = mask_request.settings_values(mask_request.MaskRequest({organ: None for organ in mask_request.ORGANS}))
    names = {"mask_request.DEFAULT_SIZE": mask_request.DEFAULT_SIZE, "mask_request.NO_TUMOR": mask_request.NO_TUMOR,
             "False": False, "True": True}
    assert {name: names[defaults[name]] for name in expected} == expected
    request = mask_request.MaskRequest.from_settings(types.SimpleNamespace(**expected))
    assert request.anatomy_sizes() == {tumor: -1.0 for tumor in mask_request.TUMOR_CHOICES[1:]}


def test_the_shipped_demo_mask_model_is_the_default_choice_in_both_front_ends():
    """The default CT model is the demo one, so the default mask model is the one shipped beside it."""
    from MAISISynthLib import mask_request

    assert mask_request.MASK_MODELS[0] == "mask-demo" and "mask-ct" in mask_request.MASK_MODELS
    defaults = {}
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and node.name == "MAISISynthParameterNode":
            defaults = {s.target.id: ast.unparse(s.value) for s in node.body
                        if isinstance(s, ast.AnnAssign) and s.value is not None}
    assert defaults["maskModel"] == "mask_request.MASK_MODELS[0]" and defaults["model"] == "'demo'"
