"""The MRML bridge on Slicer's real MRML (slicer-core): label ids, names, colours, terminology,
geometry, result nodes, subject hierarchy, provenance, tumor segments and export."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_fixtures import WORKER_ENV, random_model_dir, slicer_scene  # noqa: E402,F401  (fixtures)

slicer = pytest.importorskip("slicer")

from MAISIEngine import labels as maisi_labels  # noqa: E402
from MAISIEngine.errors import MaisiError  # noqa: E402
from MAISISynthLib import geometry, mrml, params  # noqa: E402
from MAISISynthLib.jobs import JobRunner  # noqa: E402


def oblique_affine() -> np.ndarray:
    """Rotated about two axes, anisotropic (0.7, 1.3, 2.5 mm), far from the origin."""
    a, b = 0.4, 0.3
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.7, 1.3, 2.5])
    affine[:3, 3] = [-112.5, 40.25, -377.0]
    return affine


SHAPE = (20, 16, 12)
BOXES = {
    "liver": (slice(3, 8), slice(4, 9), slice(2, 6)),
    "hepatic tumor": (slice(9, 12), slice(4, 7), slice(2, 5)),
}


def reference_volume(name: str = "CT") -> object:
    data = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 700 - 300).astype(np.int16)
    return mrml.volume_from_array(data, oblique_affine(), name)


def paint(segmentation_node, segment_id: str, reference, box_ijk) -> None:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[box_ijk] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(geometry.slicer_array(mask), segmentation_node, segment_id, reference)


def user_segmentation(names_and_boxes: dict[str, tuple], reference) -> object:
    """A segmentation as a user draws it: segments named by hand, painted on the reference grid."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn")
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    for name, box in names_and_boxes.items():
        sid = node.GetSegmentation().AddEmptySegment("", name)
        paint(node, sid, reference, box)
    return node


def body_box() -> tuple:
    return (slice(1, 19), slice(1, 15), slice(0, 12))


def expected_labels(liver_id: int = 1, tumor_id: int = 26) -> np.ndarray:
    out = np.zeros(SHAPE, dtype=np.int16)
    out[body_box()] = 200
    out[BOXES["liver"]] = liver_id
    out[BOXES["hepatic tumor"]] = tumor_id
    return out


# ---------------------------------------------------------------------------------------------------
# Segmentation -> MAISI label map


def test_segments_named_after_maisi_labels_export_with_exactly_their_ids(slicer_scene):
    ct = reference_volume()
    # Body first: later segments overwrite it where they overlap, as MAISI maps are built.
    seg = user_segmentation({"body": body_box(), "liver": BOXES["liver"], "hepatic tumor": BOXES["hepatic tumor"]}, ct)
    labelmap = mrml.segmentation_to_labelmap(seg, reference_volume=ct)
    values = mrml.array_ijk(labelmap)
    assert sorted(np.unique(values).tolist()) == [0, 1, 26, 200]
    np.testing.assert_array_equal(values, expected_labels())
    np.testing.assert_allclose(mrml.node_affine(labelmap), oblique_affine(), atol=1e-6)
    # The label map shows MAISI names and colours.
    colors = labelmap.GetDisplayNode().GetColorNode()
    assert colors.GetName() == mrml.COLOR_TABLE_NAME
    assert colors.GetColorName(26) == "hepatic tumor" and colors.GetColorName(200) == "body"
    rgba = [0.0] * 4
    colors.GetColor(1, rgba)
    assert [round(c * 255) for c in rgba[:3]] == list(maisi_labels.color_of(1))


def test_segment_names_are_matched_leniently_and_totalsegmentator_names_map_to_maisi(slicer_scene):
    ct = reference_volume()
    seg = user_segmentation({"Body": body_box(), "kidney_left": BOXES["liver"], "Hepatic_Tumor": BOXES["hepatic tumor"]}, ct)
    values = mrml.array_ijk(mrml.segmentation_to_labelmap(seg, reference_volume=ct))
    np.testing.assert_array_equal(values, expected_labels(liver_id=14))


def test_the_segmentation_geometry_is_used_without_a_reference_volume(slicer_scene):
    ct = reference_volume()
    seg = user_segmentation({"liver": BOXES["liver"], "body": (slice(12, 18), slice(1, 15), slice(0, 12))}, ct)
    labelmap = mrml.segmentation_to_labelmap(seg)
    assert labelmap.GetImageData().GetDimensions() == SHAPE
    np.testing.assert_allclose(mrml.node_affine(labelmap), oblique_affine(), atol=1e-6)
    assert mrml.array_ijk(labelmap)[BOXES["liver"]].min() == 1


def test_segments_that_are_no_maisi_label_are_refused_by_name(slicer_scene):
    ct = reference_volume()
    seg = user_segmentation({"liver": BOXES["liver"], "Segment_1": BOXES["hepatic tumor"]}, ct)
    with pytest.raises(MaisiError) as info:
        mrml.segmentation_to_labelmap(seg, reference_volume=ct)
    assert "'Segment_1'" in info.value.message
    assert "rename" in info.value.hint
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_two_segments_for_one_label_are_refused(slicer_scene):
    ct = reference_volume()
    seg = user_segmentation({"liver": BOXES["liver"], "Liver": BOXES["hepatic tumor"]}, ct)
    with pytest.raises(MaisiError, match="same MAISI label: liver / Liver"):
        mrml.segmentation_to_labelmap(seg, reference_volume=ct)


# ---------------------------------------------------------------------------------------------------
# MAISI label map -> segmentation


def test_a_label_map_becomes_segments_with_maisi_names_colours_values_and_terminology(slicer_scene):
    data = np.zeros(SHAPE, dtype=np.uint8)
    data[body_box()] = 200
    data[BOXES["liver"]] = 1
    data[BOXES["hepatic tumor"]] = 26
    data[15:18, 2:5, 6:9] = 28
    labelmap = mrml.volume_from_array(data, oblique_affine(), "generated labels", labelmap=True)
    seg = mrml.labelmap_to_segmentation(labelmap, name="generated")
    segmentation = seg.GetSegmentation()
    by_value = {segmentation.GetSegment(sid).GetLabelValue(): segmentation.GetSegment(sid) for sid in mrml.segment_ids(seg)}
    assert sorted(by_value) == [1, 26, 28, 200]
    assert {v: s.GetName() for v, s in by_value.items()} == {
        1: "liver", 26: "hepatic tumor", 28: "left lung upper lobe", 200: "body"}
    for value, segment in by_value.items():
        assert [round(c * 255) for c in segment.GetColor()] == list(maisi_labels.color_of(value))
    # Terminology: standard codes from the shipped MAISI terminology, serialized as Slicer does.
    table = mrml.maisi_terminology()
    assert table, "the MAISI terminology file is missing"
    for value, segment in by_value.items():
        codes = table[value]
        entry = segment.GetTerminology()
        assert entry == codes.entry_string()
        assert f"{codes.type.scheme}^{codes.type.value}^{codes.type.meaning}" in entry.split("~")
    liver = table[1]
    assert (liver.type.scheme, liver.type.value) == ("SCT", "10200004")
    # Slicer's own parser reads the entry of the tumor segment: neoplasm located in the liver.
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(by_value[26].GetTerminology(), entry)
    assert entry.GetTerminologyContextName() == "Segmentation category and type - MAISI"
    assert entry.GetTypeObject().GetCodeValue() == "108369006"
    assert entry.GetRegionObject().GetCodeMeaning() == "Liver"
    # Voxels survive the trip back.
    np.testing.assert_array_equal(mrml.array_ijk(mrml.segmentation_to_labelmap(seg, reference_volume=labelmap)), data)


def test_a_label_map_with_unknown_ids_is_refused(slicer_scene):
    data = np.zeros(SHAPE, dtype=np.uint8)
    data[2:4, 2:4, 2:4] = 250
    labelmap = mrml.volume_from_array(data, np.eye(4), "bad", labelmap=True)
    with pytest.raises(MaisiError, match=r"no MAISI label: \[250\]"):
        mrml.labelmap_to_segmentation(labelmap)


# ---------------------------------------------------------------------------------------------------
# Geometry


def test_geometry_survives_nifti_to_node_to_nifti_for_an_oblique_anisotropic_offset_volume(slicer_scene, tmp_path):
    affine = oblique_affine()
    data = np.random.default_rng(1).integers(-1000, 1000, SHAPE).astype(np.int16)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "in.nii.gz"))
    node = mrml.read_volume_file(tmp_path / "in.nii.gz", "oblique")
    # IJK-to-RAS equals the NIfTI affine (the LPS of the ITK reader is undone by Slicer).
    np.testing.assert_allclose(mrml.node_affine(node), affine, atol=1e-5)
    assert node.GetSpacing() == pytest.approx((0.7, 1.3, 2.5))
    assert node.GetOrigin() == pytest.approx(tuple(affine[:3, 3]))
    np.testing.assert_array_equal(mrml.array_ijk(node), data)
    # slicer.util arrays are (k, j, i): the voxel (i, j, k) = (5, 3, 9) is at [9, 3, 5].
    assert slicer.util.arrayFromVolume(node)[9, 3, 5] == data[5, 3, 9]
    # One voxel's RAS position: Slicer's matrix applied to (i, j, k) gives nibabel's world point.
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ras = matrix.MultiplyPoint((5, 3, 9, 1))[:3]
    np.testing.assert_allclose(ras, nib.affines.apply_affine(affine, (5, 3, 9)), atol=1e-5)
    # And back to a file.
    mrml.write_volume_file(node, tmp_path / "out.nii.gz")
    image = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(image.dataobj), data)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_geometry_functions_are_one_matrix_and_refuse_singular_ones():
    affine = oblique_affine()
    np.testing.assert_array_equal(geometry.ijk_to_ras_from_affine(affine), affine)
    np.testing.assert_array_equal(geometry.affine_from_ijk_to_ras(geometry.ijk_to_ras_from_affine(affine)), affine)
    origin, spacing, directions = geometry.decompose(affine)
    np.testing.assert_allclose(spacing, [0.7, 1.3, 2.5])
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(geometry.compose(origin, spacing, directions), affine, atol=1e-12)
    array = np.arange(24).reshape(2, 3, 4)
    assert geometry.slicer_array(array).shape == (4, 3, 2)
    np.testing.assert_array_equal(geometry.nifti_array(geometry.slicer_array(array)), array)
    with pytest.raises(ValueError, match="singular"):
        geometry.ijk_to_ras_from_affine(np.diag([1.0, 0.0, 1.0, 1.0]))


def test_volume_from_array_places_voxels_like_nibabel(slicer_scene, tmp_path):
    data = np.zeros(SHAPE, dtype=np.uint8)
    data[2, 7, 11] = 200
    node = mrml.volume_from_array(data, oblique_affine(), "labels", labelmap=True)
    mrml.write_volume_file(node, tmp_path / "labels.nii.gz")
    image = nib.load(str(tmp_path / "labels.nii.gz"))
    assert list(zip(*np.nonzero(np.asarray(image.dataobj)))) == [(2, 7, 11)]
    np.testing.assert_allclose(image.affine, oblique_affine(), atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Templates, tumors, export


def test_body_outline_template_is_on_the_requested_grid(slicer_scene):
    seg, grid = mrml.body_outline_segmentation((64, 48, 32), (4.0, 5.0, 6.0))
    np.testing.assert_allclose(mrml.node_affine(grid), mrml.node_affine(mrml.segmentation_to_labelmap(seg)))
    assert mrml.array_ijk(grid).shape == (64, 48, 32) and set(np.unique(mrml.array_ijk(grid))) == {-1000}
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 1  # the export above
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetSegment(s).GetName() for s in mrml.segment_ids(seg)] == ["body"]
    labelmap = mrml.segmentation_to_labelmap(seg)
    values = mrml.array_ijk(labelmap)
    assert values.shape == (64, 48, 32)
    assert labelmap.GetSpacing() == pytest.approx((4.0, 5.0, 6.0))
    assert values[32, 24, 16] == 200 and values[0, 0, 0] == 0 and values[32, 2, 16] == 0
    centre = mrml.node_affine(labelmap) @ np.array([31.5, 23.5, 15.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)
    assert set(np.unique(values).tolist()) == {0, 200}


def test_add_tumor_segment_creates_one_maisi_tumor_segment_to_paint(slicer_scene, tmp_path):
    ct = reference_volume()
    seg = user_segmentation({"body": body_box(), "liver": BOXES["liver"]}, ct)
    sid = mrml.add_tumor_segment(seg, "liver")
    segment = seg.GetSegmentation().GetSegment(sid)
    assert segment.GetName() == "hepatic tumor" and segment.GetLabelValue() == 26
    assert [round(c * 255) for c in segment.GetColor()] == list(maisi_labels.color_of(26))
    assert mrml.add_tumor_segment(seg, "liver") == sid  # one click twice does not add a second one
    assert mrml.tumor_segment_ids(seg) == [sid]
    bone = mrml.add_tumor_segment(seg, "bone")
    assert seg.GetSegmentation().GetSegment(bone).GetName() == "bone lesion"
    with pytest.raises(MaisiError, match="unknown tumor type 'kidney'"):
        mrml.add_tumor_segment(seg, "kidney")
    with pytest.raises(MaisiError, match="is empty"):
        mrml.segment_mask_to_file(seg, sid, ct, tmp_path / "tumor.nii.gz")
    paint(seg, sid, ct, BOXES["hepatic tumor"])
    seg.GetSegmentation().RemoveSegment(bone)
    np.testing.assert_array_equal(mrml.array_ijk(mrml.segmentation_to_labelmap(seg, reference_volume=ct)), expected_labels())
    mask = nib.load(str(mrml.segment_mask_to_file(seg, sid, ct, tmp_path / "tumor.nii.gz")))
    expected = np.zeros(SHAPE, dtype=np.uint8)
    expected[BOXES["hepatic tumor"]] = 1
    np.testing.assert_array_equal(np.asarray(mask.dataobj), expected)
    np.testing.assert_allclose(mask.affine, oblique_affine(), atol=1e-5)
    # Labels without the tumor (the input of inpainting) keep the liver where the tumor was painted over.
    without = mrml.array_ijk(mrml.segmentation_to_labelmap(seg, reference_volume=ct, exclude_segment_ids=(sid,)))
    assert 26 not in without and without[BOXES["liver"]].min() == 1


def test_export_nifti_writes_image_and_maisi_label_map_on_the_ct_grid(slicer_scene, tmp_path):
    ct = reference_volume("Synthetic CT seed 7")
    ct.SetAttribute("MAISI.provenance", json.dumps({"seed": 7, "synthetic": True}))
    seg = user_segmentation({"body": body_box(), "liver": BOXES["liver"], "hepatic tumor": BOXES["hepatic tumor"]}, ct)
    paths = mrml.export_nifti(ct, seg, tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        "Synthetic_CT_seed_7.nii.gz", "Synthetic_CT_seed_7_labels.nii.gz", "Synthetic_CT_seed_7_provenance.json"]
    image, labels = nib.load(str(paths["image"])), nib.load(str(paths["labels"]))
    np.testing.assert_array_equal(np.asarray(image.dataobj), mrml.array_ijk(ct))
    np.testing.assert_array_equal(np.asarray(labels.dataobj), expected_labels())
    np.testing.assert_allclose(labels.affine, oblique_affine(), atol=1e-5)
    assert json.loads(paths["provenance"].read_text()) == {"seed": 7, "synthetic": True}
    # Temporary nodes are gone: the scene holds only what the user made.
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


# ---------------------------------------------------------------------------------------------------
# A generation end to end: segmentation -> job file -> real worker -> result nodes


def run_generation(model_dir: Path, segmentation, reference, workdir: Path, seed: int) -> dict:
    mask = mrml.temporary_labelmap_file(segmentation, reference, workdir)
    job = params.generate_job(str(model_dir), workdir / "result", mask=mask, size=(32, 32, 32),
                              spacing=(8.0, 8.0, 8.0), seed=seed, steps=2, device="cpu")
    running = JobRunner(env=WORKER_ENV).start(job, workdir)
    assert running.wait(timeout=120) == 0, (running.error, running.stderr_tail[-2000:])
    running.poll()
    return running.result


def test_generated_result_nodes_hierarchy_and_provenance(slicer_scene, random_model_dir, tmp_path):
    ct = reference_volume()
    seg = user_segmentation({"body": body_box(), "liver": BOXES["liver"]}, ct)
    result = run_generation(random_model_dir, seg, ct, tmp_path / "gen1", seed=3)
    nodes = mrml.load_generation_result(result)
    for leftover in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLLabelMapVolumeDisplayNode"):
        assert slicer.mrmlScene.GetNodesByClass(leftover).GetNumberOfItems() == 0, leftover
    # The CT volume: name, grid of the job, CT window/level, volume-rendering preset recorded.
    volume = nodes.volume
    assert volume.GetName() == "Synthetic CT seed 3"
    assert volume.GetImageData().GetDimensions() == (32, 32, 32)
    assert volume.GetSpacing() == pytest.approx((8.0, 8.0, 8.0))
    np.testing.assert_allclose(mrml.node_affine(volume), nib.load(result["image"]).affine, atol=1e-5)
    display = volume.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (400.0, 40.0)
    assert not display.GetAutoWindowLevel()
    assert volume.GetAttribute("MAISI.volumeRenderingPreset") == "CT-Chest-Contrast-Enhanced"
    hu = slicer.util.arrayFromVolume(volume)
    assert hu.min() >= -1000 and hu.max() <= 1000
    # The segmentation: MAISI segments of the label map the worker wrote, closed surfaces made.
    segmentation = nodes.segmentation.GetSegmentation()
    written = np.asarray(nib.load(result["labels"]).dataobj)
    assert sorted(segmentation.GetSegment(s).GetLabelValue() for s in mrml.segment_ids(nodes.segmentation)) == sorted(
        int(v) for v in np.unique(written) if v)
    assert {segmentation.GetSegment(s).GetName() for s in mrml.segment_ids(nodes.segmentation)} >= {"body"}
    assert segmentation.ContainsRepresentation("Closed surface")
    import vtk

    surface = vtk.vtkPolyData()
    body_id = next(s for s in mrml.segment_ids(nodes.segmentation) if segmentation.GetSegment(s).GetName() == "body")
    nodes.segmentation.GetClosedSurfaceRepresentation(body_id, surface)
    assert surface.GetNumberOfPoints() > 0
    volume_bounds, surface_bounds = [0.0] * 6, surface.GetBounds()
    volume.GetRASBounds(volume_bounds)
    for axis in range(3):
        assert volume_bounds[2 * axis] - 1e-3 <= surface_bounds[2 * axis] < surface_bounds[2 * axis + 1] <= volume_bounds[2 * axis + 1] + 1e-3
    # Provenance as attributes on both nodes.
    weights = {role: hashlib.sha256((random_model_dir / f"{role}.safetensors").read_bytes()).hexdigest()
               for role in ("autoencoder", "diffusion_unet", "controlnet")}
    for node in (volume, nodes.segmentation):
        assert node.GetAttribute("MAISI.seed") == "3"
        assert node.GetAttribute("MAISI.model") == "random-demo"
        assert node.GetAttribute("MAISI.steps") == "2"
        assert node.GetAttribute("MAISI.synthetic") == "true"
        assert json.loads(node.GetAttribute("MAISI.weights_sha256")) == weights
        assert json.loads(node.GetAttribute("MAISI.provenance"))["seed"] == 3
    # Subject hierarchy: patient SYNTHETIC^MAISI > study per generation > both nodes.
    sh = mrml.subject_hierarchy()
    study = sh.GetItemParent(sh.GetItemByDataNode(volume))
    assert study == nodes.study_item == sh.GetItemParent(sh.GetItemByDataNode(nodes.segmentation))
    assert sh.GetItemName(study) == "Synthetic study seed 3, model random-demo"
    assert sh.GetItemLevel(study) == "Study"
    patient = sh.GetItemParent(study)
    assert sh.GetItemName(patient) == "SYNTHETIC^MAISI" and sh.GetItemLevel(patient) == "Patient"
    assert sh.GetItemAttribute(patient, "DICOM.PatientName") == "SYNTHETIC^MAISI"
    # Generating again with another seed adds a study; nothing is overwritten.
    second = mrml.load_generation_result(run_generation(random_model_dir, seg, ct, tmp_path / "gen2", seed=4))
    assert second.patient_item == patient and second.study_item != study
    import vtk as _vtk

    studies = _vtk.vtkIdList()
    sh.GetItemChildren(patient, studies)
    assert sorted(sh.GetItemName(studies.GetId(i)) for i in range(studies.GetNumberOfIds())) == [
        "Synthetic study seed 3, model random-demo", "Synthetic study seed 4, model random-demo"]
    assert slicer.mrmlScene.GetNodeByID(volume.GetID()) is volume and volume.GetAttribute("MAISI.seed") == "3"


def run_job(job: dict, workdir: Path) -> dict:
    running = JobRunner(env=WORKER_ENV).start(job, workdir)
    assert running.wait(timeout=120) == 0, (running.error, running.stderr_tail[-2000:])
    running.poll()
    return running.result


@pytest.fixture(scope="module")
def phantom_result(tmp_path_factory) -> dict:
    """The worker's phantom job (what the 'Edit phantom' button runs), made once for this module."""
    folder = tmp_path_factory.mktemp("phantom")
    return run_job(params.phantom_job("chest-abdomen", (64, 64, 64), (5.0, 5.0, 5.0), 4, folder / "out"), folder)


def load_phantom(result: dict):
    """The phantom's label map as the editable segmentation the module shows."""
    return result, mrml.labelmap_file_to_segmentation(result["mask"], name="MAISI phantom template")


def test_a_phantom_template_becomes_an_editable_segmentation_and_exports_back_unchanged(slicer_scene, phantom_result):
    result, segmentation = load_phantom(phantom_result)
    written = nib.load(result["mask"])
    ids = sorted(int(v) for v in np.unique(np.asarray(written.dataobj)) if v)
    seg = segmentation.GetSegmentation()
    assert sorted(seg.GetSegment(s).GetLabelValue() for s in mrml.segment_ids(segmentation)) == ids
    assert {"liver", "body"} <= {seg.GetSegment(s).GetName() for s in mrml.segment_ids(segmentation)}
    # No temporary label map node is left; the segmentation keeps the phantom's grid.
    for leftover in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLLabelMapVolumeDisplayNode", "vtkMRMLVolumeArchetypeStorageNode"):
        assert slicer.mrmlScene.GetNodesByClass(leftover).GetNumberOfItems() == 0, leftover
    labelmap = mrml.segmentation_to_labelmap(segmentation)
    np.testing.assert_array_equal(mrml.array_ijk(labelmap), np.asarray(written.dataobj))
    np.testing.assert_allclose(mrml.node_affine(labelmap), written.affine, atol=1e-5)


def test_inpainting_a_painted_tumor_makes_a_new_volume_and_keeps_the_input(slicer_scene, random_model_dir,
                                                                          phantom_result, tmp_path):
    result, segmentation = load_phantom(phantom_result)
    ct = mrml.read_volume_file(result["ct"], "phantom CT")
    before = mrml.array_ijk(ct).copy()
    tumor = mrml.add_tumor_segment(segmentation, "liver")
    liver = np.asarray(nib.load(result["mask"]).dataobj) == 1
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(liver)  # the deepest liver voxel away from the volume's border
    depth[:9], depth[-9:], depth[:, :9], depth[:, -9:], depth[:, :, :9], depth[:, :, -9:] = 0, 0, 0, 0, 0, 0
    centre = np.array(np.unravel_index(np.argmax(depth), liver.shape))
    assert depth[tuple(centre)] >= 2
    painted = np.zeros(liver.shape, dtype=np.uint8)
    box = tuple(slice(c - 2, c + 3) for c in centre)
    painted[box] = 1
    painted &= liver
    assert painted.sum() > 20
    slicer.util.updateSegmentBinaryLabelmapFromArray(geometry.slicer_array(painted), segmentation, tumor, ct)
    files = mrml.write_inpaint_inputs(ct, segmentation, "liver", tmp_path / "inpaint")
    assert 26 not in np.asarray(nib.load(str(files["labels"])).dataobj)
    np.testing.assert_array_equal(np.asarray(nib.load(str(files["tumor"])).dataobj), painted)
    job = params.inpaint_job(str(random_model_dir), tmp_path / "inpaint" / "result", image=files["image"],
                             labels=files["labels"], tumor=files["tumor"], tumor_type="liver", seed=1, steps=2,
                             device="cpu")
    nodes = mrml.load_generation_result(run_job(job, tmp_path / "inpaint"))
    after = mrml.array_ijk(nodes.volume)
    np.testing.assert_array_equal(mrml.array_ijk(ct), before)  # the input is never modified
    assert nodes.volume is not ct and not np.array_equal(after[painted.astype(bool)], before[painted.astype(bool)])
    far = np.ones(liver.shape, dtype=bool)
    far[tuple(slice(max(c - 8, 0), c + 9) for c in centre)] = False
    np.testing.assert_array_equal(after[far], before[far])  # only the tumor's neighbourhood changes
    out_labels = mrml.array_ijk(mrml.segmentation_to_labelmap(nodes.segmentation, nodes.volume))
    np.testing.assert_array_equal(out_labels == 26, painted.astype(bool))
    assert nodes.volume.GetAttribute("MAISI.model") == "random-demo"
