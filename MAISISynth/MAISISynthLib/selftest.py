"""The module's self-test inside Slicer (MAISISynthTest): Generate, Inpaint, NIfTI and DICOM export.

Runs the real worker with the demo model on the CPU, on a 64^3 grid, and checks the scene after each
step. Where the engine's packages are missing (the Extensions Index build machines, where
`pip_ensure` does not install in testing mode) `skip_reason` says which, and the test is skipped with
that message instead of failing.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import vtk
from scipy import ndimage

import slicer

from . import editing, mrml, params
from .panel import INPUT_TEMPLATE

SIZE, SPACING, SEED, STEPS = 64, 5.0, 11, 4
TUMOR_RADIUS_VOXELS = 2


def skip_reason(logic: Any) -> str | None:
    """Why the self-test cannot run here (missing packages, old PyTorch), or None."""
    missing = logic.missingEnginePackages()
    if missing:
        return ("the MAISI engine's Python packages are not installed ({}); click Generate once in the module "
                "to install them, then run the test again".format(", ".join(missing)))
    problem = logic.torchProblem()
    if problem:
        return problem
    if not params.weights_summary("demo").ready:
        return "the demo model's weights are missing from this installation; reinstall the extension"
    return None


def run_generate(test: Any, logic: Any) -> mrml.GenerationNodes:
    """Generate from the chest-abdomen template with the demo model; returns the result nodes."""
    p = logic.getParameterNode()
    p.model, p.inputKind, p.templateRegion = "demo", INPUT_TEMPLATE, "chest-abdomen"
    p.sizeX = p.sizeY = p.sizeZ = SIZE
    p.spacingX = p.spacingY = p.spacingZ = SPACING
    p.seed, p.steps, p.device = SEED, STEPS, "cpu"
    workdir = logic.newWorkDirectory("selftest-generate")
    running = logic.runJob(logic.generateJob(p, workdir), workdir, timeout_s=900)
    test.assertEqual(running.returncode, 0, json.dumps(running.error))
    sampling = [e["step"] for e in running.events if e["event"] == "progress" and e.get("stage") == "sampling"]
    test.assertEqual(sampling[-1], STEPS)
    nodes = logic.loadGenerationResult(running.result)
    logic.removeWorkDirectory(workdir)
    logic.showResult(nodes)
    volume, segmentation = nodes.volume, nodes.segmentation
    test.assertEqual(volume.GetImageData().GetDimensions(), (SIZE, SIZE, SIZE))
    for actual in volume.GetSpacing():
        test.assertAlmostEqual(actual, SPACING, places=4)
    hu = slicer.util.arrayFromVolume(volume)
    test.assertGreaterEqual(int(hu.min()), -1000)
    test.assertLessEqual(int(hu.max()), 1000)
    test.assertEqual((volume.GetDisplayNode().GetWindow(), volume.GetDisplayNode().GetLevel()), mrml.CT_WINDOW_LEVEL)
    test.assertEqual((volume.GetAttribute("MAISI.seed"), volume.GetAttribute("MAISI.model"),
                      volume.GetAttribute("MAISI.steps")), (str(SEED), "demo", str(STEPS)))
    test.assertTrue({"autoencoder", "controlnet", "diffusion_unet"} <= set(json.loads(volume.GetAttribute("MAISI.weights_sha256"))))
    names = {segmentation.GetSegmentation().GetSegment(s).GetName() for s in mrml.segment_ids(segmentation)}
    test.assertTrue({"body", "liver"} <= names, sorted(names))
    # Surfaces are built when the user asks (Show 3D), not on loading.
    test.assertFalse(segmentation.GetSegmentation().ContainsRepresentation("Closed surface"))
    segmentation.CreateClosedSurfaceRepresentation()
    test.assertTrue(segmentation.GetSegmentation().ContainsRepresentation("Closed surface"))
    sh = mrml.subject_hierarchy()
    study = sh.GetItemParent(sh.GetItemByDataNode(volume))
    test.assertEqual(sh.GetItemName(study), f"Synthetic study seed {SEED}, model demo")
    test.assertEqual(sh.GetItemName(sh.GetItemParent(study)), mrml.PATIENT_NAME)
    return nodes


def deepest_voxel(mask_kji: np.ndarray) -> tuple[int, int, int]:
    depth = ndimage.distance_transform_edt(np.pad(mask_kji, 1))[1:-1, 1:-1, 1:-1]
    return tuple(int(v) for v in np.unravel_index(np.argmax(depth), mask_kji.shape))  # type: ignore[return-value]


def run_inpaint(test: Any, logic: Any, nodes: mrml.GenerationNodes) -> tuple[mrml.GenerationNodes, np.ndarray]:
    """Paint a small liver tumor (overwrite-none, as the module sets it) and inpaint it."""
    volume, segmentation = nodes.volume, nodes.segmentation
    labels = slicer.util.arrayFromVolume(mrml.segmentation_to_labelmap(segmentation, volume))  # (k, j, i)
    liver_before = labels == 1
    centre = deepest_voxel(liver_before)
    k, j, i = np.indices(labels.shape)
    ball = ((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2 <= TUMOR_RADIUS_VOXELS ** 2) & liver_before
    tumor = mrml.add_tumor_segment(segmentation, "liver")
    editing.prepare_tumor_painting(logic.segmentEditorNode(), segmentation, volume, tumor)
    slicer.util.updateSegmentBinaryLabelmapFromArray(ball.astype(np.uint8), segmentation, tumor, volume)
    p = logic.getParameterNode()
    p.tumorVolume, p.tumorSegmentation, p.tumorType = volume, segmentation, "liver"
    workdir = logic.newWorkDirectory("selftest-inpaint")
    running = logic.runJob(logic.inpaintJob(p, workdir), workdir, timeout_s=900)
    test.assertEqual(running.returncode, 0, json.dumps(running.error))
    result = logic.loadInpaintResult(running.result, volume)
    logic.removeWorkDirectory(workdir)
    test.assertEqual(result.study_item, nodes.study_item)  # beside its input
    after = slicer.util.arrayFromVolume(mrml.segmentation_to_labelmap(result.segmentation, result.volume))
    test.assertTrue(np.array_equal(after == 26, ball))
    test.assertTrue(np.array_equal(after == 1, liver_before & ~ball))  # the liver is intact around the tumor
    before_hu, after_hu = slicer.util.arrayFromVolume(volume), slicer.util.arrayFromVolume(result.volume)
    test.assertFalse(np.array_equal(before_hu[ball], after_hu[ball]))
    return result, ball


def empty_subject_hierarchy_items() -> list[str]:
    """Patients, studies and folders with nothing under them."""
    sh = mrml.subject_hierarchy()
    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    empty = []
    for index in range(ids.GetNumberOfIds()):
        item = ids.GetId(index)
        if sh.GetItemDataNode(item) is None and sh.GetNumberOfItemChildren(item) == 0:
            empty.append(f"{sh.GetItemLevel(item) or 'folder'} '{sh.GetItemName(item)}'")
    return empty


def run_exports(test: Any, logic: Any, nodes: mrml.GenerationNodes, tumor_kji: np.ndarray) -> None:
    """NIfTI (read back through Slicer's readers) and DICOM (CT series + SEG), leaving the scene clean."""
    run_nifti_export(test, nodes, tumor_kji)
    run_dicom_export(test, logic, nodes)


def run_nifti_export(test: Any, nodes: mrml.GenerationNodes, tumor_kji: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as folder:
        paths = mrml.export_nifti(nodes.volume, nodes.segmentation, Path(folder) / "nifti")
        test.assertEqual(sorted(paths), ["image", "labels", "provenance"])
        labels = mrml.read_volume_file(paths["labels"], "exported labels", labelmap=True)
        values = slicer.util.arrayFromVolume(labels)
        test.assertTrue(np.array_equal(values == 26, tumor_kji))
        slicer.mrmlScene.RemoveNode(labels)
        image = mrml.read_volume_file(paths["image"], "exported CT")
        test.assertTrue(np.array_equal(slicer.util.arrayFromVolume(image), slicer.util.arrayFromVolume(nodes.volume)))
        slicer.mrmlScene.RemoveNode(image)
        test.assertEqual(json.loads(paths["provenance"].read_text())["seed"], json.loads(
            nodes.volume.GetAttribute("MAISI.provenance"))["seed"])


def run_dicom_export(test: Any, logic: Any, nodes: mrml.GenerationNodes) -> None:
    """CT series through Slicer's DICOM exporter, then the SEG; no empty patient or study is left."""
    with tempfile.TemporaryDirectory() as folder:
        before = empty_subject_hierarchy_items()
        written = logic.exportDicom(nodes.volume, nodes.segmentation, Path(folder) / "dicom")
        ct_files = [w for w in written if "CT" in w.relative_to(folder).parts]
        seg_files = [w for w in written if "SEG" in w.relative_to(folder).parts]
        test.assertEqual(len(ct_files), SIZE)
        test.assertEqual(len(seg_files), 1)
        test.assertEqual(empty_subject_hierarchy_items(), before)
