"""Tumor painting through Slicer's real Segment Editor logic, then inpainting with the demo model.

The Paint effect of Slicer 5.12 paints into the editor logic's modifier label map and applies it with
`vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap`, which honours the editor node's "Modify other
segments" mode. These tests take that path with an editor node made by `CreateNodeByClass` (so the
scene's default node, i.e. the user's defaults, apply), never by setting a segment's voxels directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_fixtures import run_worker_job as run_job, slicer_scene  # noqa: E402,F401  (fixtures)

slicer = pytest.importorskip("slicer")

from MAISIEngine.masktools.tumors import check_tumor_in_host  # noqa: E402
from MAISISynthLib import editing, mrml, params  # noqa: E402

LIVER, TUMOR, BODY = 1, 26, 200
RADIUS = 2


@pytest.fixture(scope="module")
def phantom_result(tmp_path_factory) -> dict:
    """The worker's phantom job (the 'Edit phantom' button): a procedural torso CT and its labels."""
    folder = tmp_path_factory.mktemp("phantom")
    return run_job(params.phantom_job("abdomen", (64, 64, 64), (5.0, 5.0, 5.0), 12, folder / "out"), folder)


def deep_liver_centre(labels: np.ndarray) -> tuple[int, int, int]:
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(np.pad(labels == LIVER, 1))[1:-1, 1:-1, 1:-1]  # the border counts as outside
    centre = tuple(int(v) for v in np.unravel_index(np.argmax(depth), labels.shape))
    assert depth[centre] > RADIUS + 1, "the phantom's liver is too thin for the test tumor"
    return centre


def paint_ball(editor_logic, editor_node, centre_ijk, radius: int) -> np.ndarray:
    """What the Paint effect does for one click: a ball in the modifier label map, applied in 'add' mode."""
    assert editor_logic.ResetModifierLabelmapToDefault()
    modifier = editor_logic.GetModifierLabelmap()
    from vtk.util.numpy_support import vtk_to_numpy

    extent = modifier.GetExtent()
    dims = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    voxels = vtk_to_numpy(modifier.GetPointData().GetScalars()).reshape(dims[::-1])  # (k, j, i) view
    k, j, i = np.meshgrid(*(np.arange(extent[2 * a], extent[2 * a + 1] + 1) for a in (2, 1, 0)), indexing="ij")
    ball = (i - centre_ijk[0]) ** 2 + (j - centre_ijk[1]) ** 2 + (k - centre_ijk[2]) ** 2 <= radius ** 2
    voxels[...] = 0
    voxels[ball] = 1
    modifier.Modified()
    editor_logic.ModifySegmentByLabelmap(editor_node.GetSegmentationNode(), editor_node.GetSelectedSegmentID(),
                                         modifier, editor_logic.ModificationModeAdd, True, False)
    return np.transpose(ball, (2, 1, 0))  # (i, j, k)


def editor_on(scene, node):
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(scene.scene)
    logic.SetMRMLApplicationLogic(scene.app_logic)
    logic.SetSegmentEditorNode(node)
    return logic


def segment_voxels(segmentation, name: str, reference) -> np.ndarray:
    sid = next(s for s in mrml.segment_ids(segmentation) if segmentation.GetSegmentation().GetSegment(s).GetName() == name)
    return np.transpose(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, sid, reference), (2, 1, 0)).astype(bool)


def test_the_editor_node_is_made_with_the_users_defaults(slicer_scene):
    default = slicer.vtkMRMLSegmentEditorNode()
    default.SetSourceVolumeIntensityMask(True)
    default.SetSourceVolumeIntensityMaskRange(-200.0, 300.0)
    slicer_scene.scene.AddDefaultNode(default)
    node = editing.segment_editor_node()
    assert node.GetSourceVolumeIntensityMask() and tuple(node.GetSourceVolumeIntensityMaskRange()) == (-200.0, 300.0)
    assert node.GetSingletonTag() == "MAISISynth" and editing.segment_editor_node() is node
    assert node.GetOverwriteMode() == slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments  # Slicer's default


def test_slicers_default_overwrite_mode_erases_the_liver_and_the_inpaint_labels_still_hold_it(
        slicer_scene, phantom_result, tmp_path):
    """Painted in the main Segment Editor (overwrite all): the labels under the tumor are rebuilt."""
    ct = mrml.read_volume_file(phantom_result["ct"], "phantom CT")
    segmentation = mrml.labelmap_file_to_segmentation(phantom_result["mask"], "phantom")
    labels = np.asarray(nib.load(phantom_result["mask"]).dataobj)
    node = slicer_scene.scene.AddNode(slicer.vtkMRMLSegmentEditorNode())  # Slicer's own default settings
    tumor = mrml.add_tumor_segment(segmentation, "liver")
    node.SetAndObserveSegmentationNode(segmentation)
    node.SetAndObserveSourceVolumeNode(ct)
    node.SetSelectedSegmentID(tumor)
    ball = paint_ball(editor_on(slicer_scene, node), node, deep_liver_centre(labels), RADIUS)
    assert ball.sum() == 33
    liver = segment_voxels(segmentation, "liver", ct)
    assert not (liver & ball).any()  # the default mode cut the tumor out of the liver
    files = mrml.write_inpaint_inputs(ct, segmentation, "liver", tmp_path)
    written = np.asarray(nib.load(str(files["labels"])).dataobj)
    assert set(np.unique(written[ball]).tolist()) == {LIVER}
    np.testing.assert_array_equal(written[~ball], labels[~ball])
    check_tumor_in_host(written, np.asarray(nib.load(str(files["tumor"])).dataobj), "liver")  # the engine's check


def test_painting_with_the_module_keeps_the_liver_and_inpainting_succeeds(slicer_scene, phantom_result, tmp_path):
    ct = mrml.read_volume_file(phantom_result["ct"], "phantom CT")
    before = mrml.array_ijk(ct).copy()
    segmentation = mrml.labelmap_file_to_segmentation(phantom_result["mask"], "phantom")
    sh = mrml.subject_hierarchy()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Doe^Jane")
    study = sh.CreateStudyItem(patient, "CT abdomen")
    mrml.place_in_study(ct, study)
    mrml.place_in_study(segmentation, study)
    labels = np.asarray(nib.load(phantom_result["mask"]).dataobj)
    node = editing.segment_editor_node()
    tumor = mrml.add_tumor_segment(segmentation, "liver")
    editing.prepare_tumor_painting(node, segmentation, ct, tumor)
    ball = paint_ball(editor_on(slicer_scene, node), node, deep_liver_centre(labels), RADIUS)
    np.testing.assert_array_equal(segment_voxels(segmentation, "liver", ct), labels == LIVER)  # untouched
    np.testing.assert_array_equal(segment_voxels(segmentation, "hepatic tumor", ct), ball)
    files = mrml.write_inpaint_inputs(ct, segmentation, "liver", tmp_path / "inpaint")
    np.testing.assert_array_equal(np.asarray(nib.load(str(files["labels"])).dataobj), labels)
    job = params.inpaint_job("demo", tmp_path / "inpaint" / "result", image=files["image"], labels=files["labels"],
                             tumor=files["tumor"], tumor_type="liver", seed=1, steps=2, device="cpu")
    nodes = mrml.load_inpaint_result(run_job(job, tmp_path / "inpaint"), ct, surfaces=False)
    # Beside its input: the same study, named after it; surfaces wait for the Show 3D button.
    assert nodes.study_item == study and nodes.patient_item == patient
    assert sh.GetItemParent(sh.GetItemByDataNode(nodes.volume)) == study
    assert sh.GetItemParent(sh.GetItemByDataNode(nodes.segmentation)) == study
    assert nodes.volume.GetName() == "phantom CT inpainted seed 1"
    assert nodes.volume.GetAttribute("MAISI.inpaintedFrom") == ct.GetID()
    assert not nodes.segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
    assert sh.GetNumberOfItemChildren(patient) == 1  # no new study, no synthetic patient
    out_labels = mrml.array_ijk(mrml.segmentation_to_labelmap(nodes.segmentation, nodes.volume))
    expected = labels.copy()
    expected[ball] = TUMOR
    np.testing.assert_array_equal(out_labels, expected)  # the liver is intact around the tumor
    after = mrml.array_ijk(nodes.volume)
    assert not np.array_equal(after[ball], before[ball])
    np.testing.assert_array_equal(mrml.array_ijk(ct), before)


def test_fill_under_tumor_takes_the_nearest_label_and_keeps_labelled_voxels():
    labels = np.zeros((7, 1, 1), dtype=np.int16)
    labels[:, 0, 0] = [200, 1, 0, 0, 0, 3, 3]
    tumor = np.zeros_like(labels, dtype=bool)
    tumor[1:5, 0, 0] = True
    filled = editing.fill_under_tumor(labels, tumor)
    # Voxel 1 keeps its liver; 2, 3, 4 were erased and take the nearest voxel outside the tumor (0 or 5).
    assert filled[:, 0, 0].tolist() == [200, 1, 200, 3, 3, 3, 3]
    assert labels[:, 0, 0].tolist() == [200, 1, 0, 0, 0, 3, 3]  # the input is not modified


def test_nodes_chosen_in_the_embedded_editor_become_the_modules_tumor_nodes(slicer_scene):
    """The editor's own selectors write to its node; the module follows, so Inpaint uses what was painted."""
    node = editing.segment_editor_node()
    first = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "first")
    other = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "other")
    ct = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    assert editing.editor_selection_changes(node, first, ct) == {}  # nothing chosen in the editor yet
    node.SetAndObserveSegmentationNode(first)
    node.SetAndObserveSourceVolumeNode(ct)
    assert editing.editor_selection_changes(node, first, ct) == {}
    node.SetAndObserveSegmentationNode(other)  # the user picks another segmentation in the editor
    assert editing.editor_selection_changes(node, first, ct) == {"tumorSegmentation": other}
    other_ct = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT 2")
    node.SetAndObserveSourceVolumeNode(other_ct)
    assert editing.editor_selection_changes(node, first, ct) == {"tumorSegmentation": other, "tumorVolume": other_ct}
