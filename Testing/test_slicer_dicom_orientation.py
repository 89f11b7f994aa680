"""Volumes as Slicer loads them from DICOM: IJK-to-RAS in LPS order (i right-to-left, j anterior-to-
posterior), as every DICOM series is. Generation from such a CT's segmentation and inpainting into
such a CT must give results that overlay the input in world space, exactly as for the same data
stored in RAS order; the engine brings every input to RAS voxel order and returns inpainting results
on the input CT's own grid.

Each pair of runs uses the same seed on the same world-space data, stored once in RAS and once in LPS
voxel order: the engine sees the same voxels either way, so the results must agree voxel for voxel in
world space. Scene side with slicer-core MRML nodes, model side with the demo model through the worker.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_fixtures import run_worker_job as run_job, slicer_scene  # noqa: E402,F401  (fixtures)

slicer = pytest.importorskip("slicer")

from MAISISynthLib import editing, mrml, params, scene_jobs  # noqa: E402
from MAISISynthLib.panel import INPUT_SEGMENTATION  # noqa: E402

SIZE, SPACING = (64, 64, 64), (5.0, 5.0, 5.0)
LIVER, TUMOR = 1, 26


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict:
    """A torso phantom (CT and labels, stored in RAS order) from the worker's phantom job."""
    folder = tmp_path_factory.mktemp("phantom")
    result = run_job(params.phantom_job("abdomen", SIZE, SPACING, 12, folder / "out"), folder)
    ct, labels = nib.load(result["ct"]), nib.load(result["mask"])
    assert np.allclose(np.diag(ct.affine)[:3], SPACING)  # RAS order: positive diagonal
    return {"ct": np.asarray(ct.dataobj).astype(np.int16), "labels": np.asarray(labels.dataobj).astype(np.uint8),
            "affine": ct.affine}


def as_lps(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same world-space volume stored in LPS voxel order (i and j reversed), as DICOM loads it."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = array.shape[0] - 1, array.shape[1] - 1
    return np.ascontiguousarray(array[::-1, ::-1, :]), affine @ flip


def in_world(array: np.ndarray, affine: np.ndarray, reference_affine: np.ndarray, reference_shape) -> np.ndarray:
    """`array` re-indexed onto the reference grid; the grids must share their voxel centres."""
    index_map = np.linalg.inv(affine) @ reference_affine
    rounded = np.round(index_map)
    assert np.allclose(index_map, rounded, atol=1e-4), "the grids do not share voxel centres"
    grid = np.indices(reference_shape).reshape(3, -1)
    source = (rounded[:3, :3] @ grid + rounded[:3, 3:4]).astype(int)
    assert all((source[a] >= 0).all() and (source[a] < array.shape[a]).all() for a in range(3)), "grids differ in extent"
    return array[source[0], source[1], source[2]].reshape(reference_shape)


def scene_inputs(ct_array: np.ndarray, labels_array: np.ndarray, affine: np.ndarray, name: str):
    """A CT volume node and its segmentation (MAISI segments) on the CT's grid, as a user has them."""
    ct = mrml.volume_from_array(ct_array, affine, f"{name} CT")
    labelmap = mrml.volume_from_array(labels_array, affine, f"{name} labels", labelmap=True)
    segmentation = mrml.labelmap_to_segmentation(labelmap, name=f"{name} segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    slicer.mrmlScene.RemoveNode(labelmap)
    return ct, segmentation


def test_an_lps_volume_node_is_written_and_read_in_place(slicer_scene, phantom, tmp_path):
    """The bridge itself: an LPS node's file holds its LPS affine, and reads back onto the same grid."""
    lps_ct, lps_affine = as_lps(phantom["ct"], phantom["affine"])
    ct, _ = scene_inputs(lps_ct, as_lps(phantom["labels"], phantom["affine"])[0], lps_affine, "LPS")
    matrix = mrml.numpy_matrix(_ijk_to_ras(ct))
    assert matrix[0, 0] < 0 and matrix[1, 1] < 0 and matrix[2, 2] > 0  # what Slicer shows for a DICOM CT
    path = mrml.write_volume_file(ct, tmp_path / "ct.nii.gz")
    written = nib.load(str(path))
    np.testing.assert_allclose(written.affine, lps_affine, atol=1e-5)
    np.testing.assert_array_equal(in_world(np.asarray(written.dataobj), written.affine, phantom["affine"], SIZE),
                                  phantom["ct"])


def _ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def generate_from_segmentation(segmentation, workdir: Path) -> mrml.GenerationNodes:
    """What Generate does for the 'Segmentation' input (MAISISynthLogic.generateJob), then the result nodes."""
    job = scene_jobs.generate_job_for(module_settings(inputKind=INPUT_SEGMENTATION, inputSegmentation=segmentation,
                                                      seed=5), workdir)
    return mrml.load_generation_result(run_job(job, workdir), surfaces=False)


def module_settings(**chosen) -> types.SimpleNamespace:
    """The module's parameters (as its parameter node holds them) for a demo run on the CPU."""
    values = dict(model="demo", inputKind=INPUT_SEGMENTATION, inputSegmentation=None, inputLabelmap=None,
                  templateRegion="chest-abdomen", region="auto", size=SIZE, spacing=SPACING, seed=0, steps=2,
                  device="cpu", tumorVolume=None, tumorSegmentation=None, tumorType="liver")
    values.update(chosen)
    return types.SimpleNamespace(**values)


@pytest.fixture(scope="module")
def generated(tmp_path_factory, phantom) -> dict:
    """Generation from the RAS-stored and from the LPS-stored segmentation (same seed), as arrays + affines."""
    import tempfile

    from slicer_fixtures import SlicerScene

    env = SlicerScene(Path(tempfile.mkdtemp()))
    saved = slicer.mrmlScene if hasattr(slicer, "mrmlScene") else None, getattr(slicer, "modules", None)
    slicer.mrmlScene, slicer.modules = env.scene, env.modules_namespace()
    try:
        out = {}
        for order in ("RAS", "LPS"):
            ct_array, affine = phantom["ct"], phantom["affine"]
            labels = phantom["labels"]
            if order == "LPS":
                (ct_array, affine), labels = as_lps(ct_array, affine), as_lps(labels, affine)[0]
            _, segmentation = scene_inputs(ct_array, labels, affine, order)
            nodes = generate_from_segmentation(segmentation, tmp_path_factory.mktemp(f"generate-{order}"))
            out[order] = {
                "ct": mrml.array_ijk(nodes.volume), "affine": mrml.node_affine(nodes.volume),
                "labels": mrml.array_ijk(mrml.segmentation_to_labelmap(nodes.segmentation, nodes.volume)),
                "labels_affine": mrml.node_affine(nodes.volume),
            }
        return out
    finally:
        env.close()
        slicer.mrmlScene, slicer.modules = saved


def test_generation_from_an_lps_segmentation_overlays_its_input(generated, phantom):
    """The generated CT and labels sit where the input segmentation was, in world space."""
    lps = generated["LPS"]
    labels_on_input = in_world(lps["labels"], lps["labels_affine"], phantom["affine"], SIZE)
    inside = phantom["labels"] > 0
    # The engine adds the body envelope and nothing else moves: every organ voxel keeps its label.
    organ = inside & (phantom["labels"] != 200)
    np.testing.assert_array_equal(labels_on_input[organ], phantom["labels"][organ])
    ct_on_input = in_world(lps["ct"], lps["affine"], phantom["affine"], SIZE)
    assert ct_on_input.shape == SIZE and ct_on_input[~inside].mean() < -900  # air outside the body, in place


def test_generation_from_lps_and_ras_storage_of_the_same_segmentation_agree(generated):
    """The engine brings inputs to RAS voxel order: the model sees the same voxels for both storages."""
    ras, lps = generated["RAS"], generated["LPS"]
    np.testing.assert_array_equal(in_world(lps["labels"], lps["labels_affine"], ras["labels_affine"], SIZE), ras["labels"])
    difference = np.abs(in_world(lps["ct"], lps["affine"], ras["affine"], SIZE).astype(np.int32) - ras["ct"].astype(np.int32))
    assert difference.max() <= 1, f"LPS and RAS storage gave different CTs (max {difference.max()} HU apart)"


def paint_tumor(segmentation, ct, centre_ras_ijk, phantom_affine) -> np.ndarray:
    """A 2-voxel ball painted into a new hepatic tumor segment at a world position; returns it on the CT's grid."""
    tumor = mrml.add_tumor_segment(segmentation, "liver")
    editing.prepare_tumor_painting(editing.segment_editor_node(), segmentation, ct, tumor)
    world = phantom_affine @ np.append(centre_ras_ijk, 1.0)
    centre = (np.linalg.inv(mrml.node_affine(ct)) @ world)[:3]
    ijk = np.indices(mrml.array_ijk(ct).shape)
    ball = sum((ijk[a] - centre[a]) ** 2 for a in range(3)) <= 4.0
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.transpose(ball, (2, 1, 0)).astype(np.uint8), segmentation,
                                                     tumor, ct)
    return ball


@pytest.fixture(scope="module")
def inpainted(tmp_path_factory, phantom) -> dict:
    """A liver tumor painted at the same world position into the RAS- and the LPS-stored CT, inpainted (seed 3)."""
    import tempfile

    from scipy.ndimage import distance_transform_edt

    from slicer_fixtures import SlicerScene

    depth = distance_transform_edt(np.pad(phantom["labels"] == LIVER, 1))[1:-1, 1:-1, 1:-1]
    centre = np.array(np.unravel_index(np.argmax(depth), SIZE), dtype=float)
    env = SlicerScene(Path(tempfile.mkdtemp()))
    saved = slicer.mrmlScene if hasattr(slicer, "mrmlScene") else None, getattr(slicer, "modules", None)
    slicer.mrmlScene, slicer.modules = env.scene, env.modules_namespace()
    try:
        out = {}
        for order in ("RAS", "LPS"):
            ct_array, affine, labels = phantom["ct"], phantom["affine"], phantom["labels"]
            if order == "LPS":
                (ct_array, affine), labels = as_lps(ct_array, affine), as_lps(labels, affine)[0]
            ct, segmentation = scene_inputs(ct_array, labels, affine, order)
            ball = paint_tumor(segmentation, ct, centre, phantom["affine"])
            folder = tmp_path_factory.mktemp(f"inpaint-{order}")
            job = scene_jobs.inpaint_job_for(module_settings(tumorVolume=ct, tumorSegmentation=segmentation, seed=3),
                                             folder)
            nodes = mrml.load_inpaint_result(run_job(job, folder), ct, surfaces=False)
            out[order] = {
                "input_affine": affine, "before": mrml.array_ijk(ct), "ball": ball,
                "after": mrml.array_ijk(nodes.volume), "affine": mrml.node_affine(nodes.volume),
                "labels": mrml.array_ijk(mrml.segmentation_to_labelmap(nodes.segmentation, nodes.volume)),
            }
        return out
    finally:
        env.close()
        slicer.mrmlScene, slicer.modules = saved


def test_inpainting_an_lps_ct_returns_on_its_own_grid(inpainted):
    """On the input's own grid, in the input's voxel order: the result overlays the input voxel for voxel."""
    from scipy.ndimage import distance_transform_edt

    lps = inpainted["LPS"]
    np.testing.assert_allclose(lps["affine"], lps["input_affine"], atol=1e-5)
    assert lps["after"].shape == lps["before"].shape == SIZE
    far = distance_transform_edt(~lps["ball"]) > 6
    np.testing.assert_array_equal(lps["after"][far], lps["before"][far])  # only the tumor's neighbourhood changes
    assert not np.array_equal(lps["after"][lps["ball"]], lps["before"][lps["ball"]])
    np.testing.assert_array_equal(lps["labels"] == TUMOR, lps["ball"])


def test_inpainting_lps_and_ras_storage_of_the_same_ct_agree(inpainted):
    """The engine inpaints in RAS voxel order: the same world-space tumor gives the same CT for both storages."""
    ras, lps = inpainted["RAS"], inpainted["LPS"]
    np.testing.assert_array_equal(in_world(lps["ball"], lps["affine"], ras["affine"], SIZE), ras["ball"])
    difference = np.abs(in_world(lps["after"], lps["affine"], ras["affine"], SIZE).astype(np.int32)
                        - ras["after"].astype(np.int32))
    assert difference.max() <= 1, f"LPS and RAS storage gave different inpainting (max {difference.max()} HU apart)"
