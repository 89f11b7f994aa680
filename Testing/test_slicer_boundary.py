"""The front-end/engine boundary (MAISISynthLib/boundary.py): the Slicer module's panel works in a
fresh 3D Slicer, whose Python has none of the engine's packages.

The panel logic, the weight status, the MRML bridge and the job writers run in a subprocess in which
torch, MONAI, nibabel, filelock, tqdm, safetensors, einops, yaml, fastapi and uvicorn cannot be
imported (a meta-path finder refuses them, as a missing package would); a static check covers the
module file, which needs the Slicer application to import.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "MAISISynth"
sys.path.insert(0, str(MODULE_DIR))

from MAISISynthLib import boundary  # noqa: E402

pytest.importorskip("slicer")

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: 3D Slicer does not ship it)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
"""


def run_blocked(body: str, tmp_path: Path, blocked=boundary.ENGINE_ONLY_PACKAGES) -> dict:
    """Run `body` with the engine-only packages blocked; it prints one JSON line, returned here."""
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKER.format(blocked=sorted(blocked)) + textwrap.dedent(body))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
                          env={"PYTHONPATH": f"{REPO}:{MODULE_DIR}:{REPO / 'Testing'}", "PATH": "/usr/bin:/bin",
                               "MAISI_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_blocker_really_blocks(tmp_path):
    out = run_blocked("""
        import json
        failures = []
        for name in ("torch", "nibabel", "filelock", "tqdm", "monai", "yaml"):
            try:
                __import__(name)
            except ModuleNotFoundError:
                failures.append(name)
        print(json.dumps(failures))
    """, tmp_path)
    assert out == ["torch", "nibabel", "filelock", "tqdm", "monai", "yaml"]


def test_panel_state_and_weight_status_run_without_the_engine_packages(tmp_path):
    out = run_blocked("""
        import json, sys
        from MAISISynthLib import boundary, devices, execution, geometry, jobs, panel, params
        from MAISISynthLib.panel import PanelInputs, panel_state, INPUT_SEGMENTATION, INPUT_LABELMAP
        from MAISIEngine.weights import weights_status  # the package's lazy name still works
        states = {
            "demo": panel_state(PanelInputs("demo", size=(64, 64, 64), spacing=(5.0, 5.0, 5.0))),
            "rflow": panel_state(PanelInputs("rflow-ct", size=(100, 128, 128), spacing=(1.5, 1.5, 1.5))),
            "rflow_labelmap": panel_state(PanelInputs("rflow-ct", input_kind=INPUT_LABELMAP, has_input_labelmap=True,
                                                      size=(100, 128, 128), spacing=(1.5, 1.5, 1.5))),
            "rflow_segmentation_bad_spacing": panel_state(PanelInputs(
                "rflow-ct", input_kind=INPUT_SEGMENTATION, has_input_segmentation=True, size=(100, 128, 128),
                spacing=(60.0, 1.5, 1.5))),
            "segmentation_missing": panel_state(PanelInputs("demo", input_kind=INPUT_SEGMENTATION)),
            "busy": panel_state(PanelInputs("demo", busy=True, has_tumor_volume=True, has_tumor_segmentation=True,
                                            has_export_volume=True)),
            "inpaint": panel_state(PanelInputs("demo", has_tumor_volume=True, has_tumor_segmentation=True,
                                               has_export_volume=True)),
            "unknown": panel_state(PanelInputs("no-such-model")),
            "server": panel_state(PanelInputs("rflow-ct", on_server=True, size=(128, 128, 128), spacing=(1.5, 1.5, 1.5))),
        }
        summary = {k: {"generate": s.generate_enabled, "download": s.download_enabled, "weights": s.weights.text,
                       "ready": s.weights.ready, "error": s.size_check_is_error, "inpaint": s.inpaint_enabled,
                       "export": s.export_enabled, "fov": s.field_of_view, "seg": s.show_input_segmentation,
                       "text": s.size_check_text, "warning": s.size_check_is_warning,
                       "fitted": s.check.fitted_grid}
                   for k, s in states.items()}
        job = params.generate_job("demo", "out", template_region="chest", size=(64, 64, 64), spacing=(5, 5, 5))
        loaded = sorted(m.split(".")[0] for m in sys.modules)
        print(json.dumps({"states": summary, "job_type": job["type"],
                          "blocked_loaded": [m for m in loaded if m in boundary.ENGINE_ONLY_PACKAGES],
                          "demo_roles": sorted(weights_status(__import__("MAISIEngine.presets", fromlist=["x"]).load_preset("demo")))}))
    """, tmp_path)
    states = out["states"]
    assert states["demo"] == {"generate": True, "download": False, "weights": "weights present", "ready": True,
                              "error": False, "inpaint": False, "export": False, "fov": "320 x 320 x 320 mm", "seg": False,
                              "text": "demo was trained with x/y spacing in 2.0..4.0 mm; [5.0, 5.0] may give lower quality\n"
                                      "demo was trained with z spacing in 2.0..4.0 mm; [5.0] may give lower quality",
                              "warning": True, "fitted": None}
    # Official weights are not in the (empty) cache: Download is offered, Generate still allowed by the size check.
    assert states["rflow"]["weights"].startswith("weights missing: ") and states["rflow"]["download"] is True
    assert states["rflow"]["error"] is True and states["rflow"]["generate"] is False  # 100 is no multiple of 32...
    assert states["rflow"]["text"].startswith("size [100, 128, 128] cannot be generated by rflow-ct")
    # ...but a label map input is resampled onto a grid the model takes, the engine's nearest one: said, not refused.
    fitted = states["rflow_labelmap"]
    assert fitted["error"] is False and fitted["generate"] is True and fitted["fitted"] == [[256, 256, 128],
                                                                                         [0.66796875, 0.66796875, 1.5]]
    assert fitted["text"].splitlines() == [
        "the model takes x = y in 256, 384, 512 and z 128..768 in steps of 128; "
        "the label map will be fitted to 256 x 256 x 128 at 0.668 x 0.668 x 1.5 mm",
        "field of view 171 x 171 mm is below 256 mm in-plane; MAISI generates poorly there "
        "(384 mm or more is advised outside the head)"]
    assert fitted["warning"] is True
    bad = states["rflow_segmentation_bad_spacing"]  # a spacing out of range cannot be fitted
    assert bad["error"] is True and bad["generate"] is False and bad["fitted"] is None
    assert bad["text"].startswith("spacing [60.0, 1.5, 1.5] is not three values in mm between 0.05 and 50")
    assert states["segmentation_missing"]["generate"] is False and states["segmentation_missing"]["seg"] is True
    assert states["busy"] == dict(states["busy"], generate=False, inpaint=False, export=False, download=False)
    assert states["inpaint"]["inpaint"] is True and states["inpaint"]["export"] is True
    assert states["unknown"]["error"] is True and states["unknown"]["generate"] is False
    assert states["unknown"]["ready"] is False
    assert states["server"]["weights"] == "weights on the server" and states["server"]["download"] is False
    assert out["blocked_loaded"] == [] and out["job_type"] == "generate"
    assert out["demo_roles"] == ["autoencoder", "controlnet", "diffusion_unet", "inpaint_controlnet"] or \
        set(out["demo_roles"]) >= {"autoencoder", "controlnet", "diffusion_unet"}


def test_the_mrml_paths_before_generate_run_without_the_engine_packages(tmp_path):
    """Body outline, tumor segment, label map export and the inpaint files: all with slicer-core only."""
    out = run_blocked("""
        import json, sys, tempfile
        from pathlib import Path
        import numpy as np
        import slicer
        from slicer_fixtures import SlicerScene
        env = SlicerScene(Path(tempfile.mkdtemp()))
        slicer.mrmlScene, slicer.modules = env.scene, env.modules_namespace()
        from MAISISynthLib import mrml, params, boundary
        segmentation, grid = mrml.body_outline_segmentation((24, 20, 16), (4.0, 4.0, 4.0))
        liver = segmentation.GetSegmentation().AddEmptySegment("", "liver")
        box = np.zeros((16, 20, 24), dtype=np.uint8)
        box[4:12, 6:14, 6:16] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(box, segmentation, liver, grid)
        tumor = mrml.add_tumor_segment(segmentation, "liver")
        small = np.zeros_like(box)
        small[7:9, 9:11, 9:12] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(small, segmentation, tumor, grid)
        files = mrml.write_inpaint_inputs(grid, segmentation, "liver", Path(tempfile.mkdtemp()))
        labels = slicer.util.arrayFromVolume(mrml.read_volume_file(files["labels"], labelmap=True))
        from types import SimpleNamespace
        from MAISISynthLib import scene_jobs
        from MAISISynthLib.panel import INPUT_LABELMAP
        labelmap = mrml.volume_from_array(box.transpose(2, 1, 0), np.diag([4.0, 4.0, 4.0, 1.0]), "input labels",
                                          labelmap=True)
        settings = SimpleNamespace(model="demo", inputKind=INPUT_LABELMAP, inputSegmentation=None, inputLabelmap=labelmap,
                                   templateRegion="chest", region="auto", size=(24, 20, 16), spacing=(4.0, 4.0, 4.0),
                                   seed=3, steps=2, device="cpu")
        job = scene_jobs.generate_job_for(settings, Path(tempfile.mkdtemp()))
        print(json.dumps({"files": sorted(files), "values": sorted(int(v) for v in np.unique(labels)),
                          "job_grid": [job["size"], job["spacing"], Path(job["mask"]).exists()],
                          "under_tumor": sorted(int(v) for v in np.unique(labels[small.astype(bool)])),
                          "blocked_loaded": sorted({m.split(".")[0] for m in sys.modules} & boundary.ENGINE_ONLY_PACKAGES)}))
    """, tmp_path)
    # The label map input's grid (24 x 20 x 16, no multiple of 16) goes to the worker fitted, as the panel said.
    assert out == {"files": ["image", "labels", "tumor"], "values": [0, 1, 200], "under_tumor": [1], "blocked_loaded": [],
                   "job_grid": [[64, 64, 64], [2.0, 2.0, 2.0], True]}


# ---------------------------------------------------------------------------------------------------
# Static: every import of the module file and the library stays inside the boundary


def _imports(tree: ast.AST, top_level_only: bool) -> list[tuple[str, int]]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))  # type: ignore[attr-defined]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


SLICER_APPLICATION_MODULES = {"PyTorchUtils", "DICOMLib", "DICOMScalarVolumePlugin", "DICOMSegmentationPlugin"}
"""Modules of the Slicer application and its PyTorch extension the widget imports inside functions."""


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    if top == "MAISIEngine":
        return name in boundary.ENGINE_CONTRACT_MODULES
    return (top in sys.stdlib_module_names or top in boundary.SLICER_SHIPPED_PACKAGES or top == "MAISISynthLib"
            or top in SLICER_APPLICATION_MODULES)


def test_the_module_file_and_library_import_only_what_slicer_ships():
    offenders = []
    module_file = MODULE_DIR / "MAISISynth.py"
    for name, line in _imports(ast.parse(module_file.read_text()), top_level_only=False):
        if not _allowed(name):
            offenders.append(f"MAISISynth.py:{line} imports {name}")
    for path in sorted((MODULE_DIR / "MAISISynthLib").glob("*.py")):
        for name, line in _imports(ast.parse(path.read_text()), top_level_only=False):
            if not _allowed(name):
                offenders.append(f"MAISISynthLib/{path.name}:{line} imports {name}")
    assert offenders == []


def test_the_static_check_catches_an_engine_import():
    tree = ast.parse("import torch\nfrom MAISIEngine.weights.download import download_model\nimport numpy\n")
    assert [name for name, _ in _imports(tree, True) if not _allowed(name)] == ["torch", "MAISIEngine.weights.download"]


def test_the_generated_label_map_input_runs_without_the_engine_packages(tmp_path):
    """Its panel state, the sliders' job and the map's error text: the anatomy module is light."""
    out = run_blocked("""
        import json, sys, tempfile
        from pathlib import Path
        from types import SimpleNamespace
        from MAISISynthLib import boundary, mask_request, panel, scene_jobs
        def state(size, spacing):
            return panel.panel_state(panel.PanelInputs("demo", input_kind=panel.INPUT_GENERATED, size=size,
                                                       spacing=spacing, mask_model="mask-ct"))
        ok, small = state((256, 256, 128), (1.5, 1.5, 2.0)), state((64, 64, 64), (5.0, 5.0, 5.0))
        values = mask_request.settings_values(mask_request.MaskRequest({"pancreas": 0.25}, "bone lesion", 0.7))
        settings = SimpleNamespace(maskModel="mask-ct", maskModelFolder=Path(), maskSeed=5, size=(256, 256, 128),
                                   spacing=(1.5, 1.5, 2.0), region="chest", device="cpu", **values)
        job = scene_jobs.mask_job_for(settings, Path(tempfile.mkdtemp()))
        try:
            mask_request.MaskRequest({"liver": 1.5}).anatomy_sizes()
            refused = ""
        except Exception as exc:
            refused = str(exc)
        print(json.dumps({"map": [ok.show_generated_map, ok.generate_map_enabled, ok.generate_enabled],
                          "small": [small.generate_map_enabled, small.generate_map_tooltip],
                          "sizes": job["anatomy_sizes"], "model": job["model"], "region": job["region"],
                          "refused": refused,
                          "blocked_loaded": sorted({m.split(".")[0] for m in sys.modules} & boundary.ENGINE_ONLY_PACKAGES),
                          "engine_loaded": sorted(m for m in sys.modules if m.startswith("MAISIEngine.maskgen"))}))
    """, tmp_path)
    assert out["map"] == [True, True, False]  # the map first, then the CT
    assert out["small"][0] is False and "is not one the mask model accepts" in out["small"][1]
    assert out["sizes"] == {"pancreas": 0.25, "lung tumor": -1.0, "pancreatic tumor": -1.0, "hepatic tumor": -1.0,
                            "colon cancer primaries": -1.0, "bone lesion": 0.7}
    assert out["model"] == "mask-ct" and out["region"] == "chest"
    assert "outside [0, 1]" in out["refused"]
    assert out["blocked_loaded"] == [] and out["engine_loaded"] == ["MAISIEngine.maskgen", "MAISIEngine.maskgen.anatomy",
                                                                   "MAISIEngine.maskgen.grid"]
