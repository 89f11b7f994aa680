"""DICOM export reads the written CT series back (DICOM SEG must reference its instances); the patient
and study items Slicer makes for it must not stay behind in the Data module."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import vtk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slicer_fixtures import slicer_scene  # noqa: E402,F401  (fixture)

slicer = pytest.importorskip("slicer")

from MAISISynthLib import mrml  # noqa: E402


def items(sh) -> list[tuple[str, str]]:
    """(level, name) of every item below the scene, depth first."""
    out = []
    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    for index in range(ids.GetNumberOfIds()):
        item = ids.GetId(index)
        out.append((sh.GetItemLevel(item), sh.GetItemName(item)))
    return out


def read_back_series(sh, name: str):
    """What Slicer's DICOM scalar volume plugin does with a loaded series: an item carrying the series UID,
    placed under a patient and a study found (or made) by their UIDs."""
    volume = mrml.volume_from_array(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4), name)
    item = sh.CreateItem(sh.GetSceneItemID(), volume)
    sh.SetItemUID(item, "DICOM", "1.2.826.0.1.3680043.8.498.2")
    series = slicer.vtkSlicerSubjectHierarchyModuleLogic.InsertDicomSeriesInHierarchy(
        sh, "MAISI-SYNTHETIC", "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2")
    assert series == item and sh.GetItemLevel(sh.GetItemParent(item)) == "Study"
    return volume


def test_the_read_back_series_leaves_no_empty_items(slicer_scene):
    sh = mrml.subject_hierarchy()
    ct = mrml.volume_from_array(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4), "Synthetic CT seed 1")
    mrml.place_in_study(ct, mrml.new_synthetic_study(1, "demo"))
    before = items(sh)
    loaded = read_back_series(sh, "1: SYNTHETIC CT")
    export = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "export copy")
    sh.CreateItem(sh.GetItemParent(sh.GetItemByDataNode(loaded)), export)  # exportDicom puts the SEG beside it
    assert len(items(sh)) == len(before) + 4  # patient, study, volume, segmentation
    mrml.remove_nodes_and_empty_parents([export, loaded])
    assert items(sh) == before
    assert slicer.mrmlScene.GetNodeByID(ct.GetID()) is ct


def test_a_study_that_still_holds_data_is_kept(slicer_scene):
    sh = mrml.subject_hierarchy()
    study = mrml.new_synthetic_study(2, "demo")
    kept = mrml.volume_from_array(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4), "kept")
    temporary = mrml.volume_from_array(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4), "temporary")
    mrml.place_in_study(kept, study)
    mrml.place_in_study(temporary, study)
    mrml.remove_nodes_and_empty_parents([temporary])
    assert [name for _, name in items(sh)] == ["SYNTHETIC^MAISI", "Synthetic study seed 2, model demo", "kept"]
    assert slicer.mrmlScene.GetNodeByID(temporary.GetID()) is None


def test_a_ct_outside_a_synthetic_study_is_exported_under_one_and_put_back(slicer_scene):
    """An inpainted real CT sits in its input's study; DICOM export must not make it part of that study."""
    from MAISISynthLib import dicom_export

    sh = mrml.subject_hierarchy()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Doe^Jane")
    study = sh.CreateStudyItem(patient, "CT abdomen")
    ct = mrml.volume_from_array(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4), "CT inpainted seed 3")
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CT inpainted seed 3 labels")
    ct.SetAttribute("MAISI.seed", "3")
    ct.SetAttribute("MAISI.model", "demo")
    for node in (ct, seg):
        mrml.place_in_study(node, study)
    before = items(sh)
    moved = dicom_export.place_under_synthetic_study(ct, seg)
    synthetic = sh.GetItemParent(sh.GetItemByDataNode(ct))
    assert sh.GetItemName(synthetic) == "Synthetic study seed 3, model demo"
    assert sh.GetItemName(sh.GetItemParent(synthetic)) == "SYNTHETIC^MAISI"
    assert sh.GetItemParent(sh.GetItemByDataNode(seg)) == synthetic
    dicom_export.restore_places(moved)
    assert items(sh) == before  # back in the input's study, and no empty synthetic patient or study
    # A CT already in a synthetic study stays where it is.
    generated = mrml.new_synthetic_study(4, "demo")
    mrml.place_in_study(ct, generated)
    assert dicom_export.place_under_synthetic_study(ct, None) == []
