"""Slicer's DICOM export writes slices in the node's IJK order; the module exports a temporary copy in the
scanner's voxel order (IJK to the patient's left, posterior, head) so the series has
ImageOrientationPatient 1\\0\\0\\0\\1\\0 like the engine's writer. The reordering must keep every voxel's
value at its world position, and the temporary copy must leave nothing in the scene. Slicer's DICOM
module is not in slicer-core, so the export call itself is not run here; what it is given is.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_fixtures import slicer_scene  # noqa: E402,F401  (fixture)

from MAISISynthLib import scanner_order  # noqa: E402


def rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    a, b = [n for n in range(3) if n != axis]
    out = np.eye(3)
    out[a, a], out[a, b], out[b, a], out[b, b] = c, -s, s, c
    return out


def ijk_to_ras(directions: np.ndarray, spacing=(0.8, 1.5, 2.5), origin=(-40.0, 12.5, 300.0)) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = np.asarray(directions, dtype=float) @ np.diag(spacing)
    out[:3, 3] = origin
    return out


GRIDS = {
    "RAS": np.eye(3),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "LAS": np.diag([-1.0, 1.0, 1.0]),
    "permuted": np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]),  # i->I, j->L, k->A
    "oblique": rotation(2, 25.0) @ rotation(0, -15.0) @ np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}


def voxel_centres(matrix: np.ndarray, shape_ijk) -> tuple[np.ndarray, np.ndarray]:
    """(every voxel index (N, 3), its world position (N, 3))."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape_ijk], indexing="ij"), -1).reshape(-1, 3)
    world = (matrix[:3, :3] @ index.T).T + matrix[:3, 3]
    return index, world


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_scanner_order_keeps_every_voxel_at_its_world_position(grid):
    matrix = ijk_to_ras(GRIDS[grid])
    rng = np.random.default_rng(7)
    array_kji = rng.integers(-1000, 2000, size=(5, 6, 7)).astype(np.int16)  # (k, j, i): i has 7 voxels
    ordered, new_matrix = scanner_order.to_scanner_order(array_kji, matrix)
    # IJK now runs nearest to -x, -y, +z (left, posterior, head).
    columns = new_matrix[:3, :3] / np.linalg.norm(new_matrix[:3, :3], axis=0)
    assert [int(np.argmax(np.abs(columns[:, n]))) for n in range(3)] == [0, 1, 2]
    assert np.all(np.sign(np.diag(columns)) == [-1, -1, 1])
    assert sorted(np.linalg.norm(new_matrix[:3, :3], axis=0).round(6)) == sorted([0.8, 1.5, 2.5])
    # Every new voxel centre lies on an old voxel centre holding the same value.
    index, world = voxel_centres(new_matrix, ordered.shape[::-1])
    old = np.linalg.solve(matrix[:3, :3], (world - matrix[:3, 3]).T).T
    assert np.allclose(old, np.round(old), atol=1e-6)
    old = np.round(old).astype(int)
    assert np.all((old >= 0) & (old < np.array(array_kji.shape[::-1])))
    assert np.array_equal(ordered[index[:, 2], index[:, 1], index[:, 0]], array_kji[old[:, 2], old[:, 1], old[:, 0]])
    assert len({tuple(v) for v in old}) == array_kji.size  # a permutation: no voxel twice, none lost
    if grid == "LPS":  # already in scanner order: unchanged
        assert np.array_equal(ordered, array_kji) and np.allclose(new_matrix, matrix)


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_scanner_order_agrees_with_the_engine_writer(grid):
    """The engine's `orientation.to_export_order` (nibabel) and this numpy version give the same voxels."""
    from MAISIEngine.io.dicom import orientation

    matrix = ijk_to_ras(GRIDS[grid])
    array_kji = np.arange(5 * 6 * 7, dtype=np.int32).reshape(5, 6, 7)
    ordered, new_matrix = scanner_order.to_scanner_order(array_kji, matrix)
    engine_array, engine_affine = orientation.to_export_order(np.transpose(array_kji, (2, 1, 0)), matrix)
    assert np.array_equal(np.transpose(ordered, (2, 1, 0)), engine_array)
    assert np.allclose(new_matrix, engine_affine)


def test_a_singular_matrix_is_refused():
    with pytest.raises(ValueError, match="invertible"):
        scanner_order.to_scanner_order(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))


def items(sh) -> list[tuple[str, str]]:
    out = []
    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    for index in range(ids.GetNumberOfIds()):
        out.append((sh.GetItemLevel(ids.GetId(index)), sh.GetItemName(ids.GetId(index))))
    return out


def value_at(node, ras) -> float:
    """The voxel value of a node at a world (RAS) point, through the node's own RASToIJK."""
    import slicer

    matrix = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(matrix)
    ijk = [int(round(v)) for v in matrix.MultiplyPoint(list(ras) + [1.0])[:3]]
    return float(slicer.util.arrayFromVolume(node)[ijk[2], ijk[1], ijk[0]])


def test_the_export_copy_of_a_ras_volume_is_in_lps_order_at_the_same_place(slicer_scene):
    import slicer

    from MAISISynthLib import dicom_export, mrml

    rng = np.random.default_rng(3)
    array_ijk = rng.integers(-1000, 1500, size=(6, 7, 8)).astype(np.int16)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (-10.0, 20.0, -30.0)
    volume = mrml.volume_from_array(array_ijk, affine, "Synthetic CT seed 5")
    volume.SetAttribute("MAISI.seed", "5")
    mrml.show_as_ct(volume)
    mrml.place_in_study(volume, mrml.new_synthetic_study(5, "demo"))
    copy = dicom_export.scanner_order_volume(volume)
    directions = np.zeros((3, 3))
    copy.GetIJKToRASDirections(directions)
    assert np.array_equal(directions, np.diag([-1.0, -1.0, 1.0]))
    assert copy.GetSpacing() == (2.0, 3.0, 4.0)
    # The first voxel of the copy is the patient's right-anterior-foot corner of the original grid.
    assert np.allclose(copy.GetOrigin(), (-10.0 + 2.0 * 5, 20.0 + 3.0 * 6, -30.0))
    for ijk in [(0, 0, 0), (5, 6, 7), (1, 4, 2), (3, 0, 6)]:
        ras = affine[:3, :3] @ np.array(ijk) + affine[:3, 3]
        assert value_at(copy, ras) == value_at(volume, ras) == array_ijk[ijk]
    assert copy.GetAttribute("MAISI.seed") == "5"
    assert (copy.GetDisplayNode().GetWindow(), copy.GetDisplayNode().GetLevel()) == mrml.CT_WINDOW_LEVEL
    sh = mrml.subject_hierarchy()
    assert sh.GetItemParent(sh.GetItemByDataNode(copy)) == sh.GetItemParent(sh.GetItemByDataNode(volume))
    assert np.array_equal(mrml.array_ijk(volume), array_ijk)  # the original is untouched
    assert slicer.mrmlScene.GetNodeByID(copy.GetID()) is copy


def test_the_export_copy_leaves_nothing_in_the_scene(slicer_scene):
    import slicer

    from MAISISynthLib import dicom_export, mrml

    sh = mrml.subject_hierarchy()
    volume = mrml.volume_from_array(np.ones((4, 5, 6), dtype=np.int16), np.eye(4), "Synthetic CT seed 6")
    mrml.place_in_study(volume, mrml.new_synthetic_study(6, "demo"))
    before_items = items(sh)
    before_nodes = sorted(slicer.mrmlScene.GetNthNode(i).GetID() for i in range(slicer.mrmlScene.GetNumberOfNodes()))
    with pytest.raises(RuntimeError, match="exporter failed"):  # cleaned up on failure too
        with dicom_export.scanner_order_copy(volume) as copy:
            assert len(items(sh)) == len(before_items) + 1
            copy_id = copy.GetID()
            raise RuntimeError("exporter failed")
    after_nodes = sorted(slicer.mrmlScene.GetNthNode(i).GetID() for i in range(slicer.mrmlScene.GetNumberOfNodes()))
    assert items(sh) == before_items
    assert after_nodes == before_nodes and slicer.mrmlScene.GetNodeByID(copy_id) is None


def test_body_part_follows_the_engine_writer():
    from MAISIEngine.io.dicom import identity
    from MAISISynthLib import dicom_export

    regions = ["head-neck", "chest", "abdomen", "lower-body"]
    for count in range(1, 5):
        for chosen in itertools.combinations(regions, count):
            assert dicom_export.body_part(list(chosen)) == identity.body_part(list(chosen)), chosen
    assert dicom_export.DERIVATION_DESCRIPTION == identity.DERIVATION_DESCRIPTION
    assert dicom_export.PATIENT_POSITION == identity.PATIENT_POSITION


def test_written_slices_get_the_attributes_slicers_exporter_cannot_set(tmp_path, slicer_scene):
    """What CreateDICOMSeries writes lacks these; they are added to each file, pixels untouched."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from MAISISynthLib import dicom_export

    paths = []
    for number in range(2):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.SeriesDate, ds.SeriesTime, ds.InstanceNumber = "20261205", "070000", number + 1
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 2, 3, 16, 16, 15
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 1
        ds.PixelData = np.arange(6, dtype=np.int16).tobytes()
        paths.append(tmp_path / f"IMG{number}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    dicom_export.add_scanner_attributes(paths, "CHESTABDOMEN")
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.DerivationDescription.startswith("SYNTHETIC")
        assert ds.ImageComments == ds.DerivationDescription
        assert (ds.PatientPosition, ds.BodyPartExamined) == ("HFS", "CHESTABDOMEN")
        assert (ds.AcquisitionDate, ds.AcquisitionTime) == ("20261205", "070000")
        assert np.array_equal(ds.pixel_array.ravel(), np.arange(6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IMG0.dcm", "IMG1.dcm"]  # no temporary files left


def test_the_exporter_is_given_the_synthetic_markers_and_dates_it_passes_on(slicer_scene):
    """Only the tags DICOMScalarVolumePlugin.export reads reach the files; these are the ones it reads."""
    from datetime import datetime, timezone

    from MAISISynthLib import dicom_export, mrml

    tags = dicom_export.exporter_tags("Synthetic study seed 7, model demo", "7", "demo",
                                      now=datetime(2026, 12, 5, 7, 30, 15, tzinfo=timezone.utc))
    assert tags["PatientName"] == mrml.PATIENT_NAME and tags["PatientID"] == mrml.PATIENT_ID
    assert tags["PatientComments"] == dicom_export.DERIVATION_DESCRIPTION
    assert tags["StudyDescription"] == "Synthetic study seed 7, model demo"
    assert tags["SeriesDescription"] == "SYNTHETIC CT MAISI demo seed 7"
    for name in ("StudyDate", "SeriesDate", "ContentDate"):
        assert tags[name] == "20261205"
    for name in ("StudyTime", "SeriesTime", "ContentTime"):
        assert tags[name] == "073015"
